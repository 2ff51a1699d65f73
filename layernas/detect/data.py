"""COCO-format detection data: an offline generated set, and loading of any COCO-layout set.

Why a generated set: the paper transfers its backbones to COCO (SSDLite), but COCO is 20 GB and
not available offline. The default run instead pastes real object images (Fashion-MNIST items,
or sklearn's digits when Fashion-MNIST is not installed) at random scales and positions on dark
canvases, 1-5 per image, and writes the result as standard COCO JSON + PNG files. Because it is
plain COCO, the same loader, detector and `pycocotools` evaluation run unchanged on real COCO
when the user points the config at it.

Layout (the same as COCO 2017 with split names ``train`` / ``val``)::

    DIR/annotations/instances_train.json   DIR/train/000000.png ...
    DIR/annotations/instances_val.json     DIR/val/000000.png ...
    DIR/meta.json                          generator parameters (cache key) and counts

Objects for the val split come from the source's test images, so no item instance is seen in
both splits. Box conventions follow COCO: ``bbox`` is ``[x, y, w, h]`` in pixels (tight around
the pasted item's visible pixels), ``area`` is the box area (there are no masks), category ids
start at 1. Everything is deterministic from the seed; PNGs and JSON are written into a temp
directory that is renamed into place, so a killed run never leaves a half-written set behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layernas.evaluate.recipe import strict_fields

FORMAT_VERSION = 1
SOURCES = ("fashion-mnist", "digits", "auto")
FASHION_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
DIGIT_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class GenConfig:
    """Parameters of the generated set; together with FORMAT_VERSION they are its cache key."""

    seed: int = 0
    source: str = "auto"
    num_train: int = 300
    num_val: int = 100
    canvas: int = 96
    min_objects: int = 1
    max_objects: int = 5
    min_size: int = 20
    max_size: int = 48
    max_overlap: float = 0.15

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"detdata source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for name in ("num_train", "num_val", "canvas", "min_objects", "max_objects", "min_size", "max_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"detdata {name} must be a positive integer, got {v!r}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"detdata min_objects ({self.min_objects}) > max_objects ({self.max_objects})")
        if not 4 <= self.min_size <= self.max_size <= self.canvas:
            raise ValueError(
                f"detdata sizes must satisfy 4 <= min_size <= max_size <= canvas, got "
                f"{self.min_size}, {self.max_size}, {self.canvas}"
            )
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ValueError(f"detdata max_overlap must be in [0, 1], got {self.max_overlap}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "GenConfig":
        raw = strict_fields(cls, raw, "detdata")
        return cls(**raw)


# --------------------------------------------------------------------------- object sources


def _fashion_objects(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels, via `layernas.evaluate.data` (the one place that
    knows where the Debian package puts the files)."""
    from layernas.evaluate import data

    return data.load_fashion_mnist_arrays(split)


