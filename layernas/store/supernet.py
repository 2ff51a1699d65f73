"""The trained supernet of a run (``evaluator: supernet``) as the rest of the store sees it: its
record ``supernet/{skey}/metrics.json``, and the checkpoint's content hash that record holds.

Torch-free: the controller keys every evaluation by that hash (``keys.train_hash``), the audit
checks records against it and ``layernas status`` shows it, none of them loading the weights.
The checkpoint itself is written and read by ``layernas.evaluate.supernet_train``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from layernas.core.status import Status
from layernas.store.layout import Layout

# The arch field of a supernet's finished.json (read_finished_record matches key and arch).
SUPERNET_ARCH = "supernet"


class SupernetMissing(ValueError):
    """No usable supernet record where the run expects one (not trained yet, or damaged)."""


def read_supernet_record(layout: Layout, skey: str) -> dict:
    """The supernet's metrics.json: status ok and the checkpoint's content ``hash``. A
    SupernetMissing naming the path and what to do when it is absent or unusable."""
    path = layout.supernet_metrics(skey)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SupernetMissing(
            f"no trained supernet at {path}: the supernet rule writes it before the first "
            "stage; run the snakemake command"
        ) from None
    return _read(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int, size: int) -> dict:
    """Memoised on (path, mtime, size): the controller keys every child of every stage by it."""
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SupernetMissing(
            f"{path} is not readable ({exc}): a damaged supernet record; `layernas audit "
            "RESULTS --fix` deletes it, then the same command trains it again"
        ) from None
    if not isinstance(m, dict) or m.get("status") != Status.OK or not isinstance(m.get("hash"), str):
        raise SupernetMissing(
            f"{path} records no trained supernet (status {m.get('status') if isinstance(m, dict) else m!r}, "
            "no content hash); `layernas audit RESULTS --fix` deletes it, then the same command "
            "trains it again"
        )
    return m


def supernet_hash(layout: Layout, skey: str) -> str:
    """The content hash of the run's supernet checkpoint (what every evaluation key holds)."""
    return str(read_supernet_record(layout, skey)["hash"])


def supernet_state(layout: Layout, skey: str | None = None) -> dict | None:
    """What ``layernas status`` shows of a supernet search's supernet: ``trained`` (its hash,
    seconds, device, steps), or ``training`` (its directory without metrics.json: a job is
    training it, or one was killed), with its path; None when there is none. ``skey``: the
    search's (search.json); without it, the most recently changed supernet directory."""
    root = layout.supernet_root
    if skey is None:
        dirs = (
            [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
        )
        if not dirs:
            return None
        skey = max(dirs, key=lambda p: p.stat().st_mtime).name
    path = layout.supernet_dir(skey)
    if not path.is_dir():
        return None
    out = {"key": skey, "path": str(path), "checkpoint": str(layout.supernet_checkpoint(skey))}
    try:
        inputs = json.loads((path / "trial.json").read_text())
        out["space"] = inputs.get("space") if isinstance(inputs, dict) else None
    except (OSError, ValueError):
        pass
    try:
        m = read_supernet_record(layout, skey)
    except SupernetMissing:
        return {**out, "state": "training", "since": path.stat().st_mtime}
    return {
        **out,
        "state": "trained",
        "hash": m.get("hash"),
        "train_seconds": m.get("train_seconds"),
        "device": m.get("device"),
        "steps": m.get("steps"),
    }
