"""What one trial job runs, importing as little as possible: with ``evaluator: tabular`` a
trial is a lookup, so Python start-up and imports are most of its cost, and a 1,000-trial
search starts 1,000 of these (pandas alone takes ~0.5 s to import; it is not imported here
unless the oracle is a table file)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from layernas.space import load_space, parse_arch
from layernas.store import atomic_write_json, atomic_write_text, config_hash, trial_key


def train_hash(config: dict, space=None) -> str:
    """Hash of whatever decides a trial's result besides space, arch and seed."""
    if config["evaluator"] == "tabular":
        from layernas.oracle import oracle_id

        return config_hash({"evaluator": "tabular", "oracle": oracle_id(str(config["oracle"]))})
    return config_hash({"evaluator": "train", "train": config["train"]})


def run_trial_job(config: dict, arch: str, key: str, out_dir: str | Path, threads: int = 1) -> dict:
    """Evaluate one child and record it under ``out_dir``; returns its metrics."""
    space = load_space(config["space"])
    seed = int(config.get("seed", 0))
    expected = trial_key(space.space_id, arch, train_hash(config, space), seed)
    if expected != key:
        raise ValueError(f"trial key {key} does not match arch {arch} under this config (expected {expected})")
    if config["evaluator"] == "tabular":
        return evaluate_tabular(config, space, arch, key, out_dir, seed)
    from layernas.store import run_trial

    return run_trial(space, arch, config["train"], seed, out_dir, threads=threads)


def evaluate_tabular(config: dict, space, arch: str, key: str, out_dir: str | Path, seed: int) -> dict:
    """A table lookup recorded like a trained trial, so every later stage reads one format.
    A failed lookup is a failed trial (status failed + error), not a failed workflow."""
    from layernas import __version__
    from layernas.oracle import load_oracle

    t0 = time.time()
    trial = {"key": key, "space": space.name, "space_id": space.space_id, "arch": arch,
             "evaluator": "tabular", "oracle": str(config["oracle"]), "seed": seed}
    try:
        acc = load_oracle(str(config["oracle"]), space)([parse_arch(arch, space)])[0]
        if acc is None or not math.isfinite(acc):
            raise ValueError(f"oracle returned {acc!r}")
        metrics = {"status": "ok", "accuracy": float(acc), "error": None}
    except Exception as exc:
        metrics = {"status": "failed", "accuracy": None, "error": f"{type(exc).__name__}: {exc}"}
    metrics.update({"key": key, "arch": arch, "wall_seconds": time.time() - t0, "device": "none",
                    "versions": {"layernas": __version__}})
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "trial.json", trial)
    atomic_write_text(out_dir / "log.txt", f"tabular lookup of {arch}: {metrics['status']}\n")
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means finished
    return metrics
