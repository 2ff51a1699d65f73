"""Export a found model: TorchScript (``model.pt``) and ONNX (``model.onnx``) with their final
weights, and ``model.json``, a card a person can read (space and arch, each layer's option in
words, MAdds and params, input and normalisation, classes, proxy and final accuracy, recipe,
library versions, the key, the checks below). docs/export.md describes every field.

Each exported file is checked against the eager PyTorch model on the same inputs before
anything is written: the TorchScript module reloaded from its bytes, and the ONNX file with
``onnx.checker`` and ONNX Runtime; the largest absolute difference of the logits goes into the
card and must stay under ``TOLERANCE`` (1e-4). ONNX comes from PyTorch's TorchScript-based
exporter (``dynamo=False``): it needs the ``onnx`` package only, while the default dynamo
exporter of torch 2.14 needs ``onnxscript`` on top. Files are written atomically, the card
last, so a directory with ``model.json`` holds a whole export.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from layernas.evaluate.loading import FinalModel, build_final, find_final, space_of
from layernas.store.files import atomic_write_bytes, atomic_write_json
from layernas.store.layout import EXPORT_CARD, EXPORT_ONNX, EXPORT_TORCHSCRIPT, Layout
from layernas.store.records import PROGRAMMING_ERRORS, versions

FORMATS = ("torchscript", "onnx")
FORMAT_CHOICES = (*FORMATS, "both")
TOLERANCE = 1e-4
ONNX_OPSET = 17
CHECK_BATCH = 4      # random inputs compared per check (plus one batch of 1: the batch axis is dynamic)
CARD_VERSION = 1


class ExportError(ValueError):
    """An exported file does not reproduce the model (or cannot be made); nothing is written."""


def formats_of(choice: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``torchscript``, ``onnx``, ``both`` (or a list of them) as a tuple of formats."""
    items = [choice] if isinstance(choice, str) else list(choice)
    out: list[str] = []
    for item in items:
        if item not in FORMAT_CHOICES:
            raise ValueError(f"export format must be one of {', '.join(FORMAT_CHOICES)}, got {item!r}")
        out += list(FORMATS) if item == "both" else [item]
    return tuple(f for f in FORMATS if f in out)


@contextlib.contextmanager
def _quiet_exporters():
    """torch 2.14 marks torch.jit and the TorchScript-based ONNX exporter deprecated on every
    call; they still work, and the card says which exporter made the files (docs/export.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        yield


def check_inputs(pre, seed: int = 0) -> list:
    """Inputs for the checks: a batch of CHECK_BATCH and a batch of 1, drawn like normalised
    images (standard normal), the same for every export of the same input shape."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (pre.input_channels, pre.input_size, pre.input_size)
    return [torch.randn((CHECK_BATCH, *shape), generator=g), torch.randn((1, *shape), generator=g)]


