"""A found model, ready to use: find a final model in a results directory, rebuild it with its
weights, and turn images into the tensor it was trained and tested on.

The final stage saves, next to ``results/final/{key}/model.pt`` (the weights that scored the
recorded test accuracy), ``preprocessing.json``: the space (name, id, source), the arch, the
classes and the input: size, channels, the normalisation mean/std computed from the training
images at run time, and the resize an ImageFolder set was loaded with. ``load_model`` reads both:

    model, preprocess = layernas.load_model("results", rank=1)
    logits = model(preprocess(uint8_images))      # (N, C, H, W), (N, H, W, C) or one image

Ranks follow the search's top list (``search/summary.json``, best proxy accuracy first), the
order of the report's final models table and of ``layernas status``. Every problem with the
input (not a results directory, no finished final model, an unknown key, a rank out of range,
a space file changed since training) is a ValueError whose message says what to do. Nothing
here imports ``layernas.store.records`` (which imports the package root): ``layernas`` imports
this module lazily for ``layernas.load_model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from layernas.store.layout import INPUTS, METRICS, PREPROCESSING, WEIGHTS, Layout

PREPROCESSING_VERSION = 1

# Class names of the built-in data sets, in label order (the sets' own documentation).
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "digits": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
IMAGEFOLDER_SIZE = 64  # load_dataset's image_size: an ImageFolder image is resized, then centre-cropped


def class_names(dataset: str, data_dir: str | None, num_classes: int) -> list[str] | None:
    """Label names in label order where they are known (an ImageFolder's are its sorted
    class directories, as torchvision orders them); None otherwise (CIFAR-100)."""
    names: list[str] | None = list(CLASS_NAMES.get(dataset, ())) or None
    if dataset == "imagefolder" and data_dir:
        train = Path(data_dir) / "train"
        names = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else None
    return names if names is not None and len(names) == num_classes else None


def preprocessing_record(space, arch: str, *, dataset: str, data_dir: str | None, num_classes: int,
                         input_size: int, input_channels: int, mean, std) -> dict[str, Any]:
    """What ``preprocessing.json`` holds (the final stage writes it beside the weights)."""
    return {
        "version": PREPROCESSING_VERSION,
        "space": space.name, "space_id": space.space_id, "space_source": str(space.source or ""),
        "backbone": space.backbone, "arch": arch,
        "dataset": dataset, "num_classes": int(num_classes),
        "classes": class_names(dataset, data_dir, num_classes),
        "input_size": int(input_size), "input_channels": int(input_channels), "layout": "NCHW",
        "resize": IMAGEFOLDER_SIZE if dataset == "imagefolder" else None,
        "scale": "uint8 / 255",
        "mean": [float(v) for v in _flat(mean)], "std": [float(v) for v in _flat(std)],
    }


def _flat(t) -> list[float]:
    return [float(v) for v in (t.reshape(-1).tolist() if hasattr(t, "reshape") else t)]


@dataclass(frozen=True)
class Preprocess:
    """Images -> the normalised float32 NCHW tensor the model expects, with the very operations
    training used: ``(uint8 / 255 - mean) / std``. Takes a torch tensor or numpy array, uint8
    (0..255) or float (already in 0..1); a batch (N, C, H, W) or (N, H, W, C), one image (C, H, W)
    or (H, W, C), or for one channel (N, H, W) / (H, W). An image of another size is resized
    (shorter side, antialiased) and centre-cropped to ``input_size``. ``classes``: the label
    names in label order, where the data set has them."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    input_channels: int
    resize: int | None = None
    classes: tuple[str, ...] | None = field(default=None, compare=False)

    @classmethod
    def from_record(cls, rec: dict) -> Preprocess:
        mean, std = tuple(map(float, rec["mean"])), tuple(map(float, rec["std"]))
        c = int(rec["input_channels"])
        if len(mean) != c or len(std) != c:
            raise ValueError(f"preprocessing: {c} input channels but {len(mean)} means and {len(std)} stds")
        classes = tuple(rec["classes"]) if rec.get("classes") else None
        return cls(mean, std, int(rec["input_size"]), c, rec.get("resize"), classes)

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "input_channels": self.input_channels, "layout": "NCHW",
                "dtype": "float32", "scale": "uint8 / 255", "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize}

    def _nchw(self, x):
        c = self.input_channels
        if x.ndim == 2 and c == 1:
            return x[None, None]
        if x.ndim == 3:
            if x.shape[0] == c:
                return x[None]
            if x.shape[-1] == c:
                return x.permute(2, 0, 1)[None]
            if c == 1:
                return x[:, None]
        if x.ndim == 4:
            if x.shape[1] == c:
                return x
            if x.shape[-1] == c:
                return x.permute(0, 3, 1, 2)
        raise ValueError(f"images of shape {tuple(x.shape)} do not have the model's {c} channel(s); "
                         "give (N, C, H, W), (N, H, W, C) or one image")

    def __call__(self, images):
        import torch

        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(images)
        x = self._nchw(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float()
        else:
            raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            from torchvision.transforms.v2 import functional as TF

            x = TF.center_crop(TF.resize(x, self.input_size, antialias=True), [self.input_size] * 2)
        shape = (1, self.input_channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).reshape(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).reshape(shape)
        return (x - mean) / std


@dataclass
class FinalModel:
    """One finished final model: where it is, what it recorded, and where it ranks."""

    key: str
    dir: Path
    metrics: dict
    inputs: dict
    preprocessing: dict
    rank: int | None = None
    top: dict | None = None          # its row of the search's top list (proxy accuracy, cost)
    results: Path | None = None      # the results directory it belongs to, when known

    @property
    def weights(self) -> Path:
        return self.dir / WEIGHTS


class LoadedModel(NamedTuple):
    model: Any         # torch.nn.Module in eval mode
    preprocess: Preprocess


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); `layernas audit` checks a results directory") from None


