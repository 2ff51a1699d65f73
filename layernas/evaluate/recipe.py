"""Torch-free recipe dataclasses (proxy training, final retraining) and the one strict
``from_dict`` every config dataclass uses, so the workflow's controller validates a config
without importing torch. Which of their fields a key hashes is decided in
``layernas.store.keys`` (NOT_HASHED)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from layernas.evaluate.sources import DATASETS
from layernas.store.keys import FINAL_SELECTION, NOT_HASHED

OPTIMIZERS = ("sgd", "rmsprop")


def strict_fields(cls, raw: dict | None, section: str) -> dict:
    """``raw`` as keyword arguments of dataclass ``cls`` (a copy); a ValueError naming the
    section and every unknown field, so a typo in a config is never silently ignored."""
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {unknown}; known: {sorted(known)}")
    return raw


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_fraction: float = 0.1
    max_train_samples: int | None = None
    batch_size: int = 128
    epochs: float = 1.0
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    eval_batch_size: int = 1024
    bn_recalibrate_samples: int = 2000
    device: str = "auto"
    threads: int | None = None
    save_weights: bool = False
    log_every: int = 50

    @classmethod
    def from_dict(cls, raw: dict | None) -> "TrainConfig":
        cfg = cls(**strict_fields(cls, raw, "train"))
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"train.dataset: must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"train.{name}: must be a positive integer, got {v!r}")
        for name in ("epochs", "lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"train.{name}: must be > 0, got {v!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device: must be auto, cpu or cuda, got {self.device!r}")

    def hashed(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in NOT_HASHED}


def validate_train_config(raw: dict | None) -> TrainConfig:
    return TrainConfig.from_dict(raw)


PAPER_LR, PAPER_BATCH = 2.64, 4096


@dataclass(frozen=True)
class FinalConfig:
    epochs: float = 2.0
    batch_size: int = 128
    base_lr: float = PAPER_LR  # at PAPER_BATCH; scaled linearly to batch_size
    warmup_fraction: float = 0.025
    weight_decay: float = 1e-5  # ours: the paper's recipe names no weight decay
    ema_decay: float | None = 0.999  # ours: the paper mentions no EMA
    max_train_samples: int | None = None

    @classmethod
    def from_dict(cls, raw: dict | None) -> "FinalConfig":
        raw = {k: v for k, v in (raw or {}).items() if k not in FINAL_SELECTION}
        cfg = cls(**strict_fields(cls, raw, "final"))
        if cfg.epochs <= 0 or cfg.batch_size <= 0:
            raise ValueError("final.epochs and final.batch_size must be > 0")
        return cfg

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / PAPER_BATCH
