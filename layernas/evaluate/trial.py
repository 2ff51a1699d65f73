"""What one trial job runs, importing as little as possible: with ``evaluator: tabular`` a
trial is a lookup, so Python start-up and imports are most of its cost, and a 1,000-trial
search starts 1,000 of these (pandas alone takes ~0.5 s to import; it is not imported here
unless the oracle is a table file)."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path

from layernas.space import load_space, parse_arch
from layernas.store import atomic_write_json, atomic_write_text, config_hash, trial_key

# Fields of the train section that do not change a trial's result: left out of the key, so
# moving a run to a GPU or changing its thread count reuses every finished trial.
NOT_HASHED = ("device", "threads", "save_weights", "log_every")
# Bumped when the trainer changes results for the same settings (2: BN recalibration before
# evaluation), so old trial records are not reused as if they were new ones.
TRAINER_VERSION = 2


def train_hash(config: dict, space=None) -> str:
    """Hash of whatever decides a trial's result besides space, arch and seed."""
    if config["evaluator"] == "tabular":
        from layernas.oracle import oracle_id

        return config_hash({"evaluator": "tabular", "oracle": oracle_id(str(config["oracle"]))})
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in NOT_HASHED}
    return config_hash({"evaluator": "train", "trainer": TRAINER_VERSION, "train": train})


def run_trial_job(config: dict, arch: str, key: str, out_dir: str | Path, threads: int = 1) -> dict:
    """Evaluate one child and record it under ``out_dir``; returns its metrics."""
    space = load_space(config["space"])
    seed = int(config.get("seed", 0))
    expected = trial_key(space.space_id, arch, train_hash(config, space), seed)
    if expected != key:
        raise ValueError(f"trial key {key} does not match arch {arch} under this config (expected {expected})")
    out_dir = Path(out_dir)
    restored = restore_finished(out_dir, key, arch)
    if restored is not None:
        return restored
    with time_limit(config.get("trial_timeout")):
        if config["evaluator"] == "tabular":
            m = evaluate_tabular(config, space, arch, key, out_dir, seed)
        else:
            from layernas.store import run_trial

            m = run_trial(space, arch, config["train"], seed, out_dir, threads=threads)
    atomic_write_json(out_dir / RECORD, {"key": key, "arch": arch, "metrics": m})
    return m


# A second copy of a finished trial's metrics. Snakemake deletes a job's declared output
# (metrics.json) before rerunning a job it saw start but not finish: after a SIGKILL that
# lands between the trial writing metrics.json and Snakemake recording the job as done,
# `--rerun-incomplete` would train the trial again. The copy is not a declared output, so it
# survives, and the rerun restores metrics.json from it instead of training.
RECORD = "finished.json"


def restore_finished(out_dir: Path, key: str, arch: str) -> dict | None:
    """metrics.json rewritten from ``finished.json`` when that holds this key's result."""
    import json

    try:
        rec = json.loads((out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key or rec.get("arch") != arch \
            or not isinstance(rec.get("metrics"), dict):
        return None
    atomic_write_json(out_dir / "metrics.json", rec["metrics"])
    return rec["metrics"]


class TrialTimeout(Exception):
    """Raised inside a trial that ran past ``trial_timeout``; recorded as a failed trial."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """SIGALRM after ``seconds`` raises TrialTimeout in the trial, which records it as failed
    like any other error, so the search goes on (a cluster's walltime kill, by contrast, fails
    the job and Snakemake's retry applies). No limit when None or off the main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise TrialTimeout(f"trial ran past trial_timeout = {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


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
    now = time.time()
    metrics.update({"key": key, "arch": arch, "wall_seconds": now - t0, "finished_at": now, "device": "none",
                    "versions": {"layernas": __version__}})
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "trial.json", trial)
    atomic_write_text(out_dir / "log.txt", f"tabular lookup of {arch}: {metrics['status']}\n")
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means finished
    return metrics
