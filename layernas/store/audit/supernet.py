"""The audit of a supernet search (``evaluator: supernet``): its supernet is an artifact like a
trial, and every evaluation the tables name must be of that supernet.

- ``supernet/{skey}/`` of the run (search.json's ``supernet.key``): unfinished (no metrics.json),
  unreadable, a file whose sha256 differs from the one its metrics.json lists (``checksum``), a
  checkpoint that is gone (``missing-checkpoint``) or that does not load or hash to its recorded
  content hash (``corrupt``: the caller's ``load``, e.g. ``load_supernet``'s check, which needs
  torch; the store does not import it);
- the checkpoint retrained or replaced after the stages keyed their evaluations by the old one
  (``supernet-changed``);
- evaluation records the tables name whose supernet hash is not the checkpoint's
  (``supernet-mismatch``);
- supernet directories of other settings (``orphan``, a warning).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from layernas.store.audit.problems import ERROR, FIX, RERUN_SAME, WARNING, Problem
from layernas.store.audit.scan import Scan, _scan_record
from layernas.store.layout import SUPERNET

# (checkpoint path, space) -> the checkpoint's content hash; a ValueError when it does not load
# or is corrupted (layernas.evaluate.supernet_job.checkpoint_hash).
LoadCheckpoint = Callable[[Path, object], str]

RETRAIN = f"delete it (layernas audit --fix does) and {RERUN_SAME}: it trains the supernet again"
CHANGED = (
    f"{RERUN_SAME}: every stage re-runs on this checkpoint and evaluates its children again under new keys "
    "(or restore the checkpoint the stages used, to keep their evaluations)"
)


def supernet_dirs(s: Scan) -> dict[str, Path]:
    """Every supernet directory of the results directory, by supernet key."""
    root = s.layout.supernet_root
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _space(s: Scan, space):
    from layernas.core.space import SpaceError, load_space

    try:
        sp = load_space(space or s.run.space_name)
    except (SpaceError, TypeError, ValueError, OSError):
        return None
    return sp if not s.run.space_id or sp.space_id == s.run.space_id else None


def check_supernet(
    s: Scan, referenced: set[str], problems: list[Problem], space=None, load: LoadCheckpoint | None = None
) -> int:
    """The checks above; returns how many supernet directories were read. ``referenced``: the
    trial keys the tables name; ``load``: the deep check of the checkpoint (None: skipped)."""
    dirs = supernet_dirs(s)
    info = s.run.supernet or {}
    skey = info.get("key")
    for name, path in dirs.items():
        if name != skey:
            problems.append(
                Problem(
                    str(path),
                    "orphan",
                    WARNING,
                    "a supernet of other settings (not this search's)",
                    "nothing needed: a search with those settings reuses it; delete it to free space",
                )
            )
    if s.run.evaluator != "supernet" or not skey:
        return len(dirs)
    path = s.layout.supernet_dir(skey)
    if path not in dirs.values():
        problems.append(
            Problem(
                str(path),
                "missing-supernet",
                ERROR,
                "the search's supernet is gone",
                f"{RERUN_SAME}: it trains the supernet again, and the stages re-run on it",
            )
        )
        return len(dirs)
    rec = _scan_record("supernet", path, problems)  # partial, corrupt, checksum: as a trial's record
    if rec.broken:
        return len(dirs)
    chash = str((rec.metrics or {}).get("hash"))
    ckpt = s.layout.supernet_checkpoint(skey)
    if not ckpt.is_file():
        problems.append(
            Problem(str(path), "missing-checkpoint", ERROR, f"{SUPERNET} is gone", RETRAIN, fixable=True)
        )
        return len(dirs)
    sp = _space(s, space) if load is not None else None
    if sp is not None:
        try:
            loaded = load(ckpt, sp)
        except ValueError as exc:
            problems.append(Problem(str(path), "corrupt", ERROR, str(exc), RETRAIN, fixable=True))
            return len(dirs)
        if loaded != chash:
            problems.append(
                Problem(
                    str(path),
                    "corrupt",
                    ERROR,
                    f"{SUPERNET} has content hash {loaded}, its metrics.json records {chash}",
                    RETRAIN,
                    fixable=True,
                )
            )
            return len(dirs)
    used = info.get("hash")
    if used and used != chash:
        problems.append(
            Problem(
                str(path),
                "supernet-changed",
                ERROR,
                f"the stages keyed their evaluations by "
                f"supernet {used}; the checkpoint is now {chash} (retrained or replaced since)",
                CHANGED,
            )
        )
        return len(dirs)
    for key in sorted(referenced):
        rec = s.records["trials"].get(key)
        if rec is None or rec.broken:
            continue
        recorded = (rec.metrics or {}).get("supernet") or (rec.inputs or {}).get("supernet")
        if recorded != chash:
            what = (
                f"supernet {recorded}"
                if recorded
                else f"no supernet (evaluator {(rec.metrics or {}).get('evaluator')})"
            )
            problems.append(
                Problem(
                    str(rec.path),
                    "supernet-mismatch",
                    ERROR,
                    f"evaluated with {what}, not the run's supernet {chash}",
                    FIX,
                    fixable=True,
                )
            )
    return len(dirs)
