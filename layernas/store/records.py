"""Trial keys and atomic writes: the on-disk contract every stage relies on.

A trial is keyed by its content (space id + version, arch, training-config hash, seed), never
by its position in the search, so an interrupted search, a repeated layer sweep or a second
search with another target reuses every finished trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def config_hash(cfg: Any) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trial_key(space_id: str, arch: str, train_hash: str, seed: int) -> str:
    """Short content hash naming ``results/trials/<key>/``."""
    blob = f"{space_id}|{arch}|{train_hash}|{int(seed)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory + fsync + rename: readers see the old
    file or the whole new one, never a half-written one (also after SIGKILL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: str | Path, df) -> None:
    """Parquet through a temp file + rename (pandas writes in place otherwise)."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- trial records

TRIAL_FILES = ("trial.json", "metrics.json", "log.txt")


def is_finished(trial_dir: str | Path) -> bool:
    """A trial is finished when its metrics.json exists: it is written last and atomically,
    so a directory without it (killed mid-trial) is unfinished and gets redone."""
    return (Path(trial_dir) / "metrics.json").exists()


def read_metrics(trial_dir: str | Path) -> dict:
    return json.loads((Path(trial_dir) / "metrics.json").read_text())


def _versions() -> dict:
    import platform

    import torch

    from layernas import __version__

    return {"layernas": __version__, "torch": torch.__version__, "python": platform.python_version()}


def run_trial(space, arch, train_cfg: dict | None, seed: int, out_dir: str | Path, threads: int | None = None,
              fail_with: str | None = None) -> dict:
    """Train and evaluate one arch; record it under ``out_dir``; return its metrics.

    Never raises for a bad trial: an invalid arch, a crash, out-of-memory or a NaN loss gives
    ``status: failed`` with the error, recorded on disk like a success (so it is not retried
    unless asked). A finished trial is never overwritten: its metrics are returned as they are.
    ``fail_with`` injects a failure ("nan" or "crash") for tests of that path.
    """
    import time
    import traceback

    out_dir = Path(out_dir)
    if is_finished(out_dir):
        return read_metrics(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from layernas.space import format_arch, parse_arch
    from layernas.train import TrainConfig
    from layernas.trialjob import train_hash  # here: trialjob imports this module

    arch_str = arch if isinstance(arch, str) else format_arch(arch)
    cfg_raw = dict(train_cfg or {})
    t0 = time.time()
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(f"[{time.time() - t0:8.2f}s] {msg}")

    trial = {"space": space.name, "space_id": space.space_id, "arch": arch_str, "seed": int(seed),
             "train": cfg_raw, "train_hash": train_hash({"evaluator": "train", "train": cfg_raw})}
    atomic_write_json(out_dir / "trial.json", trial)
    metrics: dict[str, Any] = {"arch": arch_str, "seed": int(seed)}
    try:
        cfg = TrainConfig.from_dict({**cfg_raw, **({"threads": threads} if threads and not cfg_raw.get("threads") else {})})
        arch_t = parse_arch(arch_str, space)
        from layernas.cost import cost_of
        from layernas.data import load_dataset
        from layernas.models import build_model
        from layernas.train import train_model

        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.max_train_samples)
        import torch

        torch.manual_seed(int(seed))  # the weight init is part of the trial: same seed, same model
        model = build_model(space, arch_t, num_classes=data.num_classes, input_size=data.input_size,
                            input_channels=data.input_channels)
        c = cost_of(space, [arch_t], input_size=data.input_size, num_classes=data.num_classes,
                    input_channels=data.input_channels)
        metrics.update(madds=int(c["madds"][0]), params=int(c["params"][0]))
        log(f"{space.name} {arch_str}: {metrics['madds'] / 1e6:.2f}M MAdds, {len(data.train)} train images")
        if fail_with == "crash":
            raise RuntimeError("injected crash")
        if fail_with == "nan":
            with torch_no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        res = train_model(model, data, cfg, int(seed), log=log)
        metrics.update(res)
        metrics.update(status="ok", accuracy=res["val_accuracy"], error=None)
        if cfg.save_weights:
            import io

            import torch

            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            atomic_write_bytes(out_dir / "model.pt", buf.getvalue())
    except Exception as exc:  # noqa: BLE001 - every failure of one trial is data, not a crash
        kind = "out of memory" if "out of memory" in str(exc).lower() else type(exc).__name__
        metrics.update(status="failed", accuracy=None, error=f"{kind}: {exc}")
        log("FAILED\n" + traceback.format_exc())
    now = time.time()
    metrics.update(wall_seconds=now - t0, finished_at=now, versions=_versions())
    metrics.setdefault("device", "unknown")
    atomic_write_text(out_dir / "log.txt", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means finished
    return metrics


def torch_no_grad():
    import torch

    return torch.no_grad()
