"""Detection transfer: a found backbone under torchvision's SSDLite, scored with COCO mAP.

The paper (Table 6) puts its found backbones under SSDLite on COCO and compares mAP with
MobileNet backbones of similar cost. This module is the run that does the same at laptop
scale: it loads the data, transfers the found backbone (and, for comparison, a MobileNetV3-Small
matched on backbone MAdds, and optionally the found architecture from scratch), trains and
scores each detector, and writes the metrics and detections. The settings are
`layernas.detect.recipe`, the networks `layernas.detect.ssdlite`, training and COCO scoring
`layernas.detect.train_eval`.

- The reference is trained with the same detector and recipe in the same run. There are no
  ImageNet weights offline, so the reference starts from scratch while the found backbone
  carries its classification weights; `found_scratch` (config `scratch: true`) separates the
  two effects.
- Each detector is also scored before training (`untrained_map`).
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layernas.detect.data import category_maps, detection_set, load_coco, split_paths
from layernas.detect.recipe import TransferConfig
from layernas.detect.ssdlite import (
    backbone_madds,
    build_detector,
    detector_madds,
    found_features,
    match_reference_width,
    reference_features,
    tap_backbone,
)
from layernas.detect.train_eval import coco_metrics, predict, recalibrate_bn, train_detector
from layernas.store.files import atomic_write_json

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