def _digit_objects(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (values 0..16) scaled to uint8; a fixed 70/30 split by index."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)
    cut = int(0.7 * len(images))
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    return images[sl], d.target[sl].astype(np.int64)


def resolve_source(source: str) -> str:
    """``auto`` means Fashion-MNIST when it is installed, digits otherwise (as the trials do)."""
    if source != "auto":
        return source
    from layernas.evaluate.data import DataError

    try:
        _fashion_objects("test")
        return "fashion-mnist"
    except DataError:  # not installed; anything else is a bug and must not pass as "use digits"
        return "digits"


def load_objects(source: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (N, h, w), labels 0..9, class names) of one split ('train' or 'test')."""
    if source == "fashion-mnist":
        from layernas.evaluate.data import DataError

        try:
            images, labels = _fashion_objects(split)
        except DataError as exc:
            raise ValueError(
                f"detdata source fashion-mnist is not available ({exc}); install the Debian package "
                "dataset-fashion-mnist or use source: digits"
            ) from None
        return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64), FASHION_NAMES
    if source == "digits":
        images, labels = _digit_objects(split)
        return images, labels, DIGIT_NAMES
    raise ValueError(f"unknown object source {source!r}; known: fashion-mnist, digits")


# --------------------------------------------------------------------------- generation


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def _render_split(
    cfg: GenConfig, rng: np.random.Generator, objects: np.ndarray, labels: np.ndarray, count: int
) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
    """``count`` canvases with their annotations (bbox xywh, category index 0..K-1)."""
    from PIL import Image

    out = []
    s = cfg.canvas
    for _ in range(count):
        base = rng.uniform(0, 40)
        canvas = np.clip(base + rng.normal(0, 6, size=(s, s)), 0, 255)
        boxes: list[dict[str, Any]] = []
        for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
            idx = int(rng.integers(len(objects)))
            side = int(rng.integers(cfg.min_size, cfg.max_size + 1))
            item = np.asarray(
                Image.fromarray(objects[idx]).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64
            )
            ys, xs = np.nonzero(item > 30)
            if len(xs) == 0:
                continue
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            # Up to 20 positions; keep the first whose tight box overlaps no earlier box too much.
            for _try in range(20):
                px = int(rng.integers(0, s - side + 1))
                py = int(rng.integers(0, s - side + 1))
                box = (float(px + x0), float(py + y0), float(x1 - x0), float(y1 - y0))
                if all(_iou(box, b["bbox"]) <= cfg.max_overlap for b in boxes):
                    region = canvas[py : py + side, px : px + side]
                    np.maximum(region, item, out=region)
                    boxes.append({"bbox": box, "label": int(labels[idx])})
                    break
        out.append((canvas.round().astype(np.uint8), boxes))
    return out


def _coco_json(split: str, rendered, names: tuple[str, ...], cfg: GenConfig, source: str) -> dict[str, Any]:
    images, annotations = [], []
    for i, (img, boxes) in enumerate(rendered):
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": img.shape[1], "height": img.shape[0],
                       "license": 1})
        for b in boxes:
            x, y, w, h = b["bbox"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": b["label"] + 1,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
    return {
        "info": {"description": f"layernas generated detection set ({source} objects), split {split}",
                 "version": str(FORMAT_VERSION), "year": 2024, "contributor": "layernas.detect.data",
                 "date_created": "", "url": ""},
        "licenses": [{"id": 1, "name": "see the object source's license", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": source} for k, n in enumerate(names)],
    }


def _meta(cfg: GenConfig, source: str) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "config": asdict(cfg), "resolved_source": source}


def is_current(out: str | Path, cfg: GenConfig) -> bool:
    """True when ``out`` holds a complete set generated with exactly these parameters."""
    meta = Path(out) / "meta.json"
    try:
        m = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return m.get("format_version") == FORMAT_VERSION and m.get("config") == asdict(cfg)


def generate(out: str | Path, cfg: GenConfig | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the generated set to ``out`` and return its meta (with image/box counts).

    An existing set with the same parameters is kept as is (the cache); an existing directory
    with anything else in it is an error unless ``overwrite`` (an empty one is replaced).
    """
    from PIL import Image

    cfg = cfg or GenConfig()
    out = Path(out)
    if is_current(out, cfg):
        return json.loads((out / "meta.json").read_text()) | {"cached": True}
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not a data set generated with these parameters; "
                         "pass overwrite (--overwrite) or choose another directory")
    source = resolve_source(cfg.source)
    rng = np.random.default_rng(cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        counts = {}
        for split, obj_split, count in (("train", "train", cfg.num_train), ("val", "test", cfg.num_val)):
            objects, labels, names = load_objects(source, obj_split)
            rendered = _render_split(cfg, rng, objects, labels, count)
            (tmp / split).mkdir()
            for i, (img, _) in enumerate(rendered):
                Image.fromarray(img, mode="L").save(tmp / split / f"{i:06d}.png")
            coco = _coco_json(split, rendered, names, cfg, source)
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
            counts[split] = {"images": len(coco["images"]), "boxes": len(coco["annotations"])}
        meta = _meta(cfg, source) | {"counts": counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta | {"cached": False}


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def quiet_stdout():
    """pycocotools prints progress to stdout; keep stdout clean for ``--json`` output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image dir) of a COCO-layout split: ``annotations/instances_{split}.json``
    and ``{split}/`` (COCO 2017: split = train2017 / val2017). A clear error when missing."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"detection data directory {root} does not exist (generate it with "
                         "'layernas detdata --out DIR' or point transfer.data at a COCO root)")
    ann = root / "annotations" / f"instances_{split}.json"
    images = root / split
    if not ann.is_file():
        found = sorted(p.name for p in (root / "annotations").glob("instances_*.json")) \
            if (root / "annotations").is_dir() else []
        raise ValueError(f"COCO annotation file {ann} is missing (found: {found or 'none'}); "
                         "expected DIR/annotations/instances_<split>.json")
    if not images.is_dir():
        raise ValueError(f"COCO image directory {images} is missing; expected DIR/<split>/ next to "
                         f"DIR/annotations/ (split {split!r})")
    return ann, images


def load_coco(ann_file: str | Path):
    """`pycocotools.coco.COCO` of a file, with its progress output sent to stderr."""
    from pycocotools.coco import COCO

    with quiet_stdout():
        return COCO(str(ann_file))


def category_maps(coco) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """COCO category ids are not contiguous (real COCO: 1..90 for 80 classes); the detector
    wants labels 1..K with 0 = background. Returns (cat id -> label, label -> cat id, names)."""
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
    to_cat = {v: k for k, v in to_label.items()}
    return to_label, to_cat, [c["name"] for c in cats]


def _make_dataset_class():
    import torch
    from torchvision.datasets import CocoDetection
    from torchvision.transforms.functional import pil_to_tensor

    class DetectionSet(CocoDetection):
        """torchvision's CocoDetection with targets in the form SSD trains on: float images in
        [0, 1] (gray images become RGB, as real COCO has some), boxes xyxy in pixels, labels
        1..K. Crowd boxes and degenerate boxes (w or h < 1 px) are dropped from training targets;
        an image with no objects gets boxes of shape (0, 4)."""

        def __init__(self, root, ann_file, to_label: dict[int, int], max_images: int | None = None):
            with quiet_stdout():
                super().__init__(str(root), str(ann_file))
            self.to_label = to_label
            if max_images is not None:
                self.ids = self.ids[: int(max_images)]

        def __getitem__(self, index: int):
            image_id = self.ids[index]
            img = self._load_image(image_id)
            anns = self._load_target(image_id)
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1]
            labels = [self.to_label[a["category_id"]]
                      for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1]
            target = {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "image_id": int(image_id),
            }
            return pil_to_tensor(img).float().div_(255.0), target

    return DetectionSet


def detection_set(root: str | Path, split: str, to_label: dict[int, int] | None = None,
                  max_images: int | None = None):
    """A torch Dataset of one split of a COCO-layout directory (see `split_paths`)."""
    ann, images = split_paths(root, split)
    if to_label is None:
        to_label = category_maps(load_coco(ann))[0]
    return _make_dataset_class()(images, ann, to_label, max_images)


def collate(batch):
    """Detection batches are lists (images may differ in size; SSD's transform resizes)."""
    return tuple(zip(*batch))
