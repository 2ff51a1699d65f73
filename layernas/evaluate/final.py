"""Final retraining of a found model with the paper's recipe, made configurable.

The paper retrains its best proxy models for 500 epochs with RMSProp (momentum 0.9), initial
lr 2.64 at batch 4096 (scaled linearly with the batch size here), 12.5 warm-up epochs (2.5%)
then cosine decay, and reports test accuracy. Defaults keep that shape at laptop scale; every
number is a config field (``final:`` in config.yaml).
"""

from __future__ import annotations

import io
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path

from layernas.store import (
    _versions,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_finished,
    read_metrics,
)

PAPER_LR, PAPER_BATCH = 2.64, 4096


@dataclass(frozen=True)
class FinalConfig:
    epochs: float = 2.0
    batch_size: int = 128
    base_lr: float = PAPER_LR  # at PAPER_BATCH; scaled linearly to batch_size
    warmup_fraction: float = 0.025
    weight_decay: float = 1e-5
    ema_decay: float | None = 0.999
    max_train_samples: int | None = None

    @classmethod
    def from_dict(cls, raw: dict | None) -> "FinalConfig":
        raw = {k: v for k, v in (raw or {}).items() if k not in ("activate", "top_n")}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"final config: unknown field(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**raw)
        if cfg.epochs <= 0 or cfg.batch_size <= 0:
            raise ValueError("final.epochs and final.batch_size must be > 0")
        return cfg

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / PAPER_BATCH


def run_final(space, arch: str, train_cfg: dict | None, final_cfg: dict | None, seed: int, out_dir: str | Path,
              threads: int | None = None) -> dict:
    """Retrain ``arch`` on the whole training split (train + val) and report test accuracy;
    saves weights (model.pt) for the transfer stage. Failures are recorded, not raised."""
    from dataclasses import replace

    import torch

    from layernas.data import Dataset, load_dataset
    from layernas.models import build_model
    from layernas.space import parse_arch
    from layernas.train import TrainConfig, train_model

    out_dir = Path(out_dir)
    if is_finished(out_dir):
        return read_metrics(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lines: list[str] = []
    metrics: dict = {"arch": arch, "seed": int(seed), "stage": "final"}
    try:
        fc = FinalConfig.from_dict(final_cfg)
        tc = TrainConfig.from_dict(train_cfg)
        tc = replace(tc, optimizer="rmsprop", momentum=0.9, epochs=fc.epochs, batch_size=fc.batch_size,
                     weight_decay=fc.weight_decay, max_train_samples=fc.max_train_samples,
                     threads=threads or tc.threads)
        atomic_write_json(out_dir / "trial.json", {"space": space.name, "space_id": space.space_id, "arch": arch,
                                                   "seed": int(seed), "train": tc.hashed(), "final": fc.__dict__})
        d = load_dataset(tc.dataset, tc.data_dir, tc.val_fraction, None)
        import torch as _t

        train_all = type(d.train)(_t.cat([d.train.images, d.val.images]), _t.cat([d.train.labels, d.val.labels]))
        if fc.max_train_samples:
            train_all = type(d.train)(train_all.images[: fc.max_train_samples], train_all.labels[: fc.max_train_samples])
        data = Dataset(d.name, train_all, d.val, d.test, d.num_classes)
        arch_t = parse_arch(arch, space)
        torch.manual_seed(int(seed))
        model = build_model(space, arch_t, num_classes=data.num_classes, input_size=data.input_size,
                            input_channels=data.input_channels)
        from layernas.cost import cost_of

        c = cost_of(space, [arch_t], input_size=data.input_size, num_classes=data.num_classes,
                    input_channels=data.input_channels)
        metrics.update(madds=int(c["madds"][0]), params=int(c["params"][0]), lr=fc.lr)
        res = train_model(model, data, tc, int(seed), log=lambda m: lines.append(m), lr=fc.lr,
                          warmup_epochs=fc.warmup_fraction * fc.epochs, ema_decay=fc.ema_decay, eval_split="test")
        metrics.update(res, status="ok", error=None)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(out_dir / "model.pt", buf.getvalue())
    except Exception as exc:  # noqa: BLE001
        metrics.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        lines.append(traceback.format_exc())
    metrics.update(wall_seconds=time.time() - t0, versions=_versions())
    atomic_write_text(out_dir / "log.txt", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
