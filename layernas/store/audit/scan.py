"""Reading a results directory for the audit: everything is read once (one pass over the
trial directories, one read of each Parquet table) and checked in memory by ``checks``.

Reading already reports what cannot be read: unreadable tables, partial records (no
metrics.json) and corrupted ones. Every path comes from ``layernas.store.layout``.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layernas.core.status import Action, Status
from layernas.store.audit.problems import ERROR, FIX, FIX_SAME, RERUN, Problem
from layernas.store.keys import trial_key
from layernas.store.layout import INPUTS, KEYED_AREAS, METRICS, STAGE_DIR, Layout
from layernas.store.records import changed_artifacts, metrics_accuracy

REQUIRED_COLUMNS = {
    "children": ("layer", "arch", "key", "cost", "action"),
    "buckets": ("layer", "bucket", "arch", "key", "cost", "accuracy"),
    "history": ("layer", "arch", "key", "cost", "status"),
    "tables": ("layer", "bucket", "arch", "key", "cost", "accuracy"),
    "top": ("arch", "key", "cost", "final_key"),
}
REQUESTED = [Action.EVALUATE, Action.CACHED]  # children rows that name a trial
EVALUATED_ROWS = [Status.OK, Status.FAILED, Status.CACHED]  # history rows that name a finished trial
RECORD_NAMES = {"trials": "trial", "final": "final retraining", "transfer": "transfer", "supernet": "supernet"}


# --------------------------------------------------------------------------- what was read


@dataclass(frozen=True)
class RunInfo:
    """What the run recorded about itself: enough to recompute trial keys and costs exactly
    as the workflow made them. ``search/search.json`` (rewritten by every children stage) has
    it all; older runs only have ``summary.json``, which lacks the training hash, seed and
    cost input size, so key and (for trained runs) cost checks are then skipped."""

    space_id: str | None = None
    space_name: str | None = None
    train_hash: str | None = None
    seed: int | None = None
    evaluator: str | None = None
    search: dict | None = None
    cost_kwargs: dict | None = None
    supernet: dict | None = None  # evaluator supernet: search.json's {key, hash, key_hash}

    def key(self, arch: str) -> str | None:
        """The workflow's trial key for ``arch`` (Context.key), or None when not recorded."""
        if self.space_id is None or self.train_hash is None or self.seed is None:
            return None
        return trial_key(self.space_id, arch, self.train_hash, self.seed)


@dataclass
class Record:
    """One per-key directory (trials/, final/ or transfer/) as found on disk."""

    area: str
    key: str
    path: Path
    names: frozenset[str]
    metrics: dict | None = None
    inputs: dict | None = None  # trial.json
    broken: bool = False  # partial or corrupted: reported once, skipped by later checks


@dataclass
class Tables:
    """The Parquet tables of a search. ``frames`` and the other maps are keyed by the path
    relative to the results directory ("search/r0/l1/buckets.parquet"), as problems name them."""

    layout: Layout
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # readable ones only
    kinds: dict[str, str] = field(default_factory=dict)  # rel -> children, buckets, history, tables, top
    stage_of: dict[str, tuple[int, int]] = field(default_factory=dict)  # rel -> (r, l) of a stage table
    stage_files: dict[tuple[int, int], set[str]] = field(default_factory=dict)  # kinds present, readable or not
    unreadable: set[str] = field(default_factory=set)

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.layout.root))

    def frame(self, path: Path) -> pd.DataFrame | None:
        """The table at ``path`` (a Layout path), None when absent or unreadable."""
        return self.frames.get(self.rel(path))


@dataclass
class Scan:
    """Everything the checks need, read once."""

    layout: Layout
    run: RunInfo
    summary: dict | None
    tables: Tables
    records: dict[str, dict[str, Record]]  # area -> key -> record
    trial_keys: set[str] | None = None  # on a shared store: this search's keys, the only ones read or fixed

    @property
    def results(self) -> Path:
        return self.layout.root


# --------------------------------------------------------------------------- paths


def stage_paths(layout: Layout, r: int, l: int) -> dict[str, Path]:
    """The tables one search stage writes, by kind."""
    return {"children": layout.children(r, l), "buckets": layout.buckets(r, l), "history": layout.history(r, l)}


def final_paths(layout: Layout) -> dict[str, Path]:
    """The tables written once the search has finished, by kind."""
    return {"history": layout.full_history, "tables": layout.tables, "top": layout.top}


def stage_tables(layout: Layout) -> list[tuple[int, int, str, Path]]:
    """(sweep, layer, kind, path) of every stage table on disk, in stage order."""
    out = []
    for path in layout.stage_files("*.parquet"):
        m = STAGE_DIR.fullmatch(path.parent.relative_to(layout.search_dir).as_posix())
        if not m:
            continue
        r, l = int(m[1]), int(m[2])
        kind = next((k for k, p in stage_paths(layout, r, l).items() if p == path), None)
        if kind is not None:
            out.append((r, l, kind, path))
    return sorted(out)


# --------------------------------------------------------------------------- reading


