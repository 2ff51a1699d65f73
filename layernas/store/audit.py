"""`layernas audit`, `layernas clean-weights` and disk use: checks of a results directory
against the promises the workflow makes about it (DESIGN.md, "Reliability promises").

Pure logic, no argparse, so the checks are tested directly and `layernas status` can reuse
``disk_usage``. Everything is read once (one pass over trial directories, one read of each
Parquet table) and checked in memory, so a 1,000-trial search is audited in about a second.

Severity decides the exit status: errors (something a rerun would trip over, or a table that
disagrees with the trials) give 1; warnings (orphan trial directories, settings that changed)
and info (failed trials, stages not run yet) are printed but give 0, because a failed trial
is a recorded result (it is never retried) and an orphan is a reusable trial of another search.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layernas.store.keys import trial_key

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
# Snakemake does not redo a missing intermediate file (a trial, a bucket table) when the
# targets after it are up to date, so "the same command" is not enough once a search has
# finished; forcing the cheap aggregate stages makes it ask for every trial again, and only the
# missing ones run (the others are found by their key). Final/transfer results are targets of
# rule all, so the same command redoes those.
RERUN = "rerun your snakemake command with --forcerun aggregate (only missing trials run)"
RERUN_SAME = "rerun the same snakemake command"
FIX = "delete it (layernas audit --fix does) and " + RERUN
FIX_SAME = "delete it (layernas audit --fix does) and " + RERUN_SAME
KEYED_AREAS = ("trials", "final", "transfer")
NOT_KEYED = {"transfer": {"data"}}  # rule detdata's output lives beside the transfer keys
REQUIRED_COLUMNS = {
    "children": ("layer", "arch", "key", "cost", "action"),
    "buckets": ("layer", "bucket", "arch", "key", "cost", "accuracy"),
    "history": ("layer", "arch", "key", "cost", "status"),
    "tables": ("layer", "bucket", "arch", "key", "cost", "accuracy"),
    "top": ("arch", "key", "cost", "final_key"),
}
_STAGE = re.compile(r"r(\d+)/l(\d+)/(children|buckets|history)\.parquet")


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Problem:
    """One finding: where, what kind, how bad, and what to do about it. ``fixable`` marks the
    ones ``--fix`` may delete: unfinished or corrupted per-key directories, never a table."""

    path: str
    kind: str
    severity: str
    message: str
    action: str
    fixable: bool = False

    def line(self) -> str:
        return f"{self.severity:<7} {self.path}: {self.message} -> {self.action}"


@dataclass
class AuditReport:
    """Problems found, what was read, what --fix removed. ``to_dict`` is the --json contract."""

    results: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    @property
    def exit_code(self) -> int:
        """1 when errors were found (also when --fix removed them: a rerun is still needed)."""
        return 1 if self.count(ERROR) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "clean": not self.problems,
            "errors": self.count(ERROR),
            "warnings": self.count(WARNING),
            "infos": self.count(INFO),
            "checked": self.checked,
            "problems": [asdict(p) for p in self.problems],
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- reading


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
class Scan:
    """Everything the checks need, read once."""

    results: Path
    run: RunInfo
    summary: dict | None
    tables: dict[str, pd.DataFrame]  # "search/r0/l1/buckets.parquet" -> frame (readable ones)
    stage_files: dict[tuple[int, int], set[str]]  # (r, l) -> table names present, readable or not
    records: dict[str, dict[str, Record]]  # area -> key -> record
    unreadable: set[str] = field(default_factory=set)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(object, None) or (None, why it could not be read)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"


def read_run_info(results: Path, summary: dict | None, problems: list[Problem]) -> RunInfo:
    """RunInfo from search.json, else from summary.json (fewer fields)."""
    path = results / "search" / "search.json"
    meta, err = _read_json(path)
    if err is None and isinstance(meta, dict):
        return RunInfo(meta.get("space"), meta.get("space_name"), meta.get("train_hash"),
                       None if meta.get("seed") is None else int(meta["seed"]), meta.get("evaluator"),
                       meta.get("search"), meta.get("cost") or {})
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


def _read_table(path: Path, kind: str) -> tuple[pd.DataFrame | None, str | None]:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        return None, f"not readable as Parquet ({type(exc).__name__})"
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        return None, f"lacks column(s) {', '.join(missing)}"
    return df, None


def scan_tables(results: Path, problems: list[Problem]) -> tuple[dict[str, pd.DataFrame], dict, set[str]]:
    """Read every Parquet table under search/; report the unreadable ones."""
    search = results / "search"
    tables: dict[str, pd.DataFrame] = {}
    stage_files: dict[tuple[int, int], set[str]] = {}
    unreadable: set[str] = set()
    paths = []
    for path in search.glob("r*/l*/*.parquet"):
        m = _STAGE.fullmatch(path.relative_to(search).as_posix())
        if m:
            stage_files.setdefault((int(m[1]), int(m[2])), set()).add(m[3])
            paths.append(((int(m[1]), int(m[2]), m[3]), path, m[3]))
    for name in ("history", "tables", "top"):
        if (search / f"{name}.parquet").exists():
            paths.append(((1 << 30, 0, name), search / f"{name}.parquet", name))
    for _, path, kind in sorted(paths):
        rel = str(path.relative_to(results))
        df, err = _read_table(path, kind)
        if err is None:
            tables[rel] = df
        else:
            unreadable.add(rel)
            problems.append(Problem(str(path), "corrupt-table", ERROR, f"{kind} table is {err}",
                                    f"delete it and {RERUN} (--fix never deletes tables)"))
    return tables, stage_files, unreadable


def _check_metrics(area: str, metrics: Any) -> str | None:
    """Why a metrics.json cannot be used, or None. Trials need a status and, when ok, a finite
    accuracy: that is what the aggregate stage reads (workflow.metrics_accuracy)."""
    if not isinstance(metrics, dict):
        return "metrics.json is not a JSON object"
    if area == "transfer":
        return None
    if metrics.get("status") not in ("ok", "failed"):
        return f"metrics.json has status {metrics.get('status')!r}, not ok or failed"
    if area == "trials" and metrics["status"] == "ok":
        from layernas.store.records import metrics_accuracy

        if not math.isfinite(metrics_accuracy(metrics)):
            return "metrics.json says ok but has no finite accuracy"
    return None


def _scan_record(area: str, entry: os.DirEntry, problems: list[Problem]) -> Record:
    path = Path(entry.path)
    rec = Record(area, entry.name, path, frozenset(os.listdir(path)))
    where = str(path)
    if "metrics.json" not in rec.names:
        rec.broken = True
        what = {"trials": "trial", "final": "final retraining", "transfer": "transfer"}[area]
        problems.append(Problem(where, "partial", ERROR,
                                f"unfinished {what}: no metrics.json (killed while running, or deleted)",
                                FIX if area == "trials" else FIX_SAME, fixable=True))
        return rec
    metrics, err = _read_json(path / "metrics.json")
    err = f"metrics.json is {err}" if err else _check_metrics(area, metrics)
    inputs = None
    if err is None and "trial.json" in rec.names:
        inputs, ierr = _read_json(path / "trial.json")
        if ierr or not isinstance(inputs, dict):
            err, inputs = f"trial.json is {ierr or 'not a JSON object'}", None
    if err:
        rec.broken = True
        problems.append(Problem(where, "corrupt", ERROR, err, FIX if area == "trials" else FIX_SAME, fixable=True))
        return rec
    rec.metrics, rec.inputs = metrics, inputs
    return rec


def scan_records(results: Path, problems: list[Problem]) -> dict[str, dict[str, Record]]:
    """Every per-key directory of trials/, final/ and transfer/, partial and corrupt ones reported."""
    out: dict[str, dict[str, Record]] = {}
    for area in KEYED_AREAS:
        root = results / area
        found: dict[str, Record] = {}
        if root.is_dir():
            with os.scandir(root) as it:
                for entry in it:
                    if entry.is_dir() and entry.name not in NOT_KEYED.get(area, ()) and not entry.name.startswith("."):
                        found[entry.name] = _scan_record(area, entry, problems)
        out[area] = dict(sorted(found.items()))
    return out


def scan(results: str | Path) -> tuple[Scan, list[Problem]]:
    """Read a results directory (raise ValueError when it holds no search)."""
    results = Path(results)
    if not (results / "search").is_dir():
        raise ValueError(f"{results} holds no search (no {results / 'search'}); "
                         "give the workflow's results directory (the config's `results`)")
    problems: list[Problem] = []
    summary_path = results / "search" / "summary.json"
    summary, err = _read_json(summary_path)
    if err not in (None, "missing") or (err is None and not isinstance(summary, dict)):
        problems.append(Problem(str(summary_path), "corrupt-table", ERROR, f"summary is {err or 'not a JSON object'}",
                                f"delete it and {RERUN}"))
        summary = None
    run = read_run_info(results, summary, problems)
    tables, stage_files, unreadable = scan_tables(results, problems)
    records = scan_records(results, problems)
    return Scan(results, run, summary, tables, stage_files, records, unreadable), problems


def current_stages(tables: dict[str, pd.DataFrame], stage_files: dict) -> tuple[list[tuple[int, int]], bool]:
    """The stages of the search the children tables describe, walked as ``workflow.walk``
    does (sweep by sweep until a stage stopped by the budget or a sweep with no children), and
    whether that walk reached the end. Stage files after the end were left by an earlier
    search in the same directory (one with more sweeps); they are not part of this one."""
    layers = 1 + max((l for _, l in stage_files), default=-1)
    stages: list[tuple[int, int]] = []
    r = 0
    while layers:
        had = False
        for l in range(layers):
            kids = tables.get(f"search/r{r}/l{l}/children.parquet")
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


def drop_stale(s: Scan, problems: list[Problem]) -> None:
    """Report stage directories left by an earlier search and leave them out of every later
    check: their keys, costs and buckets belong to other settings, not to this run."""
    stages, ended = current_stages(s.tables, s.stage_files)
    if not ended:
        return
    current = set(stages)
    last = f"r{stages[-1][0]}/l{stages[-1][1]}"
    for r, l in sorted(set(s.stage_files) - current):
        where = s.results / "search" / f"r{r}" / f"l{l}"
        problems.append(Problem(str(where), "stale-stage", WARNING, f"left by an earlier search in this directory "
                                f"(this search ends at {last}); not checked",
                                "nothing needed; delete it, or copy it elsewhere first to keep the old tables"))
        del s.stage_files[(r, l)]
        for name in ("children", "buckets", "history"):
            s.tables.pop(f"search/r{r}/l{l}/{name}.parquet", None)


# --------------------------------------------------------------------------- references


@dataclass
class Refs:
    """Which trial keys the tables point to. ``required``: rows that claim a finished trial
    (key -> (arch, table)); ``pending``: keys of stages not aggregated yet (a run in progress
    or interrupted); ``arch``: every key's arch from any table, for records lacking one."""

    required: dict[str, tuple[str, str]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    arch: dict[str, str] = field(default_factory=dict)
    finals: dict[str, str] = field(default_factory=dict)  # final key -> arch (top.parquet)


def _kind(rel: str) -> str:
    return Path(rel).stem


def collect_refs(s: Scan) -> Refs:
    refs = Refs()
    for rel, df in s.tables.items():
        kind = _kind(rel)
        refs.arch.update(zip(df["key"].astype(str), df["arch"].astype(str)))
        if kind == "children":
            m = _STAGE.fullmatch(Path(rel).relative_to("search").as_posix())
            aggregated = "buckets" in s.stage_files.get((int(m[1]), int(m[2])), set())
            rows = df[df["action"].isin(["evaluate", "cached"])]
            if not aggregated:
                refs.pending |= set(rows["key"].astype(str))
                continue
        elif kind == "history":
            rows = df[df["status"].isin(["ok", "failed", "cached"])]
        else:
            rows = df
        for key, arch in zip(rows["key"].astype(str), rows["arch"].astype(str)):
            refs.required.setdefault(key, (arch, rel))
        if kind == "top":
            refs.finals.update(zip(df["final_key"].astype(str), df["arch"].astype(str)))
    return refs


# --------------------------------------------------------------------------- checks


def _own_key(inputs: dict | None, arch: str) -> str | None:
    """The key a trial's own trial.json implies (its space, training config and seed), so a
    trial of another search config in the same directory is told apart from a misnamed one."""
    if not inputs or inputs.get("space_id") is None or inputs.get("seed") is None:
        return None
    h = inputs.get("train_hash")
    if h is None and inputs.get("evaluator") == "tabular" and inputs.get("oracle"):
        from layernas.evaluate.recipe import train_hash

        try:
            h = train_hash({"evaluator": "tabular", "oracle": str(inputs["oracle"])})
        except (OSError, ValueError):
            return None  # the oracle table is gone: cannot tell
    return None if h is None else trial_key(str(inputs["space_id"]), arch, str(h), int(inputs["seed"]))


def _content_key(key: str, arch: str, metrics: dict, expected: str | None, own: str | None,
                 table_arch: str | None) -> str | None:
    """The key this trial's content belongs to when that is not ``key`` ("" when unknown), or
    None when name and content agree. Evidence, strongest first: the key the metrics record
    (tabular trials), the key of the trial's own inputs (trial.json), the key under this run's
    settings. A trial whose own inputs give ``key`` is consistent even when the run's settings
    differ: it belongs to another search (an orphan), it is not misnamed."""
    if metrics.get("key") not in (None, key):
        return str(metrics["key"])
    if own is not None and own != key:
        return own
    if own is None and expected not in (None, key):
        return expected
    if table_arch is not None and table_arch != arch:
        return ""
    return None


def check_trial_keys(s: Scan, refs: Refs, problems: list[Problem]) -> set[str]:
    """Each trial's directory name against the key of its content; orphans; failed trials.
    Returns the keys whose content belongs elsewhere (their own key), so the missing-trial
    check does not report the same mistake twice."""
    claimed: set[str] = set()
    referenced = set(refs.required) | refs.pending
    for key, rec in s.records["trials"].items():
        if rec.broken:
            continue
        where = str(rec.path)
        m = rec.metrics or {}
        arch = m.get("arch") or refs.arch.get(key) or (rec.inputs or {}).get("arch")
        if arch is None:
            problems.append(Problem(where, "unchecked", INFO, "no arch in metrics.json, trial.json or any table",
                                    "nothing to do unless you need this trial"))
            continue
        arch, table_arch = str(arch), refs.arch.get(key)
        expected = s.run.key(arch)
        true_key = _content_key(key, arch, m, expected, _own_key(rec.inputs, arch), table_arch)
        if true_key is not None:
            claimed.add(true_key)
            tables = f" (the tables say {table_arch})" if table_arch not in (None, arch) else ""
            problems.append(Problem(
                where, "key-mismatch", ERROR, f"holds arch {arch}{tables}, whose key is {true_key or 'another'}, not {key}",
                f"mv it to trials/{true_key} if that is free and you trust it; else {FIX}" if true_key else FIX,
                fixable=True))
            continue
        if key not in referenced:
            why = "" if expected in (None, key) else " (a trial of another space, training config or seed)"
            problems.append(Problem(where, "orphan", WARNING, f"trial of arch {arch} is in no table{why}",
                                    "nothing needed: a later search with the same settings reuses it; "
                                    "delete it to free space"))
        if m.get("status") == "failed":
            problems.append(Problem(where, "failed-trial", INFO, f"arch {arch} failed: {m.get('error')}",
                                    f"recorded, not retried; delete it and {RERUN} to retry"))
    return claimed


def check_missing(s: Scan, refs: Refs, claimed: set[str], problems: list[Problem]) -> None:
    """Rows of finished stages whose trial directory does not exist at all."""
    trials = s.records["trials"]
    for key, (arch, rel) in sorted(refs.required.items()):
        if key not in trials and key not in claimed:
            problems.append(Problem(str(s.results / "trials" / key), "missing-trial", ERROR,
                                    f"arch {arch} is in {rel} but has no trial directory",
                                    RERUN))


def check_stages(s: Scan, problems: list[Problem]) -> None:
    """Stages with children but no bucket table: a run in progress or interrupted (info), or,
    when the summary exists, a deleted table (error)."""
    for (r, l), names in sorted(s.stage_files.items()):
        if "children" in names and not {"buckets", "history"} <= names:
            where = str(s.results / "search" / f"r{r}" / f"l{l}")
            if s.summary is not None:
                problems.append(Problem(where, "missing-table", ERROR, "stage has children but no bucket/history table "
                                        "although the search finished", RERUN))
            else:
                problems.append(Problem(where, "incomplete-search", INFO, "stage not aggregated yet (search running "
                                        "or interrupted)", f"{RERUN_SAME} to finish the search"))


def _resolve_space(run: RunInfo, space: str | Path | None, problems: list[Problem], where: str):
    """The run's space, only if its content id equals the recorded one (else costs would be
    checked against another definition)."""
    from layernas.core.space import SpaceError, load_space

    name = space or run.space_name
    if name is None or run.search is None:
        problems.append(Problem(where, "unchecked", INFO, "costs not checked: the run recorded no space/search settings",
                                "nothing to do"))
        return None
    try:
        sp = load_space(name)
    except SpaceError as exc:
        problems.append(Problem(where, "unchecked", INFO, f"costs not checked: {exc}",
                                "pass the space file with --space to check them"))
        return None
    if run.space_id and sp.space_id != run.space_id:
        problems.append(Problem(where, "space-changed", WARNING,
                                f"space {name} is now {sp.space_id}, the run used {run.space_id}; costs not checked",
                                "a rerun would retrain every trial; restore the old space file, or pass it with --space"))
        return None
    if run.cost_kwargs is None and run.evaluator == "train":
        problems.append(Problem(where, "unchecked", INFO, "costs not checked: the run recorded no input size "
                                "(no search.json)", "nothing to do"))
        return None
    return sp


def _analytic(space, run: RunInfo, frames: list[pd.DataFrame]):
    """Cost of every distinct arch, and cheapest completion of every (layer, arch), vectorised."""
    from layernas.core.cost import completion_costs, cost_of

    metric, kw = run.search.get("metric", "madds"), dict(run.cost_kwargs or {})
    archs = pd.unique(pd.concat([f["arch"].astype(str) for f in frames], ignore_index=True)) if frames else []
    valid: dict[str, tuple[int, ...]] = {}
    for a in archs:
        try:
            valid[a] = space.check_arch(tuple(int(x) for x in a.split("-")))
        except ValueError:
            pass
    cost = dict(zip(valid, cost_of(space, list(valid.values()), **kw)[metric])) if valid else {}
    with_min = [f[["layer", "arch"]].astype({"arch": str}) for f in frames if "min_cost" in f]
    min_cost: dict[tuple[int, str], float] = {}
    if with_min:
        pairs = pd.concat(with_min, ignore_index=True).drop_duplicates()
        for layer, grp in pairs[pairs["arch"].isin(valid)].groupby("layer"):
            lo, _ = completion_costs(space, [valid[a] for a in grp["arch"]], int(layer), metric, **kw)
            min_cost.update(zip(((int(layer), a) for a in grp["arch"]), lo))
    return cost, min_cost


def _mismatch(rows: pd.DataFrame, have: np.ndarray, want: np.ndarray, column: str) -> str | None:
    bad = ~np.isclose(have, want, rtol=1e-9, atol=1e-9, equal_nan=False)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    return (f"{int(bad.sum())} of {len(rows)} rows' {column} differ from the analytic value, "
            f"e.g. arch {rows['arch'].iloc[i]}: {have[i]:.12g}, expected {want[i]:.12g}")


def check_costs(s: Scan, space: str | Path | None, problems: list[Problem]) -> None:
    """Table costs, cheapest completions and Eq. 4 buckets recomputed from the space with the
    run's recorded metric and input size (layernas.core.cost), one line per disagreeing table."""
    from layernas.core.search import Geometry, SearchConfig, bucket_of

    frames = [df for df in s.tables.values() if not df.empty]
    sp = _resolve_space(s.run, space, problems, str(s.results / "search" / "search.json"))
    if sp is None or not frames:
        return
    try:
        geo = Geometry.of(sp, SearchConfig(**s.run.search), **(s.run.cost_kwargs or {}))
    except (TypeError, ValueError) as exc:
        problems.append(Problem(str(s.results / "search"), "unchecked", INFO, f"costs not checked: {exc}", "nothing to do"))
        return
    cost, min_cost = _analytic(sp, s.run, frames)
    for rel, df in s.tables.items():
        if df.empty:
            continue
        archs = df["arch"].astype(str)
        where = str(s.results / rel)
        unknown = ~archs.isin(cost)
        if unknown.any():
            problems.append(Problem(where, "cost-mismatch", ERROR, f"{int(unknown.sum())} rows have archs that are not "
                                    f"archs of space {sp.name}, e.g. {archs[unknown].iloc[0]}", _table_action(s)))
            continue
        want = archs.map(cost).to_numpy(float)
        msgs = [_mismatch(df, df["cost"].to_numpy(float), want, "cost")]
        if "min_cost" in df:
            want_min = np.array([min_cost[(int(l), a)] for l, a in zip(df["layer"], archs)])
            msgs.append(_mismatch(df, df["min_cost"].to_numpy(float), want_min, "cheapest completion (min_cost)"))
        for msg in filter(None, msgs):
            problems.append(Problem(where, "cost-mismatch", ERROR, msg, _table_action(s)))
        if "bucket" in df:
            layers = df["layer"].to_numpy(int)
            want_b = np.zeros(len(df), dtype=np.int64)
            for l in np.unique(layers):
                at = layers == l
                want_b[at] = bucket_of(want[at], geo.lo[l], geo.hi[l], geo.config.buckets)
            msg = _mismatch(df, df["bucket"].to_numpy(float), want_b.astype(float), "Eq. 4 bucket")
            if msg:
                problems.append(Problem(where, "bucket-mismatch", ERROR, msg, _table_action(s)))


def _table_action(s: Scan) -> str:
    return (f"delete it and {RERUN}; if many tables disagree, the space or cost code changed: "
            f"delete {s.results / 'search'} instead and rerun (trials are reused by key)")


def check_accuracy(s: Scan, problems: list[Problem]) -> None:
    """Accuracies in bucket tables and history against the trials' metrics (what the aggregate
    stage read): a difference means a table is older than a redone trial, or was edited."""
    from layernas.store.records import metrics_accuracy

    acc = {k: metrics_accuracy(r.metrics) for k, r in s.records["trials"].items() if not r.broken}
    for rel, df in s.tables.items():
        kind = _kind(rel)
        if kind not in ("buckets", "tables", "history", "top") or "accuracy" not in df:
            continue
        rows = df if kind != "history" else df[df["status"].isin(["ok", "failed", "cached"])]
        rows = rows[rows["key"].astype(str).isin(acc)]
        if rows.empty:
            continue
        have = rows["accuracy"].to_numpy(float)
        want = rows["key"].astype(str).map(acc).to_numpy(float)
        bad = ~np.isclose(have, want, rtol=1e-9, atol=1e-12, equal_nan=True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(Problem(str(s.results / rel), "accuracy-mismatch", ERROR,
                                    f"{int(bad.sum())} rows' accuracy differ from their trial's metrics.json, e.g. "
                                    f"{rows['key'].iloc[i]}: table {have[i]:.12g}, trial {want[i]:.12g}", _table_action(s)))


def check_finals(s: Scan, refs: Refs, problems: list[Problem]) -> None:
    """final/ and transfer/ directories are keyed by top.parquet's final_key. Their keys hash the
    final recipe, which the run does not record, so they are checked against top.parquet only."""
    for area in ("final", "transfer"):
        for key, rec in s.records[area].items():
            if rec.broken:
                continue
            where, arch = str(rec.path), (rec.metrics or {}).get("arch")
            if key not in refs.finals:
                problems.append(Problem(where, "orphan", WARNING, f"{area} result is not one of the top models "
                                        "in search/top.parquet", "nothing needed; delete it to free space"))
            elif arch is not None and str(arch) != refs.finals[key]:
                problems.append(Problem(where, "key-mismatch", ERROR, f"holds arch {arch}, but top.parquet "
                                        f"gives {refs.finals[key]} for this key", FIX_SAME, fixable=True))
            elif rec.metrics.get("status", "ok") != "ok":
                problems.append(Problem(where, "failed-trial", INFO, f"{area} of {arch} failed: "
                                        f"{rec.metrics.get('error')}", f"recorded, not retried; delete it and {RERUN_SAME} to retry"))
    finals = s.records["final"]
    if finals:  # the run retrains: every top model should have its directory
        for key, arch in sorted(refs.finals.items()):
            if key not in finals:
                problems.append(Problem(str(s.results / "final" / key), "missing-final", WARNING,
                                        f"top model {arch} has no final retraining", f"{RERUN_SAME} (final.activate: true)"))


# --------------------------------------------------------------------------- entry points


def fix(s: Scan, problems: list[Problem]) -> list[str]:
    """Delete the fixable directories (partial, corrupt or misnamed per-key directories):
    Snakemake then sees their metrics.json missing and redoes them. Nothing else is touched."""
    removed = []
    roots = {(s.results / a).resolve() for a in KEYED_AREAS}
    for p in problems:
        path = Path(p.path)
        if not p.fixable or not path.is_dir() or path.resolve().parent not in roots:
            continue
        shutil.rmtree(path)
        removed.append(p.path)
    return removed


def audit(results: str | Path, do_fix: bool = False, space: str | Path | None = None) -> AuditReport:
    """Check a results directory; with ``do_fix`` also delete what --fix may delete."""
    t0 = time.perf_counter()
    s, problems = scan(results)
    drop_stale(s, problems)
    refs = collect_refs(s)
    claimed = check_trial_keys(s, refs, problems)
    check_missing(s, refs, claimed, problems)
    check_stages(s, problems)
    check_costs(s, space, problems)
    check_accuracy(s, problems)
    check_finals(s, refs, problems)
    order = {sev: i for i, sev in enumerate(SEVERITIES)}
    problems.sort(key=lambda p: (order[p.severity], p.path, p.kind))
    report = AuditReport(str(results), problems, checked={
        "trials": len(s.records["trials"]), "final": len(s.records["final"]),
        "transfer": len(s.records["transfer"]), "tables": len(s.tables) + len(s.unreadable),
        "rows": int(sum(len(df) for df in s.tables.values())),
    })
    if do_fix:
        report.removed = fix(s, problems)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- weights and disk


def selectable_keys(results: str | Path) -> set[str]:
    """Trial keys a search may still use: rows of the latest bucket table of every layer (the
    memorial tables; future sweeps expand only these), the top models, and the keys requested
    by stages not aggregated yet. Raises ValueError when a table it needs cannot be read, since
    guessing would delete weights that are still wanted."""
    results = Path(results)
    if not (results / "search").is_dir():
        raise ValueError(f"{results} holds no search (no {results / 'search'})")
    problems: list[Problem] = []
    tables, stage_files, unreadable = scan_tables(results, problems)
    if unreadable:
        raise ValueError(f"cannot tell which weights are still selectable: {problems[0].message} "
                         f"({problems[0].path}); run layernas audit first")
    stages, ended = current_stages(tables, stage_files)
    latest: dict[int, int] = {}  # layer -> sweep of its latest table
    for (r, l), names in stage_files.items():
        if "buckets" in names and (not ended or (r, l) in stages):
            latest[l] = max(latest.get(l, -1), r)
    if not latest:
        raise ValueError(f"{results} has no bucket table yet: nothing tells which weights are selectable")
    keep: set[str] = set()
    for l, r in latest.items():
        keep |= set(tables[f"search/r{r}/l{l}/buckets.parquet"]["key"].astype(str))
    for name in ("search/tables.parquet", "search/top.parquet"):
        if name in tables:
            keep |= set(tables[name]["key"].astype(str))
    for (r, l), names in stage_files.items():
        kids = tables.get(f"search/r{r}/l{l}/children.parquet")
        if "buckets" not in names and kids is not None:
            keep |= set(kids.loc[kids["action"] == "evaluate", "key"].astype(str))
    return keep


def clean_weights(results: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Remove ``trials/*/model.pt`` of trials no search step can select any more (see
    ``selectable_keys``). Metrics stay, so every trial is still reused by key; final models
    (final/*/model.pt) are never touched. Returns the files and bytes (to be) freed."""
    results = Path(results)
    keep = selectable_keys(results)
    files, kept = [], 0
    root = results / "trials"
    for weights in sorted(root.glob("*/model.pt")) if root.is_dir() else []:
        if weights.parent.name in keep:
            kept += 1
            continue
        size = weights.stat().st_size
        if not dry_run:
            weights.unlink()
        files.append({"path": str(weights), "bytes": size})
    return {"results": str(results), "dry_run": dry_run, "removed": files, "kept": kept,
            "bytes_freed": sum(f["bytes"] for f in files)}


def _tree_bytes(path: str, weights: list[int] | None = None) -> int:
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


def disk_usage(results_dir: str | Path) -> dict[str, int]:
    """Bytes by area, so `layernas status` can say where the space goes and whether
    `layernas clean-weights` is worth running: trials_weights (trials/*/*.pt), trials_other,
    search, final, transfer, other (logs, benchmarks, report) and total."""
    root = Path(results_dir)
    weights = [0]
    out = {"trials_weights": 0, "trials_other": _tree_bytes(str(root / "trials"), weights)}
    out["trials_weights"] = weights[0]
    for area in ("search", "final", "transfer"):
        out[area] = _tree_bytes(str(root / area))
    out["total"] = _tree_bytes(str(root))
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")
    return out


def retry_failed(results_dir: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Move every failed trial's directory to ``failed/{key}.{n}/`` so the next snakemake
    run (with ``--forcerun aggregate``, see README) evaluates those children again. Failed
    trials are results, not errors, and are never retried on their own; this is the explicit
    way to ask. The old records are kept, not deleted, so the first error stays on disk."""
    results = Path(results_dir)
    trials = results / "trials"
    if not trials.is_dir():
        raise ValueError(f"{results} has no trials/ directory (is it a results directory?)")
    moved = []
    for d in sorted(p for p in trials.iterdir() if p.is_dir()):
        m, _ = _read_json(d / "metrics.json")
        if not isinstance(m, dict) or m.get("status") == "ok":  # partial/corrupted: audit --fix
            continue
        n = 0
        while (results / "failed" / f"{d.name}.{n}").exists():
            n += 1
        dest = results / "failed" / f"{d.name}.{n}"
        moved.append({"key": d.name, "arch": m.get("arch"), "error": m.get("error"), "moved_to": str(dest)})
        if not dry_run:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(d, dest)
    return {"results": str(results), "moved": moved, "dry_run": dry_run}
