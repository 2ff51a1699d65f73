"""The checks of ``layernas audit``, run on a ``Scan`` in memory, and ``audit`` itself.

Each check appends ``Problem`` objects: trial directory names against the keys of their
content, table rows against the trials they name, stages left half done, analytic costs and
buckets, accuracies against the trials' metrics, final/transfer results against top.parquet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.status import Status
from layernas.store.audit.maintenance import fix
from layernas.store.audit.problems import (
    ERROR,
    FIX,
    FIX_SAME,
    INFO,
    RERUN,
    RERUN_SAME,
    WARNING,
    AuditReport,
    Problem,
)
from layernas.store.audit.scan import (
    EVALUATED_ROWS,
    REQUESTED,
    RunInfo,
    Scan,
    arch_tuple,
    current_stages,
    scan,
    scan_trials,
    stage_paths,
)
from layernas.store.audit.supernet import LoadCheckpoint, check_supernet
from layernas.store.keys import train_hash, trial_key
from layernas.store.layout import INPUTS, METRICS
from layernas.store.records import metrics_accuracy


def drop_stale(s: Scan, problems: list[Problem]) -> None:
    """Report stage directories left by an earlier search and leave them out of every later
    check: their keys, costs and buckets belong to other settings, not to this run."""
    stages, ended = current_stages(s.tables)
    if not ended:
        return
    current = set(stages)
    last = f"r{stages[-1][0]}/l{stages[-1][1]}"
    for r, l in sorted(set(s.tables.stage_files) - current):
        problems.append(Problem(str(s.layout.stage_dir(r, l)), "stale-stage", WARNING, "left by an earlier search in "
                                f"this directory (this search ends at {last}); not checked",
                                "nothing needed; delete it, or copy it elsewhere first to keep the old tables"))
        del s.tables.stage_files[(r, l)]
        for path in stage_paths(s.layout, r, l).values():
            s.tables.frames.pop(s.tables.rel(path), None)


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


def collect_refs(s: Scan) -> Refs:
    refs = Refs()
    t = s.tables
    for rel, df in t.frames.items():
        kind = t.kinds[rel]
        refs.arch.update(zip(df["key"].astype(str), df["arch"].astype(str)))
        if kind == "children":
            aggregated = "buckets" in t.stage_files.get(t.stage_of[rel], set())
            rows = df[df["action"].isin(REQUESTED)]
            if not aggregated:
                refs.pending |= set(rows["key"].astype(str))
                continue
        elif kind == "history":
            rows = df[df["status"].isin(EVALUATED_ROWS)]
        else:
            rows = df
        for key, arch in zip(rows["key"].astype(str), rows["arch"].astype(str)):
            refs.required.setdefault(key, (arch, rel))
        if kind == "top":
            refs.finals.update(zip(df["final_key"].astype(str), df["arch"].astype(str)))
    return refs


# --------------------------------------------------------------------------- trial keys


def _own_key(inputs: dict | None, arch: str) -> str | None:
    """The key a trial's own trial.json implies (its space, recipe hash and seed), so a trial of
    another search config in the same directory is told apart from a misnamed one. A tabular
    trial's recipe hash is recomputed from its oracle (the table's content), not taken from the
    key it records, so an edited oracle table shows as a key mismatch."""
    if not inputs or inputs.get("space_id") is None or inputs.get("seed") is None:
        return None
    h = inputs.get("train_hash")
    if h is None and inputs.get("evaluator") == "tabular" and inputs.get("oracle"):
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


def _shown(s: Scan, path: Path) -> str:
    """``path`` relative to the results directory, or whole when outside it (a shared store)."""
    return s.tables.rel(path) if path.is_relative_to(s.layout.root) else str(path)


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
            problems.append(Problem(where, "unchecked", INFO, f"no arch in {METRICS}, {INPUTS} or any table",
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
                f"mv it to {_shown(s, s.layout.trial_dir(true_key))} if that is free and you trust it; else {FIX}"
                if true_key else FIX,
                fixable=True))
            continue
        if key not in referenced:
            why = "" if expected in (None, key) else " (a trial of another space, training config or seed)"
            problems.append(Problem(where, "orphan", WARNING, f"trial of arch {arch} is in no table{why}",
                                    "nothing needed: a later search with the same settings reuses it; "
                                    "delete it to free space"))
        if m.get("status") == Status.FAILED:
            problems.append(Problem(where, "failed-trial", INFO, f"arch {arch} failed: {m.get('error')}",
                                    "recorded, not retried; `layernas retry-failed` and " + RERUN_SAME + " to retry"))
    return claimed


def check_missing(s: Scan, refs: Refs, claimed: set[str], problems: list[Problem]) -> None:
    """Rows of finished stages whose trial directory does not exist at all."""
    trials = s.records["trials"]
    for key, (arch, rel) in sorted(refs.required.items()):
        if key not in trials and key not in claimed:
            problems.append(Problem(str(s.layout.trial_dir(key)), "missing-trial", ERROR,
                                    f"arch {arch} is in {rel} but has no trial directory", RERUN_SAME))


def check_stages(s: Scan, problems: list[Problem]) -> None:
    """Stages with children but no bucket table: a run in progress or interrupted (info), or,
    when the summary exists, a deleted table (error)."""
    for (r, l), names in sorted(s.tables.stage_files.items()):
        if "children" in names and not {"buckets", "history"} <= names:
            where = str(s.layout.stage_dir(r, l))
            if s.summary is not None:
                problems.append(Problem(where, "missing-table", ERROR, "stage has children but no bucket/history table "
                                        "although the search finished", RERUN))
            else:
                problems.append(Problem(where, "incomplete-search", INFO, "stage not aggregated yet (search running "
                                        "or interrupted)", f"{RERUN_SAME} to finish the search"))


# --------------------------------------------------------------------------- costs


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
    from layernas.core.bounds import completion_costs
    from layernas.core.cost import cost_of

    metric, kw = run.search.get("metric", "madds"), dict(run.cost_kwargs or {})
    archs = pd.unique(pd.concat([f["arch"].astype(str) for f in frames], ignore_index=True)) if frames else []
    parsed = {a: t for a in archs if len(t := arch_tuple(a)) == space.num_layers}  # Space.check_arch's rule, vectorised:
    grid = np.array(list(parsed.values()), dtype=np.int64).reshape(len(parsed), space.num_layers)
    ok = ((grid >= 0) & (grid < np.asarray(space.sizes))).all(axis=1)
    valid: dict[str, tuple[int, ...]] = {a: t for (a, t), good in zip(parsed.items(), ok) if good}
    cost = dict(zip(valid, cost_of(space, list(valid.values()), **kw)[metric])) if valid else {}
    with_min = [f[["layer", "arch"]] for f in frames if "min_cost" in f]
    min_cost: dict[tuple[int, str], float] = {}
    if with_min:
        pairs = pd.concat(with_min, ignore_index=True).astype({"arch": str}).drop_duplicates()
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


def _table_action(s: Scan) -> str:
    return (f"delete it and {RERUN}; if many tables disagree, the space or cost code changed: "
            f"delete {s.layout.search_dir} instead and rerun (trials are reused by key)")


def check_costs(s: Scan, space: str | Path | None, problems: list[Problem]) -> None:
    """Table costs, cheapest completions and Eq. 4 buckets recomputed from the space with the
    run's recorded metric and input size (layernas.core.cost), one line per disagreeing table."""
    from layernas.core.search import Geometry, SearchConfig, bucket_of

    frames = [df for df in s.tables.frames.values() if not df.empty]
    sp = _resolve_space(s.run, space, problems, str(s.layout.search_meta))
    if sp is None or not frames:
        return
    try:
        geo = Geometry.of(sp, SearchConfig(**s.run.search), **(s.run.cost_kwargs or {}))
    except (TypeError, ValueError) as exc:
        problems.append(Problem(str(s.layout.search_dir), "unchecked", INFO, f"costs not checked: {exc}",
                                "nothing to do"))
        return
    cost, min_cost = _analytic(sp, s.run, frames)
    # One hash index for every table (pandas' isin/map with a dict rebuild it per call: quadratic)
    known, costs = pd.Index(list(cost), dtype=object), np.fromiter(cost.values(), float, len(cost))
    for rel, df in s.tables.frames.items():
        if df.empty:
            continue
        archs = df["arch"].astype(str)
        where = str(s.results / rel)
        codes = known.get_indexer(archs.to_numpy(object))
        unknown = codes < 0
        if unknown.any():
            problems.append(Problem(where, "cost-mismatch", ERROR, f"{int(unknown.sum())} rows have archs that are not "
                                    f"archs of space {sp.name}, e.g. {archs[unknown].iloc[0]}", _table_action(s)))
            continue
        want = costs[codes]
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


