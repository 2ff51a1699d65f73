"""Detection transfer: a found backbone under torchvision's SSDLite, scored with COCO mAP.

The paper (Table 6) puts its found backbones under SSDLite on COCO and compares mAP with
MobileNet backbones of similar cost. This module does the same at laptop scale:

- `found_features` rebuilds the found classifier with `models.build_model`, loads its weights
  and keeps its feature layers (stem, bneck blocks, head conv); `TapBackbone` returns the maps
  at the configured strides, adding torchvision's SSDLite extra blocks (`_extra_block`) past the
  network's own deepest stride. A mobilenet-tiny model (28 px Fashion-MNIST) only reaches
  stride 4, so with the default strides (8, 16, 32) all three detection maps come from extras
  over its full feature stack; a MobileNetV3 taps its own stride-8/16/32 layers.
- Input channels: the found model saw 1-channel images; the detector sees RGB (COCO, and the
  generated set is loaded as gray replicated to RGB). The stem conv becomes a 3-channel conv
  whose weights are the 1-channel weights divided by 3 on every channel: on a gray image that is
  exactly the trained filter, and on a colour image it filters the channel mean (luminance).
- The detector is torchvision's `SSD` with `SSDLiteHead` and `DefaultBoxGenerator`, at the real
  canvas size (not 320 px, which is ~12x slower here); nothing of SSD is re-implemented.
- The reference is `torchvision.models.mobilenet_v3_small(weights=None, width_mult=w).features`
  with w chosen so its backbone MAdds at the canvas size are closest to the found backbone's,
  trained with the same detector and recipe in the same run. There are no ImageNet weights
  offline, so the reference starts from scratch while the found backbone carries its
  classification weights; `found_scratch` (config `scratch: true`) separates the two effects.
- Metrics come from `pycocotools.cocoeval.COCOeval` (bbox): mAP@[.5:.95], AP50, AP75 and AP for
  COCO's small/medium/large areas (null when the val set has no object of that size, where
  COCOeval reports -1). Each detector is also scored before training (`untrained_map`).
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from layernas.detect.data import category_maps, collate, detection_set, load_coco, quiet_stdout, split_paths
from layernas.evaluate.recipe import strict_fields
from layernas.store.files import atomic_write_json

COCO_STATS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


@dataclass(frozen=True)
class TransferConfig:
    """The transfer recipe (config section ``transfer.recipe``); defaults are the measured fast
    recipe of transfer-notes: 96 px, 6 epochs, AdamW 3e-3 with warm-up + cosine, batch 16."""

    canvas: int = 96
    strides: tuple[int, ...] = (8, 16, 32)
    extra_channels: int = 128
    aspect_ratios: tuple[int, ...] = (2,)
    min_ratio: float = 0.15
    max_ratio: float = 0.9
    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    train_split: str = "train"
    val_split: str = "val"
    max_train_images: int | None = None
    max_val_images: int | None = None
    score_thresh: float = 0.01
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    image_mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    image_std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bn_recalibrate: bool = True
    reference: bool = True
    scratch: bool = False
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("canvas", "extra_channels", "epochs", "batch_size", "detections_per_img"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"transfer {name} must be a positive integer, got {v!r}")
        for name in ("max_train_images", "max_val_images", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"transfer {name} must be a positive integer or null, got {v!r}")
        if not self.strides or any(not isinstance(s, int) or s < 2 or s & (s - 1) for s in self.strides) \
                or list(self.strides) != sorted(set(self.strides)):
            raise ValueError(f"transfer strides must be increasing powers of two >= 2, got {list(self.strides)}")
        if not self.aspect_ratios or any(not isinstance(a, int) or a < 2 for a in self.aspect_ratios):
            raise ValueError(f"transfer aspect_ratios must be integers >= 2, got {list(self.aspect_ratios)}")
        if not 0 < self.min_ratio < self.max_ratio <= 1.5:
            raise ValueError(f"transfer needs 0 < min_ratio < max_ratio, got {self.min_ratio}, {self.max_ratio}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_epochs >= 0):
            raise ValueError("transfer lr must be > 0, weight_decay and warmup_epochs >= 0")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("transfer image_mean/image_std need 3 values each, std > 0")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "TransferConfig":
        raw = strict_fields(cls, raw, "transfer")
        for key in ("strides", "aspect_ratios", "image_mean", "image_std"):
            if key in raw:
                if not isinstance(raw[key], (list, tuple)):
                    raise ValueError(f"transfer {key} must be a list, got {raw[key]!r}")
                raw[key] = tuple(raw[key])
        return cls(**raw)


# --------------------------------------------------------------------------- backbones

_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDLite norm layer


class TapBackbone(nn.Module):
    """``body`` (the classifier's feature layers, cut after the deepest tap) returns the outputs
    of modules ``taps``; ``extras`` continue from the body's output, each halving the size, and
    the ones in ``extra_out`` are returned too. SSD reads ``out_channels`` and the OrderedDict."""

    def __init__(self, body: nn.Sequential, taps: list[int], extras: nn.ModuleList, extra_out: list[int],
                 out_channels: list[int]):
        super().__init__()
        self.body = body
        self.taps = list(taps)
        self.extras = extras
        self.extra_out = list(extra_out)
        self.out_channels = list(out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps: list[torch.Tensor] = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.taps:
                maps.append(x)
        for j, extra in enumerate(self.extras):
            x = extra(x)
            if j in self.extra_out:
                maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def _module_shapes(features: nn.Sequential, canvas: int, in_channels: int = 3) -> list[tuple[int, int]]:
    """(channels, stride) after every module of ``features`` on a canvas-size input."""
    shapes = []
    was = features.training
    features.eval()
    with torch.no_grad():
        x = torch.zeros(1, in_channels, canvas, canvas)
        for m in features:
            x = m(x)
            shapes.append((int(x.shape[1]), int(round(canvas / x.shape[-1]))))
    features.train(was)
    return shapes


def tap_backbone(features: nn.Sequential, canvas: int, strides: tuple[int, ...], extra_channels: int,
                 norm_layer: Callable[..., nn.Module] = _NORM) -> TapBackbone:
    """Cut ``features`` into a detection backbone returning one map per requested stride.

    Each stride the network reaches is tapped at the last module with that stride; the body ends
    at the last module whose stride is <= the largest requested one; every larger stride comes
    from a chain of SSDLite extra blocks (stride 2 each) over the body's output.
    """
    from torchvision.models.detection.ssdlite import _extra_block, _normal_init

    shapes = _module_shapes(features, canvas)
    top = max(strides)
    end = max((i for i, (_, s) in enumerate(shapes) if s <= top), default=None)
    if end is None:
        raise ValueError(f"the backbone's first layer already has stride {shapes[0][1]} > {top}")
    taps, out_channels = [], []
    for s in strides:
        idx = [i for i in range(end + 1) if shapes[i][1] == s]
        if idx:
            taps.append(idx[-1])
            out_channels.append(shapes[idx[-1]][0])
    last_c, last_s = shapes[end]
    rest = [s for s in strides if s > last_s]
    missing = [s for s in strides if s <= last_s and not any(shapes[i][1] == s for i in range(end + 1))]
    if missing:
        raise ValueError(f"no layer of the backbone has stride {missing} at canvas {canvas} "
                         f"(strides: {sorted({s for _, s in shapes})})")
    if rest and canvas // max(rest) < 1:
        raise ValueError(f"stride {max(rest)} leaves no pixels on a {canvas} px canvas")
    extras, extra_out = nn.ModuleList(), []
    c, s = last_c, last_s
    while rest and s < max(rest):
        extras.append(_extra_block(c, extra_channels, norm_layer))
        c, s = extra_channels, s * 2
        if s in rest:
            extra_out.append(len(extras) - 1)
            out_channels.append(c)
    _normal_init(extras)
    return TapBackbone(nn.Sequential(*features[: end + 1]), taps, extras, extra_out, out_channels)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # tolerate a checkpoint dict wrapping the state_dict
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def _feature_stack(model: nn.Module) -> nn.Sequential:
    """The convolutional part of a built classifier, as one Sequential."""
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return model.features
    if hasattr(model, "stem") and hasattr(model, "cells"):  # nb201 / nats CellNetwork
        return nn.Sequential(model.stem, *model.cells, model.lastact)
    raise ValueError(f"cannot find feature layers in a {type(model).__name__}")


def _rgb_stem(features: nn.Sequential) -> str:
    """Make the first conv take 3 channels: weights / 3 on each channel (see the module docs)."""
    for parent in features.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == 3:
                    return "stem already 3-channel"
                if child.in_channels != 1 or child.groups != 1:
                    raise ValueError(f"cannot map a {child.in_channels}-channel stem to RGB")
                conv = nn.Conv2d(3, child.out_channels, child.kernel_size, child.stride, child.padding,
                                 child.dilation, bias=child.bias is not None)
                with torch.no_grad():
                    conv.weight.copy_(child.weight.repeat(1, 3, 1, 1) / 3.0)
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, name, conv)
                return "1-channel stem weights / 3 on each RGB channel (exact on gray images)"
    raise ValueError("the backbone has no conv layer")


def found_features(space, arch, weights: str | Path | None) -> tuple[nn.Sequential, dict[str, Any]]:
    """The found model's feature layers with its trained weights (when given), RGB input."""
    from layernas.core.space import format_arch
    from layernas.evaluate.models import build_model

    model = build_model(space, arch)
    info: dict[str, Any] = {"weights": str(weights) if weights else None, "pretrained": False}
    if weights:
        sd = _read_state_dict(weights)
        # Only the feature layers transfer; the classifier may have had another class count.
        prefixes = ("features.", "stem.", "cells.", "lastact.")
        wanted = [k for k in model.state_dict() if k.startswith(prefixes)]
        missing = [k for k in wanted if k not in sd]
        if missing:
            raise ValueError(f"weights {weights} do not fit arch {format_arch(arch)} of {space.name}: "
                             f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        try:
            model.load_state_dict({k: sd[k] for k in wanted}, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"weights {weights} do not fit arch {format_arch(arch)} of {space.name}: "
                             f"{str(exc).strip().splitlines()[-1].strip()}") from None
        info["pretrained"] = True
    else:
        info["note"] = "no weights given: the found architecture is trained from scratch"
    features = _feature_stack(model)
    info["stem"] = _rgb_stem(features)
    return features, info


def reference_features(width_mult: float) -> nn.Sequential:
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(weights=None, width_mult=float(width_mult)).features


def backbone_madds(backbone: TapBackbone, canvas: int) -> int:
    """MAdds of the transferred classifier layers (``body``) on one canvas: the matched cost."""
    from layernas.evaluate.counting import count_madds_params

    return count_madds_params(backbone.body, canvas, 3)["madds"]


def match_reference_width(target_madds: float, cfg: TransferConfig) -> tuple[float, int]:
    """Width multiplier (a multiple of 0.05) of MobileNetV3-Small whose body MAdds at the canvas
    are closest to ``target_madds``; bisection, as MAdds grow with the width."""
    cache: dict[float, int] = {}

    def madds(w: float) -> int:
        w = round(w, 2)
        if w not in cache:
            tb = tap_backbone(reference_features(w), cfg.canvas, cfg.strides, cfg.extra_channels)
            cache[w] = backbone_madds(tb, cfg.canvas)
        return cache[w]

    lo, hi = 1, 80  # in steps of 0.05: widths 0.05 .. 4.0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if madds(mid * 0.05) < target_madds:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(madds(k * 0.05) - target_madds))
    return round(best * 0.05, 2), madds(best * 0.05)


# --------------------------------------------------------------------------- detector


def build_detector(backbone: TapBackbone, num_classes: int, cfg: TransferConfig) -> nn.Module:
    """torchvision SSD + SSDLiteHead on ``backbone``; ``num_classes`` includes background."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    size = (cfg.canvas, cfg.canvas)
    n_maps = len(backbone.out_channels)
    anchors = DefaultBoxGenerator([list(cfg.aspect_ratios)] * n_maps, min_ratio=cfg.min_ratio,
                                  max_ratio=cfg.max_ratio)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes, _NORM)
    return SSD(backbone, anchors, size, num_classes, head=head, image_mean=list(cfg.image_mean),
               image_std=list(cfg.image_std), score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
               detections_per_img=cfg.detections_per_img, topk_candidates=300)


class _DetectorFeatures(nn.Module):
    """Backbone + head in one forward, so the hook counter can count the whole detector."""

    def __init__(self, det: nn.Module):
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor):
        return self.det.head(list(self.det.backbone(x).values()))


def detector_madds(det: nn.Module, canvas: int) -> dict[str, int]:
    from layernas.evaluate.counting import count_madds_params

    return count_madds_params(_DetectorFeatures(det), canvas, 3)


def train_detector(det: nn.Module, dataset, cfg: TransferConfig, log=sys.stderr) -> dict[str, Any]:
    """AdamW with linear warm-up then cosine decay, per step; seeded shuffling."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed), num_workers=0)
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    warm = min(int(round(cfg.warmup_epochs * len(loader))), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    det.train()
    t0 = time.perf_counter()
    losses = []
    for epoch in range(cfg.epochs):
        running = 0.0
        for images, targets in loader:
            parts = det(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(parts.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detection loss became {loss.item()} in epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach().item()
        losses.append(running / max(1, len(loader)))
        print(f"  epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f} "
              f"({time.perf_counter() - t0:.1f} s)", file=log, flush=True)
    return {"train_seconds": time.perf_counter() - t0, "steps": total, "epoch_losses": losses}


@torch.no_grad()
def recalibrate_bn(det: nn.Module, dataset, batch_size: int = 32) -> int:
    """Recompute every BatchNorm's running mean/var as the plain average over the training set
    (weights untouched). torchvision's MobileNetV3 uses BN momentum 0.01, so after a few hundred
    steps its running stats still carry ~10% of their initial values: measured here, a
    reference that reached a lower training loss than the found backbone scored mAP ~0.001 in
    eval mode. Recalibrating both detectors the same way removes that artefact."""
    from torch.utils.data import DataLoader

    bns = [m for m in det.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    det.train()
    n = 0
    try:
        for images, _ in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            batch, _ = det.transform(list(images))
            det.head(list(det.backbone(batch.tensors).values()))
            n += len(images)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        det.eval()
    return n


@torch.no_grad()
def predict(det: nn.Module, dataset, to_cat: dict[int, int], batch_size: int = 32) -> list[dict[str, Any]]:
    """COCO result records (image_id, category_id, bbox xywh in original pixels, score)."""
    from torch.utils.data import DataLoader

    det.eval()
    out = []
    for images, targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        for pred, tgt in zip(det(list(images)), targets):
            for (x0, y0, x1, y1), label, score in zip(pred["boxes"].tolist(), pred["labels"].tolist(),
                                                      pred["scores"].tolist()):
                if x1 - x0 <= 0 or y1 - y0 <= 0:
                    continue
                out.append({"image_id": int(tgt["image_id"]), "category_id": to_cat[int(label)],
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": round(float(score), 5)})
    return out


def coco_metrics(coco_gt, detections: list[dict[str, Any]], image_ids: list[int]) -> dict[str, Any]:
    """COCOeval (bbox) on ``image_ids``: the six AP numbers of its summary (-1 becomes None)."""
    from pycocotools.cocoeval import COCOeval

    if not detections:  # COCO.loadRes([]) raises; no detection at all is AP 0 by definition
        return {k: 0.0 for k in COCO_STATS} | {"num_detections": 0}
    with quiet_stdout():
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:6]]
    return {k: (None if v < 0 else v) for k, v in zip(COCO_STATS, stats)} | {"num_detections": len(detections)}


# --------------------------------------------------------------------------- one run


def _versions() -> dict[str, str]:
    import pycocotools
    import torchvision

    from layernas import __version__

    return {"layernas": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pycocotools": getattr(pycocotools, "__version__", "?"), "python": platform.python_version()}


def _run_one(name: str, features: nn.Sequential, data: dict[str, Any], cfg: TransferConfig,
             log, detections_path: Path | None) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    backbone = tap_backbone(features, cfg.canvas, cfg.strides, cfg.extra_channels)
    det = build_detector(backbone, len(data["to_cat"]) + 1, cfg)
    counted = detector_madds(det, cfg.canvas)
    res: dict[str, Any] = {
        "backbone_madds": backbone_madds(backbone, cfg.canvas),
        "detector_madds": counted["madds"],
        "detector_params": counted["params"],
        "feature_maps": [{"channels": c} for c in backbone.out_channels],
        "tapped_layers": backbone.taps, "extra_blocks": len(backbone.extras),
    }
    t0 = time.perf_counter()
    before = coco_metrics(data["gt"], predict(det, data["val"], data["to_cat"]), data["val_ids"])
    res["untrained_map"] = before["map"]
    print(f"[transfer] {name}: backbone {res['backbone_madds'] / 1e6:.2f}M MAdds, untrained mAP "
          f"{before['map']:.4f}", file=log, flush=True)
    res |= train_detector(det, data["train"], cfg, log)
    t1 = time.perf_counter()
    if cfg.bn_recalibrate:
        recalibrate_bn(det, data["train"])
    dets = predict(det, data["val"], data["to_cat"])
    res |= coco_metrics(data["gt"], dets, data["val_ids"])
    res["eval_seconds"] = time.perf_counter() - t1
    res["seconds"] = time.perf_counter() - t0
    if detections_path is not None:
        atomic_write_json(detections_path, dets)
        res["detections"] = detections_path.name
    print(f"[transfer] {name}: mAP {res['map']:.4f} AP50 {res['ap50']:.4f} "
          f"({res['train_seconds']:.1f} s train)", file=log, flush=True)
    return res


def load_data(data_dir: str | Path, cfg: TransferConfig) -> dict[str, Any]:
    """Ground truth, category maps and the train/val datasets of a COCO-layout directory."""
    val_ann, _ = split_paths(data_dir, cfg.val_split)
    split_paths(data_dir, cfg.train_split)
    gt = load_coco(val_ann)
    to_label, to_cat, names = category_maps(gt)
    train = detection_set(data_dir, cfg.train_split, to_label, cfg.max_train_images)
    val = detection_set(data_dir, cfg.val_split, to_label, cfg.max_val_images)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{data_dir}: the train or val split has no images")
    return {"gt": gt, "to_cat": to_cat, "names": names, "train": train, "val": val, "val_ids": list(val.ids)}


def run_transfer(space, arch, weights: str | Path | None, data_dir: str | Path, cfg: TransferConfig,
                 out_dir: str | Path, log=sys.stderr) -> dict[str, Any]:
    """Found backbone (and the MAdds-matched reference) under SSDLite; writes ``metrics.json``,
    ``detections.json`` (+ ``detections_reference.json``) to ``out_dir`` and returns the metrics."""
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    with _torch_settings(cfg.threads):
        metrics = _run_all(space, arch, weights, data_dir, cfg, out_dir, log)
    metrics["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


@contextlib.contextmanager
def _torch_settings(threads: int | None):
    """Threads and denormal flushing for the run, restored after. Measured here: 2 threads on
    2 shared cores gave 1-9 s steps (OpenMP waits on busy cores) against a steady 0.2 s with 1,
    and flushing denormals cut CPU steps by ~1/3."""
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)


def _run_all(space, arch, weights, data_dir, cfg: TransferConfig, out_dir: Path, log) -> dict[str, Any]:
    from layernas.core.space import format_arch

    data = load_data(data_dir, cfg)
    meta_path = Path(data_dir) / "meta.json"
    features, info = found_features(space, arch, weights)
    found = _run_one("found", features, data, cfg, log, out_dir / "detections.json")
    metrics: dict[str, Any] = {
        "status": "ok", "space": space.name, "space_id": space.space_id, "arch": format_arch(arch),
        **info, **found,
        "data": {"dir": str(data_dir), "train_images": len(data["train"]), "val_images": len(data["val"]),
                 "classes": data["names"],
                 "generated": json.loads(meta_path.read_text()) if meta_path.is_file() else None},
        "config": asdict(cfg), "versions": _versions(),
    }
    if cfg.scratch and info["pretrained"]:
        scratch, _ = found_features(space, arch, None)
        metrics["found_scratch"] = _run_one("found (scratch)", scratch, data, cfg, log,
                                            out_dir / "detections_scratch.json")
    if cfg.reference:
        width, _ = match_reference_width(found["backbone_madds"], cfg)
        ref = _run_one(f"mobilenet_v3_small x{width}", reference_features(width), data, cfg, log,
                       out_dir / "detections_reference.json")
        metrics["reference"] = {"name": "mobilenet_v3_small", "width_mult": width, "pretrained": False,
                                **ref}
    return metrics