def read_json(path: Path) -> tuple[Any, str | None]:
    """(object, None) or (None, why it could not be read)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"


def read_run_info(layout: Layout, summary: dict | None, problems: list[Problem]) -> RunInfo:
    """RunInfo from search.json, else from summary.json (fewer fields)."""
    path = layout.search_meta
    meta, err = read_json(path)
    if err is None and isinstance(meta, dict):
        # A supernet search keys its evaluations by its checkpoint's hash (key_hash), not train_hash.
        sn = meta.get("supernet") if isinstance(meta.get("supernet"), dict) else None
        return RunInfo(meta.get("space"), meta.get("space_name"), (sn or {}).get("key_hash", meta.get("train_hash")),
                       None if meta.get("seed") is None else int(meta["seed"]), meta.get("evaluator"),
                       meta.get("search"), meta.get("cost") or {}, sn)
    if err != "missing":
        problems.append(Problem(str(path), "corrupt-table", ERROR, f"search metadata is {err or 'not a JSON object'}",
                                f"delete it and {RERUN} (every children stage rewrites it)"))
    if summary:
        t = summary.get("target") or [None, None]
        search = {"target_min": t[0], "target_max": t[1], "buckets": summary.get("buckets"),
                  "replicas": summary.get("replicas"), "per_sweep": summary.get("per_sweep"),
                  "metric": summary.get("metric", "madds")}
        return RunInfo(summary.get("space_id"), summary.get("space"), None, None, summary.get("evaluator"), search, None)
    return RunInfo()


def _read_table(path: Path, kind: str, stage: tuple[int, int] | None = None) -> tuple[pd.DataFrame | None, str | None]:
    """The table, or why it is unusable. A stage's history (``stage`` given) is read whole but
    converted on the rows its stage added (the others are the earlier stages' own): checking every
    history is then linear in the search, not quadratic (10,000 trials: 5.8M history rows, 20k new)."""
    try:
        if stage is not None:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
            own = [("sweep", "=", stage[0]), ("layer", "=", stage[1])] if {"sweep", "layer"} <= names else None
            df = pq.read_table(path, filters=own).to_pandas()
        else:
            df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        return None, f"not readable as Parquet ({type(exc).__name__})"
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        return None, f"lacks column(s) {', '.join(missing)}"
    return df, None


def arch_tuple(arch: str) -> tuple[int, ...]:
    """An arch string's option indices; () when it is not dash-joined integers."""
    try:
        return tuple(map(int, arch.split("-")))
    except ValueError:
        return ()


def scan_tables(layout: Layout, problems: list[Problem]) -> Tables:
    """Read every Parquet table of the search; report the unreadable ones."""
    t = Tables(layout)
    paths = []
    for r, l, kind, path in stage_tables(layout):
        t.stage_files.setdefault((r, l), set()).add(kind)
        t.stage_of[t.rel(path)] = (r, l)
        paths.append((path, kind))
    paths += [(path, kind) for kind, path in final_paths(layout).items() if path.exists()]
    def read(pk: tuple[Path, str]):
        stage = t.stage_of.get(t.rel(pk[0])) if pk[1] == "history" else None
        return _read_table(*pk, stage)

    with ThreadPoolExecutor(4) as pool:  # Parquet decoding releases the GIL: reads overlap
        tables = list(pool.map(read, paths))
    for (path, kind), (df, err) in zip(paths, tables):
        rel = t.rel(path)
        t.kinds[rel] = kind
        if err is None:
            t.frames[rel] = df
        else:
            t.unreadable.add(rel)
            problems.append(Problem(str(path), "corrupt-table", ERROR, f"{kind} table is {err}",
                                    f"delete it and {RERUN} (--fix never deletes tables)"))
    return t


def _check_metrics(area: str, metrics: Any) -> str | None:
    """Why a metrics.json cannot be used, or None. Trials need a status and, when ok, a finite
    accuracy: that is what the aggregate stage reads (store.records.metrics_accuracy)."""
    if not isinstance(metrics, dict):
        return f"{METRICS} is not a JSON object"
    if area == "transfer":
        return None
    if metrics.get("status") not in Status.EVALUATED:
        return f"{METRICS} has status {metrics.get('status')!r}, not ok or failed"
    if area == "trials" and metrics["status"] == Status.OK and not math.isfinite(metrics_accuracy(metrics)):
        return f"{METRICS} says ok but has no finite accuracy"
    return None


def _scan_record(area: str, path: Path, problems: list[Problem]) -> Record:
    rec = Record(area, path.name, path, frozenset(os.listdir(path)))
    where = str(path)
    if METRICS not in rec.names:
        rec.broken = True
        problems.append(Problem(where, "partial", ERROR,
                                f"unfinished {RECORD_NAMES[area]}: no {METRICS} (killed while running, or deleted)",
                                FIX if area == "trials" else FIX_SAME, fixable=True))
        return rec
    metrics, err = read_json(path / METRICS)
    err = f"{METRICS} is {err}" if err else _check_metrics(area, metrics)
    inputs = None
    if err is None and INPUTS in rec.names:
        inputs, ierr = read_json(path / INPUTS)
        if ierr or not isinstance(inputs, dict):
            err, inputs = f"{INPUTS} is {ierr or 'not a JSON object'}", None
    if err:
        rec.broken = True
        problems.append(Problem(where, "corrupt", ERROR, err, FIX if area == "trials" else FIX_SAME, fixable=True))
        return rec
    rec.metrics, rec.inputs = metrics, inputs
    changed = changed_artifacts(path, metrics, rec.names)  # the sha256 the record lists, per file
    if changed:
        rec.broken = True
        problems.append(Problem(where, "checksum", ERROR, f"{', '.join(changed)} changed after the run wrote "
                                f"{'them' if len(changed) > 1 else 'it'}: the sha256 its record lists differs",
                                FIX if area == "trials" else FIX_SAME, fixable=True))
    return rec


def scan_records(layout: Layout, problems: list[Problem], trial_keys: set[str] | None = None
                 ) -> dict[str, dict[str, Record]]:
    """Every per-key directory of trials/, final/ and transfer/, partial and corrupt ones reported.
    transfer/data (rule detdata's output, beside the transfer keys) is not a record. With
    ``trial_keys`` only those trial directories are read (a shared store: ``scan_trials``)."""
    out: dict[str, dict[str, Record]] = {}
    not_keyed = {layout.transfer_data}
    for area in KEYED_AREAS:
        root = layout.area(area)
        found: dict[str, Record] = {}
        if area == "trials" and trial_keys is not None:
            out[area] = scan_trials(layout, trial_keys, problems)
            continue
        if root.is_dir():
            with os.scandir(root) as it:
                for entry in it:
                    if entry.is_dir() and Path(entry.path) not in not_keyed and not entry.name.startswith("."):
                        found[entry.name] = _scan_record(area, Path(entry.path), problems)
        out[area] = dict(sorted(found.items()))
    return out


def scan_trials(layout: Layout, keys: set[str], problems: list[Problem]) -> dict[str, Record]:
    """The trial directories of ``keys`` only: on a shared store the other directories are other
    searches' trials (finished, or running now), none of this search's business."""
    paths = (layout.trial_dir(k) for k in sorted(keys))
    return {p.name: _scan_record("trials", p, problems) for p in paths if p.is_dir()}


def search_keys(tables: Tables) -> set[str]:
    """Every trial key this search's tables name as a trial: children rows that ask for one,
    evaluated history rows, every row of the other tables (as ``checks.collect_refs``). On a
    shared store these are the only trials this search may count, move or delete."""
    keys: set[str] = set()
    for rel, df in tables.frames.items():
        kind = tables.kinds[rel]
        rows = (df[df["action"].isin(REQUESTED)] if kind == "children"
                else df[df["status"].isin(EVALUATED_ROWS)] if kind == "history" else df)
        keys |= set(rows["key"].astype(str))
    return keys


def no_search(layout: Layout, hint: str = "") -> ValueError:
    return ValueError(f"{layout.root} holds no search (no {layout.search_dir}){hint}")


def scan(results: str | Path) -> tuple[Scan, list[Problem]]:
    """Read a results directory (raise ValueError when it holds no search)."""
    layout = Layout.of_results(results)
    if not layout.search_dir.is_dir():
        raise no_search(layout, "; give the workflow's results directory (the config's `results`)")
    problems: list[Problem] = []
    summary, err = read_json(layout.summary)
    if err not in (None, "missing") or (err is None and not isinstance(summary, dict)):
        problems.append(Problem(str(layout.summary), "corrupt-table", ERROR, f"summary is {err or 'not a JSON object'}",
                                f"delete it and {RERUN}"))
        summary = None
    run = read_run_info(layout, summary, problems)
    tables = scan_tables(layout, problems)
    # A shared store's trials are read once the tables say which are this search's (checks.audit).
    records = scan_records(layout, problems, trial_keys=set() if layout.shared_store else None)
    return Scan(layout, run, summary, tables, records), problems


def current_stages(tables: Tables) -> tuple[list[tuple[int, int]], bool]:
    """The stages of the search the children tables describe, walked as ``workflow.walk``
    does (sweep by sweep until a stage stopped by the budget or a sweep with no children), and
    whether that walk reached the end. Stage files after the end were left by an earlier
    search in the same directory (one with more sweeps); they are not part of this one."""
    layers = 1 + max((l for _, l in tables.stage_files), default=-1)
    stages: list[tuple[int, int]] = []
    r = 0
    while layers:
        had = False
        for l in range(layers):
            kids = tables.frame(tables.layout.children(r, l))
            if kids is None:  # not written yet, or unreadable: the walk cannot go on
                return stages, False
            stages.append((r, l))
            had |= not kids.empty
            if not kids.empty and "stopped" in kids and bool(kids["stopped"].iloc[0]):
                return stages, True
        if not had:
            return stages, True
        r += 1
    return stages, False