def _top(results: Path) -> list[dict]:
    path = Layout(results).summary
    if not path.is_file():
        raise ValueError(f"{results} has no search summary ({path}): the search has not finished there")
    rows = (_read_json(path) or {}).get("top") or []
    return [r for r in rows if isinstance(r, dict) and r.get("final_key")]


def _is_results(path: Path) -> bool:
    layout = Layout(path)
    return layout.search_dir.is_dir() or (path / "final").is_dir()


def find_final(path: str | Path, rank: int | None = None, key: str | None = None) -> FinalModel:
    """The finished final model at ``path``: a results directory (``rank`` 1 = the search's
    best, the default, or ``key``) or one ``final/{key}`` directory. ValueError when there is none."""
    path = Path(path)
    if rank is not None and key is not None:
        raise ValueError("give a rank or a key, not both")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive integer (1 = the best model), got {rank!r}")
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if (path / METRICS).is_file() or (path / INPUTS).is_file():
        if rank is not None or (key is not None and key != path.name):
            raise ValueError(f"{path} is one final model ({path.name}); give its results directory to choose "
                             "by rank or key")
        results = path.parents[1] if path.parent.name == "final" else None
        top = _top(results) if results is not None and Layout(results).summary.is_file() else []
        found = [i for i, r in enumerate(top) if r["final_key"] == path.name]
        return _finished(path, found[0] + 1 if found else None, top[found[0]] if found else None, results)
    if not _is_results(path):
        raise ValueError(f"{path} is not a results directory (no search/ or final/ in it) nor a final model "
                         f"directory (no {METRICS})")
    layout, top = Layout(path), _top(path)
    if key is not None:
        found = [i for i, r in enumerate(top) if r["final_key"] == key]
        if not found and not layout.final_dir(key).is_dir():
            known = ", ".join(r["final_key"] for r in top) or "none"
            raise ValueError(f"no final model with key {key!r} in {path} (the search's final models: {known})")
        i = found[0] if found else None
        return _finished(layout.final_dir(key), None if i is None else i + 1, None if i is None else top[i], path)
    rank = rank or 1
    if not top:
        raise ValueError(f"{path}: the search found no model in its target range, so there is no final model")
    if rank > len(top):
        raise ValueError(f"rank {rank} is out of range: {path} has {len(top)} final model(s) (rank 1..{len(top)})")
    row = top[rank - 1]
    return _finished(layout.final_dir(row["final_key"]), rank, row, path)


def _finished(d: Path, rank: int | None, top: dict | None, results: Path | None) -> FinalModel:
    """The record of final directory ``d``, or a ValueError saying why it cannot be used."""
    where = f"final model {d.name}" + (f" (rank {rank}, arch {top.get('arch')})" if rank and top else "")
    if not (d / METRICS).is_file():
        raise ValueError(f"{where} is not finished: {d / METRICS} is missing (final.activate false, or the "
                         "final stage has not run: run the workflow)")
    metrics = _read_json(d / METRICS)
    if metrics.get("status") != "ok":
        raise ValueError(f"{where} failed its final retraining ({metrics.get('error')}); see {d / 'log.txt'}")
    if not (d / PREPROCESSING).is_file():
        raise ValueError(f"{where} was retrained before layernas saved the preprocessing with the weights "
                         f"(no {d / PREPROCESSING}): delete {d} and run the workflow again to retrain it")
    if not (d / WEIGHTS).is_file():
        raise ValueError(f"{where} has no weights ({d / WEIGHTS})")
    inputs = _read_json(d / INPUTS) if (d / INPUTS).is_file() else {}
    return FinalModel(d.name, d, metrics, inputs, _read_json(d / PREPROCESSING), rank, top, results)


def space_of(rec: dict):
    """The space a model was trained in, checked by its id: a built-in name, or the file it came
    from. ValueError when the definition changed since (its arch strings may mean other layers)."""
    from layernas.core.space import SpaceError, load_space

    seen = []
    for spec in (rec.get("space"), rec.get("space_source")):
        if not spec:
            continue
        try:
            space = load_space(spec)
        except (SpaceError, OSError, ValueError) as exc:
            seen.append(f"{spec}: {exc}")
            continue
        if space.space_id == rec.get("space_id"):
            return space
        seen.append(f"{spec} is now {space.space_id}")
    raise ValueError(f"the space this model was trained in ({rec.get('space_id')}) is not available: "
                     + "; ".join(seen or ["no space named"]))


def build_final(fm: FinalModel, device: str = "cpu"):
    """(model in eval mode with its final weights, Preprocess) of a found final model."""
    import torch

    from layernas.evaluate.models import build_model

    rec = fm.preprocessing
    space = space_of(rec)
    model = build_model(space, rec["arch"], num_classes=int(rec["num_classes"]), input_size=int(rec["input_size"]),
                        input_channels=int(rec["input_channels"]))
    state = torch.load(fm.weights, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    model.final_key, model.arch, model.space_id = fm.key, rec["arch"], rec["space_id"]
    return model, Preprocess.from_record(rec)


def load_model(path: str | Path, rank: int | None = None, key: str | None = None,
               device: str = "cpu") -> LoadedModel:
    """``(model, preprocess)`` of a found model: ``path`` is a results directory (``rank`` 1 =
    the best of the search's final models, the default; or ``key``) or a ``final/{key}``
    directory. The model is in eval mode on ``device``; ``preprocess(images)`` gives its input."""
    return LoadedModel(*build_final(find_final(path, rank=rank, key=key), device=device))
