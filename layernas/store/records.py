"""One way to record a run (a trial, a final retraining): inputs first, then the log, then
metrics.json last and atomically, so a directory without metrics.json is unfinished (killed
mid-run) and is redone, while a finished one is never overwritten.

Which exceptions are a result and which are a bug is decided here too. A model that gives
NaN, runs out of memory, times out or crashes inside training is a failed run, recorded like
a success and not retried unless asked. An error of the code itself (an import that fails, a
misspelt name or attribute, a call with the wrong arguments) is re-raised: the job fails
loudly instead of every trial quietly becoming "failed" while the search "succeeds".
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layernas import __version__
from layernas.core.status import Status
from layernas.store.files import atomic_write_json, atomic_write_text
from layernas.store.layout import INPUTS, LOG, METRICS, RECORD

# metrics.json field: the sha256 of every file the run wrote before it (inputs, log, weights,
# preprocessing...); finished.json lists metrics.json's own. `layernas audit` checks them.
ARTIFACTS = "artifacts"

# Errors of the code, not of the evaluated model: never recorded as a failed run.
PROGRAMMING_ERRORS = (ImportError, NameError, AttributeError, TypeError, SyntaxError, AssertionError)


def is_finished(run_dir: str | Path) -> bool:
    """A run is finished when its metrics.json exists (written last, atomically)."""
    return (Path(run_dir) / METRICS).exists()


def read_metrics(path: str | Path) -> dict:
    """metrics.json of a run directory, or of the file itself when ``path`` is one."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    return json.loads(path.read_text())


def write_finished_record(run_dir: str | Path, key: str, arch: str, metrics: dict) -> None:
    """The second copy of a finished trial's metrics (``finished.json``), from which a rerun
    restores a metrics.json that went missing; it also lists metrics.json's sha256."""
    run_dir = Path(run_dir)
    rec = {"key": key, "arch": arch, "metrics": metrics}
    if (run_dir / METRICS).is_file():
        rec[ARTIFACTS] = {METRICS: sha256_file(run_dir / METRICS)}
    atomic_write_json(run_dir / RECORD, rec)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_digests(run_dir: str | Path) -> dict[str, str]:
    """sha256 of every file of a run directory but its metrics.json and finished.json (and
    hidden files: the lock, temporary files of atomic writes)."""
    with os.scandir(run_dir) as it:
        names = sorted(e.name for e in it if e.is_file() and not e.name.startswith(".") and e.name not in (METRICS, RECORD))
    return {name: sha256_file(Path(run_dir) / name) for name in names}


def changed_artifacts(run_dir: str | Path, metrics: dict, names=None) -> list[str]:
    """The files of a finished run whose sha256 differs from the one its record lists (the
    ``artifacts`` of metrics.json, metrics.json's own in finished.json): changed after the run
    wrote them. A listed file that is gone is not one (clean-weights removes weights); a record
    written before records listed digests has nothing to check."""
    run_dir = Path(run_dir)
    names = set(os.listdir(run_dir)) if names is None else set(names)
    listed = dict(metrics.get(ARTIFACTS) or {}) if isinstance(metrics, dict) else {}
    if RECORD in names:
        try:
            rec = json.loads((run_dir / RECORD).read_text())
            listed.update(rec.get(ARTIFACTS) or {})
        except (OSError, ValueError, AttributeError):
            pass
    return sorted(n for n, digest in listed.items() if n in names and sha256_file(run_dir / n) != digest)


def read_finished_record(run_dir: str | Path, key: str, arch: str | None = None) -> dict | None:
    """The metrics ``finished.json`` holds for ``key`` (and ``arch`` when given); None when
    it is missing, unreadable or of another key."""
    try:
        rec = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key or not isinstance(rec.get("metrics"), dict):
        return None
    if arch is not None and rec.get("arch") != arch:
        return None
    return rec["metrics"]


def metrics_accuracy(metrics: dict) -> float:
    """The proxy metric of a finished trial: validation accuracy, nan when it failed."""
    if metrics.get("status") != Status.OK:
        return float("nan")
    for name in ("accuracy", "val_accuracy", "val_acc"):
        if metrics.get(name) is not None:
            return float(metrics[name])
    return float("nan")


def versions(torch: bool = True) -> dict:
    """Library versions recorded with every run (torch only where it was used)."""
    out = {"layernas": __version__, "python": platform.python_version()}
    if torch:
        import torch as _torch

        out["torch"] = _torch.__version__
    return out


def failure_message(exc: BaseException) -> str:
    kind = "out of memory" if "out of memory" in str(exc).lower() else type(exc).__name__
    return f"{kind}: {exc}"


class Recorder:
    """Writes one run directory: ``inputs`` now, log lines and metrics at ``finish``."""

    def __init__(self, out_dir: str | Path, inputs: dict):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.lines: list[str] = []
        atomic_write_json(self.out_dir / INPUTS, inputs)

    def log(self, msg: str) -> None:
        self.lines.append(f"[{time.time() - self.t0:8.2f}s] {msg}")

    def finish(self, metrics: dict, torch: bool = True) -> dict:
        now = time.time()
        metrics.update(wall_seconds=now - self.t0, finished_at=now, versions=versions(torch))
        atomic_write_text(self.out_dir / LOG, "\n".join(self.lines) + "\n")
        metrics[ARTIFACTS] = artifact_digests(self.out_dir)  # inputs, log, weights, ...: as written
        atomic_write_json(self.out_dir / METRICS, metrics)  # last: its presence means finished
        return metrics


def record_run(out_dir: str | Path, inputs: dict, metrics: dict, body: Callable[[dict, Callable[[str], None]], Any],
               torch: bool = True, on_failure: dict | None = None) -> dict:
    """Run ``body(metrics, log)`` and record it under ``out_dir``; return the metrics.

    A finished run is returned as it is. ``body`` fills ``metrics`` (status ok is set when it
    returns); a failure of the model is recorded as ``status: failed`` with the error (and the
    fields of ``on_failure``, e.g. ``accuracy: None``); a
    programming error (PROGRAMMING_ERRORS) is logged and re-raised, leaving the run unfinished."""
    out_dir = Path(out_dir)
    if is_finished(out_dir):
        return read_metrics(out_dir)
    rec = Recorder(out_dir, inputs)
    try:
        body(metrics, rec.log)
        metrics.setdefault("status", Status.OK)
        metrics.setdefault("error", None)
    except PROGRAMMING_ERRORS:
        rec.log("ERROR in the code (not a failed trial)\n" + traceback.format_exc())
        atomic_write_text(out_dir / LOG, "\n".join(rec.lines) + "\n")
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure of one model is data
        metrics.update(status=Status.FAILED, error=failure_message(exc), **(on_failure or {}))
        rec.log("FAILED\n" + traceback.format_exc())
    return rec.finish(metrics, torch=torch)
