"""Torch-free recipe dataclasses (proxy training, final retraining) and the one strict
``from_dict`` every config dataclass uses, so the workflow's controller validates a config
without importing torch. Which of their fields a key hashes is decided in
``layernas.store.keys`` (NOT_HASHED)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from layernas.evaluate.sources import DATASETS
from layernas.store.keys import FINAL_SELECTION, NOT_HASHED, RECAL_SAMPLES, SUPERNET_EVAL

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
    # 128, not 1024: evaluating 1,800 28x28 images on one CPU thread took 2.3-2.8 s at 1024 and
    # 0.8-1.0 s at 32-128 (activations out of cache; 2-core VM, 2026-11-29). Not hashed when unset.
    eval_batch_size: int = 128
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


@dataclass(frozen=True)
class SupernetConfig:
    """The supernet training recipe (the proxy recipe's fields where they mean the same).
    Torch-free, like TrainConfig, so the workflow's config check validates it without torch;
    the trainer is ``layernas.evaluate.supernet_train``."""

    # Defaults measured on mobilenet-tiny with the default proxy recipe (docs/supernet.md):
    # 2 epochs with distillation ranked children best of the settings tried.
    epochs: float = 2.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    sandwich: bool = True  # largest + smallest child every step
    random_children: int = 2  # uniformly drawn children per step
    distill: bool = True  # in-place distillation from the largest child (needs sandwich)
    grad_clip: float | None = None
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50

    @classmethod
    def from_dict(cls, raw: dict | None) -> "SupernetConfig":
        """The recipe of a ``supernet:`` section; its evaluation fields (SUPERNET_EVAL, e.g.
        ``recal_samples``) are not training settings and are left out. A ValueError naming
        the field and value for a bad one."""
        raw = {k: v for k, v in (raw or {}).items() if k not in SUPERNET_EVAL}
        cfg = cls(**strict_fields(cls, raw, "supernet"))
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"supernet.optimizer: must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("epochs", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"supernet.{name}: must be > 0, got {v!r}")
        for name in ("batch_size", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"supernet.{name}: must be a positive integer, got {v!r}")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"supernet.{name}: must be a number >= 0, got {v!r}")
        if isinstance(self.label_smoothing, bool) or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"supernet.label_smoothing: must be in [0, 1), got {self.label_smoothing!r}")
        v = self.random_children
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"supernet.random_children: must be an integer >= 0, got {v!r}")
        for name in ("sandwich", "distill"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"supernet.{name}: must be true or false, got {getattr(self, name)!r}")
        if v == 0 and not self.sandwich:
            raise ValueError("supernet.random_children: a step needs children (sandwich or random_children > 0), got 0 "
                             "with sandwich false")
        if self.distill and not self.sandwich:
            raise ValueError("supernet.distill: needs sandwich (the largest child is the teacher), got true with "
                             "sandwich false")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float))
                                           or self.grad_clip <= 0):
            raise ValueError(f"supernet.grad_clip: must be null or > 0, got {self.grad_clip!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"supernet.device: must be auto, cpu or cuda, got {self.device!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"supernet.threads: must be null or an integer >= 1, got {self.threads!r}")


def supernet_recal_samples(raw: dict | None) -> int:
    """The training images each child's BatchNorm statistics are recalibrated on before it is
    evaluated (``supernet.recal_samples``, default RECAL_SAMPLES; 0: the supernet's shared statistics)."""
    v = (raw or {}).get("recal_samples", RECAL_SAMPLES)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"supernet.recal_samples: must be an integer >= 0, got {v!r}")
    return v
