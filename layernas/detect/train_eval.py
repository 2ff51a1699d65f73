"""Training and scoring a detector: the recipe's optimiser and schedule, BatchNorm
recalibration, prediction to COCO result records, and COCO mAP.

Its own module because it works on any torchvision detection model and dataset, whatever its
backbone (`layernas.detect.ssdlite` builds them) and wherever the results go
(`layernas.detect.transfer`). Metrics come from `pycocotools.cocoeval.COCOeval` (bbox):
mAP@[.5:.95], AP50, AP75 and AP for COCO's small/medium/large areas (null when the val set has
no object of that size, where COCOeval reports -1).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from torch import nn

from layernas.detect.data import collate, quiet_stdout
from layernas.detect.recipe import TransferConfig

COCO_STATS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


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
