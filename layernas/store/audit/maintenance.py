"""Changing a results directory on request: ``fix`` (what ``layernas audit --fix`` deletes),
``clean_weights`` (trial weights no search step can use any more), ``retry_failed`` (set
failed trials aside) and ``disk_usage`` (where the bytes go, also for ``layernas status``).
See docs/audit.md."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

from layernas.core.status import Action, Status
from layernas.store.audit.problems import Problem
from layernas.store.audit.scan import Scan, current_stages, no_search, read_json, scan_tables, search_keys
from layernas.store.layout import KEYED_AREAS, LOCK, METRICS, WEIGHTS, Layout


def fix(s: Scan, problems: list[Problem]) -> list[str]:
    """Delete the fixable directories (partial, corrupt or misnamed per-key directories):
    Snakemake then sees their metrics.json missing and redoes them. Nothing else is touched:
    on a shared store no trial this search does not name (another search's, maybe running),
    and nowhere a trial a job is evaluating right now (it holds the key's lock)."""
    removed = []
    roots = {s.layout.area(a).resolve() for a in KEYED_AREAS} | {s.layout.supernet_root.resolve()}
    store = s.layout.trials_dir.resolve()
    for p in problems:
        path = Path(p.path)
        if not p.fixable or not path.is_dir() or path.resolve().parent not in roots:
            continue
        if path.resolve().parent == store and (
                (s.trial_keys is not None and path.name not in s.trial_keys) or locked(path)):
            continue
        shutil.rmtree(path)
        removed.append(p.path)
    return removed


def locked(trial_dir: Path) -> bool:
    """Whether a trial job holds ``trial_dir``'s lock now, i.e. is evaluating that key
    (layernas.evaluate.trial.key_lock). Taking the lock for a moment to test it blocks no one."""
    try:
        fd = os.open(trial_dir / LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def this_search(layout: Layout) -> set[str] | None:
    """The trial keys this search's tables name when its trials live in a shared store (the only
    ones it may count, move or delete there); None for its own store (every directory is its)."""
    return search_keys(scan_tables(layout, [])) if layout.shared_store else None


# --------------------------------------------------------------------------- weights


def selectable_keys(results: str | Path) -> set[str]:
    """Trial keys a search may still use: rows of the latest bucket table of every layer (the
    memorial tables; future sweeps expand only these), the top models, and the keys requested
    by stages not aggregated yet. Raises ValueError when a table it needs cannot be read, since
    guessing would delete weights that are still wanted."""
    layout = Layout.of_results(results)
    if not layout.search_dir.is_dir():
        raise no_search(layout)
    problems: list[Problem] = []
    t = scan_tables(layout, problems)
    if t.unreadable:
        raise ValueError(f"cannot tell which weights are still selectable: {problems[0].message} "
                         f"({problems[0].path}); run layernas audit first")
    stages, ended = current_stages(t)
    latest: dict[int, int] = {}  # layer -> sweep of its latest table
    for (r, l), names in t.stage_files.items():
        if "buckets" in names and (not ended or (r, l) in stages):
            latest[l] = max(latest.get(l, -1), r)
    if not latest:
        raise ValueError(f"{layout.root} has no bucket table yet: nothing tells which weights are selectable")
    keep: set[str] = set()
    for l, r in latest.items():
        keep |= set(t.frame(layout.buckets(r, l))["key"].astype(str))
    for path in (layout.tables, layout.top):
        df = t.frame(path)
        if df is not None:
            keep |= set(df["key"].astype(str))
    for (r, l), names in t.stage_files.items():
        kids = t.frame(layout.children(r, l))
        if "buckets" not in names and kids is not None:
            keep |= set(kids.loc[kids["action"] == Action.EVALUATE, "key"].astype(str))
    return keep


def clean_weights(results: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Remove ``trials/*/model.pt`` of trials no search step can select any more (see
    ``selectable_keys``). Metrics stay, so every trial is still reused by key; final models
    (final/*/model.pt) are never touched. Returns the files and bytes (to be) freed."""
    layout = Layout.of_results(results)
    if layout.shared_store:
        raise ValueError(
            f"clean-weights: {layout.root} keeps its trials in the shared trial store {layout.trials_dir} (the "
            "config's `trials:`), where other searches may still select weights this one no longer needs, and "
            "no results directory knows the others; nothing removed. Run clean-weights on a results directory "
            "with its own trial store (no `trials:` in its config)")
    keep = selectable_keys(results)
    files, kept = [], 0
    root = layout.area("trials")
    for weights in sorted(root.glob(f"*/{WEIGHTS}")) if root.is_dir() else []:
        if weights.parent.name in keep:
            kept += 1
            continue
        size = weights.stat().st_size
        if not dry_run:
            weights.unlink()
        files.append({"path": str(weights), "bytes": size})
    return {"results": str(layout.root), "dry_run": dry_run, "removed": files, "kept": kept,
            "bytes_freed": sum(f["bytes"] for f in files)}


# --------------------------------------------------------------------------- disk


def _tree_bytes(path: Path, weights: list[int] | None = None) -> int:
    """Bytes of the files under ``path`` (os.scandir: no stat of directories twice). When
    ``weights`` is given, bytes of ``*.pt`` files are added to weights[0] instead."""
    total = 0
    try:
        it = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                total += _tree_bytes(e.path, weights)
            elif e.is_file(follow_symlinks=False):
                size = e.stat(follow_symlinks=False).st_size
                if weights is not None and e.name.endswith(".pt"):
                    weights[0] += size
                else:
                    total += size
    return total


def disk_usage(results_dir: str | Path) -> dict[str, Any]:
    """Bytes by area, so `layernas status` can say where the space goes and whether
    `layernas clean-weights` is worth running: trials_weights (trials/*/*.pt), trials_other,
    search, final, transfer, supernet, other (logs, benchmarks, report) and total. With a shared trial
    store the trial bytes are those of this search's keys in it, counted in the total too, and
    ``trials_store`` names the store."""
    layout = Layout.of_results(results_dir)
    weights = [0]
    keys = this_search(layout) if layout.search_dir.is_dir() else None
    if keys is None:
        trials = _tree_bytes(layout.area("trials"), weights)
    else:
        trials = sum(_tree_bytes(layout.trial_dir(k), weights) for k in keys)
    out: dict[str, Any] = {"trials_weights": weights[0], "trials_other": trials}
    out["search"] = _tree_bytes(layout.search_dir)
    for area in ("final", "transfer"):
        out[area] = _tree_bytes(layout.area(area))
    out["supernet"] = _tree_bytes(layout.supernet_root)  # evaluator supernet: the checkpoint(s)
    store = (out["trials_weights"] + out["trials_other"]) if layout.shared_store else 0
    out["total"] = _tree_bytes(layout.root) + store
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")
    if layout.shared_store:
        out["trials_store"] = str(layout.trials_dir)
    return out


# --------------------------------------------------------------------------- failed trials


def retry_failed(results_dir: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Move every failed trial's directory to ``failed/{key}.{n}/`` so the next run of the
    same snakemake command evaluates those children again (docs/audit.md).
    Failed trials are results, not errors, and are never retried on their own; this is the
    explicit way to ask. The old records are kept, not deleted, so the first error stays on disk.
    With a shared trial store only this search's failed keys move (to this results directory's
    failed/); another search naming one of them finds it missing and evaluates it again too."""
    layout = Layout.of_results(results_dir)
    trials = layout.area("trials")
    if not trials.is_dir():
        raise ValueError(f"{layout.root} has no trials/ directory (is it a results directory?)" if not
                         layout.shared_store else f"the trial store {trials} of {layout.root} does not exist")
    keys = this_search(layout)
    moved = []
    for d in sorted(p for p in trials.iterdir() if p.is_dir() and (keys is None or p.name in keys)):
        m, _ = read_json(d / METRICS)
        if not isinstance(m, dict) or m.get("status") == Status.OK:  # partial/corrupted: audit --fix
            continue
        n = 0
        while layout.failed_dir(d.name, n).exists():
            n += 1
        dest = layout.failed_dir(d.name, n)
        moved.append({"key": d.name, "arch": m.get("arch"), "error": m.get("error"), "moved_to": str(dest)})
        if not dry_run:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(d, dest)  # a shared store may be on another file system
    return {"results": str(layout.root), "moved": moved, "dry_run": dry_run}