# --------------------------------------------------------------------------- accuracies, finals


def check_accuracy(s: Scan, problems: list[Problem]) -> None:
    """Accuracies in bucket tables and history against the trials' metrics (what the aggregate
    stage read): a difference means a table is older than a redone trial, or was edited."""
    acc = {k: metrics_accuracy(r.metrics) for k, r in s.records["trials"].items() if not r.broken}
    keys, accs = pd.Index(list(acc), dtype=object), np.fromiter(acc.values(), float, len(acc))
    for rel, df in s.tables.frames.items():
        kind = s.tables.kinds[rel]
        if kind not in ("buckets", "tables", "history", "top") or "accuracy" not in df:
            continue
        rows = df if kind != "history" else df[df["status"].isin(EVALUATED_ROWS)]
        codes = keys.get_indexer(rows["key"].astype(str).to_numpy(object))
        rows, codes = rows[codes >= 0], codes[codes >= 0]
        if rows.empty:
            continue
        have = rows["accuracy"].to_numpy(float)
        want = accs[codes]
        bad = ~np.isclose(have, want, rtol=1e-9, atol=1e-12, equal_nan=True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(Problem(str(s.results / rel), "accuracy-mismatch", ERROR,
                                    f"{int(bad.sum())} rows' accuracy differ from their trial's {METRICS}, e.g. "
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
                                        f"in {s.tables.rel(s.layout.top)}", "nothing needed; delete it to free space"))
            elif arch is not None and str(arch) != refs.finals[key]:
                problems.append(Problem(where, "key-mismatch", ERROR, f"holds arch {arch}, but top.parquet "
                                        f"gives {refs.finals[key]} for this key", FIX_SAME, fixable=True))
            elif rec.metrics.get("status", Status.OK) != Status.OK:
                problems.append(Problem(where, "failed-trial", INFO, f"{area} of {arch} failed: "
                                        f"{rec.metrics.get('error')}", f"recorded, not retried; delete it and {RERUN_SAME} to retry"))
    finals = s.records["final"]
    if finals:  # the run retrains: every top model should have its directory
        for key, arch in sorted(refs.finals.items()):
            if key not in finals:
                problems.append(Problem(str(s.layout.final_dir(key)), "missing-final", WARNING,
                                        f"top model {arch} has no final retraining", f"{RERUN_SAME} (final.activate: true)"))


# --------------------------------------------------------------------------- entry point


def audit(results: str | Path, do_fix: bool = False, space: str | Path | None = None,
          load: LoadCheckpoint | None = None) -> AuditReport:
    """Check a results directory; ``do_fix``: delete what --fix may; ``load``: see check_supernet."""
    t0 = time.perf_counter()
    s, problems = scan(results)
    drop_stale(s, problems)
    refs = collect_refs(s)
    if s.layout.shared_store:  # only this search's trials: the others are no orphans here
        s.trial_keys = set(refs.required) | refs.pending
        s.records["trials"] = scan_trials(s.layout, s.trial_keys, problems)
    claimed = check_trial_keys(s, refs, problems)
    check_missing(s, refs, claimed, problems)
    check_stages(s, problems)
    check_costs(s, space, problems)
    check_accuracy(s, problems)
    check_finals(s, refs, problems)
    report = AuditReport(str(results), problems, checked={  # check_supernet appends to problems, then counts
        "supernet": check_supernet(s, set(refs.required) | refs.pending, problems, space, load),
        **{area: len(s.records[area]) for area in ("trials", "final", "transfer")},
        "tables": len(s.tables.frames) + len(s.tables.unreadable), "rows": int(sum(map(len, s.tables.frames.values()))),
    })
    report.sort()
    if do_fix:
        report.removed = fix(s, report.problems)
    report.seconds = time.perf_counter() - t0
    return report
