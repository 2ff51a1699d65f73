"""The transfer recipe: every setting of a detection transfer run (config ``transfer.recipe``).

Its own module, without torch, because the workflow's config check (`layernas.workflow.config`)
validates the recipe before any job runs and must not import torch to do it; the detector code
(`layernas.detect.ssdlite`, `layernas.detect.train_eval`) and the run (`layernas.detect.transfer`)
all read their settings from this one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layernas.evaluate.recipe import strict_fields


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
        optional = ("max_train_images", "max_val_images", "threads")  # null allowed
        for name in ("canvas", "extra_channels", "epochs", "batch_size", "detections_per_img", *optional):
            v = getattr(self, name)
            if v is None and name in optional:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                null = " or null" if name in optional else ""
                raise ValueError(f"transfer {name} must be a positive integer{null}, got {v!r}")
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