def _max_diff(run: Callable, model, inputs) -> float:
    import torch

    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = model(x)
            got = torch.as_tensor(run(x))
            if tuple(got.shape) != tuple(ref.shape):
                raise ExportError(f"exported model gives logits of shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
            worst = max(worst, float((got.float() - ref.float()).abs().max()))
    return worst


def to_torchscript(model, inputs) -> tuple[bytes, dict]:
    """A traced TorchScript module (every backbone's forward is a fixed graph) and its check:
    the module reloaded from the bytes against the eager model."""
    import torch

    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(model, inputs[0], check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        data = buf.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
        diff = _max_diff(loaded, model, inputs)
    return data, {"exporter": f"torch.jit.trace (torch {torch.__version__})", "max_abs_diff": diff}


def to_onnx(model, inputs) -> tuple[bytes, dict]:
    """ONNX (opset ONNX_OPSET, dynamic batch axis ``input`` -> ``logits``), checked with
    onnx.checker (full check) and against the eager model in ONNX Runtime (CPU)."""
    import onnx
    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    with _quiet_exporters(), torch.no_grad():
        torch.onnx.export(model, (inputs[0],), buf, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    data = buf.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejects the exported model: {exc}") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    diff = _max_diff(lambda x: session.run(None, {"input": x.numpy()})[0], model, inputs)
    return data, {"exporter": f"torch.onnx.export(dynamo=False) (torch {torch.__version__})", "opset": ONNX_OPSET,
                  "checker": "passed (full_check)", "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
                  "max_abs_diff": diff}


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    out = versions(torch=True) | {"torchvision": torchvision.__version__, "numpy": numpy.__version__}
    for name in ("onnx", "onnxruntime"):
        with contextlib.suppress(ImportError):
            out[name] = __import__(name).__version__
    return out


def in_words(fields: dict[str, Any], node: int | None = None) -> str:
    """An option's fields as a person reads them: ``kernel 5x5, 72 expanded filters``,
    ``24 filters``, ``64 channels``, ``node 0 -> 2: skip_connect, node 1 -> 2: none``."""
    from layernas.core.space import NB201_OPS

    parts = []
    for name, v in fields.items():
        if name == "kernel":
            parts.append(f"kernel {v}x{v}")
        elif name in ("expanded", "filters", "channels"):
            parts.append(f"{v} {'expanded filters' if name == 'expanded' else name}")
        elif name == "ops" and isinstance(v, list):
            to = node if node is not None else len(v)
            parts += [f"node {j} -> {to}: {NB201_OPS[o] if isinstance(o, int) and 0 <= o < len(NB201_OPS) else o}"
                      for j, o in enumerate(v)]
        else:
            parts.append(f"{name} {v}")
    return ", ".join(parts)


def layer_choices(space, arch: str) -> list[dict[str, Any]]:
    """Each searched layer's chosen option: layer name, option index, its label (``k5e72``),
    the same in words (``kernel 5x5, 72 expanded filters``) and the option's fields."""
    from layernas.core.space import parse_arch

    idx = parse_arch(arch, space)
    out = []
    for n, (layer, i, label) in enumerate(zip(space.layers, idx, space.describe(idx))):
        fields = {k: v for k, v in layer.options[i].items() if not str(k).startswith("_")}
        node = n + 1 if space.backbone == "nb201" else None
        out.append({"layer": layer.name, "option": int(i), "choice": label, "words": in_words(fields, node),
                    "fields": fields})
    return out


def model_card(fm: FinalModel, space, pre) -> dict[str, Any]:
    """The card's fields that describe the model itself (the export adds files and checks)."""
    from layernas.core.cost import cost_of
    from layernas.core.describe import decode, human_number
    from layernas.core.space import parse_arch

    rec, arch = fm.preprocessing, fm.preprocessing["arch"]
    c = cost_of(space, [parse_arch(arch, space)], input_size=pre.input_size, num_classes=int(rec["num_classes"]),
                input_channels=pre.input_channels)
    madds, params = int(c["madds"][0]), int(c["params"][0])
    top = fm.top or {}
    return {
        "card_version": CARD_VERSION,
        "key": fm.key, "rank": fm.rank, "results": None if fm.results is None else str(fm.results),
        "space": {"name": space.name, "id": space.space_id, "backbone": space.backbone},
        "arch": arch, "options": decode(space, arch), "layers": layer_choices(space, arch),
        "madds": madds, "params": params, "cost_text": f"{human_number(madds)} MAdds / {human_number(params)} params",
        "input": pre.to_dict() | {
            "how": "x = (image_uint8 / 255 - mean) / std per channel, NCHW float32 (docs/export.md)"},
        "classes": {"count": int(rec["num_classes"]), "names": rec.get("classes"), "dataset": rec.get("dataset")},
        "accuracy": {"proxy_val": top.get("accuracy"), "final_test": fm.metrics.get("test_accuracy"),
                     "proxy_trial_key": top.get("key")},
        "recipe": {"train": fm.inputs.get("train"), "final": fm.inputs.get("final"), "seed": fm.inputs.get("seed")},
        "trained": {"epochs": fm.metrics.get("epochs"), "steps": fm.metrics.get("steps"),
                    "device": fm.metrics.get("device"), "versions": fm.metrics.get("versions")},
    }


def export_found(fm: FinalModel, out: str | Path, formats=FORMATS) -> dict[str, Any]:
    """Export one finished final model into ``out``; the card (also written as model.json).
    Every check runs before the first file is written: an ExportError leaves ``out`` as it was."""
    import torch

    formats = formats_of(formats)
    t0 = time.perf_counter()
    space = space_of(fm.preprocessing)
    model, pre = build_final(fm, device="cpu")
    card = model_card(fm, space, pre)
    inputs = check_inputs(pre)
    files: dict[str, bytes] = {}
    checks: dict[str, dict] = {}
    makers = {"torchscript": (EXPORT_TORCHSCRIPT, to_torchscript), "onnx": (EXPORT_ONNX, to_onnx)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest, and the checks stay repeatable
    try:
        for fmt in formats:
            name, make = makers[fmt]
            data, check = make(model, inputs)
            check |= {"inputs": sum(len(x) for x in inputs), "tolerance": TOLERANCE, "bytes": len(data)}
            if not check["max_abs_diff"] < TOLERANCE:
                raise ExportError(f"{fmt} export of {fm.key} differs from the PyTorch model by "
                                  f"{check['max_abs_diff']:.3g} (max abs logit difference; must be < {TOLERANCE:g})")
            files[name], checks[fmt] = data, check
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    card |= {"status": "ok", "error": None,
             "files": {fmt: makers[fmt][0] for fmt in formats} | {"card": EXPORT_CARD, "weights": str(fm.weights)},
             "checks": checks, "versions": library_versions(), "export_seconds": round(time.perf_counter() - t0, 3),
             "exported_at": time.time()}
    atomic_write_json(out / EXPORT_CARD, card)
    return card


def export_model(path: str | Path, out: str | Path | None = None, formats=FORMATS, rank: int | None = None,
                 key: str | None = None) -> dict[str, Any]:
    """``layernas export``: the final model ``find_final`` picks (``rank``/``key``), exported into
    ``out`` (default ``<results>/export/<key>``). ValueError for bad input; nothing is written then."""
    formats = formats_of(formats)
    fm = find_final(path, rank=rank, key=key)
    if out is None:
        if fm.results is None:
            raise ValueError(f"{path} is not inside a results directory: name the output directory (--out)")
        out = Layout(fm.results).export_dir(fm.key)
    return export_found(fm, out, formats) | {"dir": str(out)}


def export_final_dir(final_dir: str | Path, out: str | Path, formats=FORMATS) -> dict[str, Any]:
    """The workflow's export of ``final/{key}``: a model that cannot be exported (its retraining
    failed, it predates preprocessing.json, an exported file differs) gets a card saying why
    (status ``failed``) instead of stopping the run; an error of the code is raised."""
    final_dir = Path(final_dir)
    try:
        return export_found(find_final(final_dir), out, formats)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - one model's failure is a result, as for trials
        card = {"card_version": CARD_VERSION, "key": final_dir.name, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}", "files": {}, "exported_at": time.time()}
        atomic_write_json(Path(out) / EXPORT_CARD, card)
        return card
