"""The stage steps the rule scripts call (children, aggregate, summary) and the walk over the
stages the finished checkpoints tell of. Kept here, not in .smk files, so it is tested without
Snakemake and the rules stay thin. Paths come from ``layernas.store.layout``; the search logic
itself (which children, which bucket table) from ``layernas.core.search``."""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.search import (
    Geometry,
    SearchConfig,
    check_target_reachable,
    finish_stage,
    max_trials,
    plan_stage,
    results_from_history,
    stage_before,
    stage_children,
)
from layernas.core.space import load_space
from layernas.core.status import Action, Status, search_summary
from layernas.store.files import atomic_write_json, atomic_write_parquet
from layernas.store.keys import config_hash, final_key, supernet_eval, supernet_key, train_hash, trial_key
from layernas.store.layout import LOG, Layout
from layernas.store.records import metrics_accuracy, read_finished_record, read_metrics
from layernas.store.supernet import supernet_hash
from layernas.workflow.config import cost_kwargs, measures_latency, search_config, trial_store

# --------------------------------------------------------------------------- context


class Context:
    """What every stage of one workflow run shares; built once per Snakemake process."""

    def __init__(self, config: dict):
        self.config = config
        # None: the default <results>/trials; else the absolute path of a (shared) trial store
        self.store = trial_store(config)
        self.layout = Layout(config.get("results", "results"), trials_dir=self.store)
        self.results = self.layout.root
        self.space = load_space(config["space"])
        self.search = search_config(config)
        self.cost_kwargs = cost_kwargs(config)
        # The table a latency search's first stage waits for, as the latency_table rule names it.
        self.latency_input = str(self.layout.latency_table) if measures_latency(config) else None
        self.seed = int(config.get("seed", 0))
        # evaluator supernet: the supernet every stage waits for; its checkpoint's content hash
        # is in every key (key_hash), known only once the supernet rule has run.
        self.supernet_key = supernet_key(self.space.space_id, config) if config["evaluator"] == "supernet" else None
        # In the signature (a rule param, fixed when Snakemake parses the workflow): for a supernet
        # search, what decides its supernet and evaluations, not the checkpoint's hash.
        self.train_hash = (train_hash(config) if self.supernet_key is None else
                           config_hash({"supernet": self.supernet_key, "eval": supernet_eval(config)}))

    @property
    def signature(self) -> dict:
        """What decides the search trajectory; a rule param, so changing any of it re-runs
        the (cheap) search stages while every trial is found again by its content key."""
        sig = {
            "space": self.space.space_id, "train_hash": self.train_hash, "seed": self.seed,
            "search": dataclasses.asdict(self.search), "cost": self.cost_kwargs, "budget": self.budget,
        }
        # The store does not change the search, but it is what search.json tells readers
        # (Layout.of_results): moving to another store re-runs the cheap stages, which rewrite
        # search.json. Only when set, so the default layout keeps the signature it always had.
        if self.store is not None:
            sig["trials"] = str(self.store)
        return sig

    @cached_property
    def geo(self) -> Geometry:
        """Eq. 4 bounds and cost options; lazy, because a latency search's table is measured by
        a job after the controller has parsed the workflow."""
        return Geometry.of(self.space, self.search, **self.cost_kwargs)

    @property
    def budget(self) -> int:
        """Geometry.budget's rule, without computing the bounds."""
        s = self.search
        return max_trials(self.space, s.buckets, s.replicas) if s.budget is None else int(s.budget)

    def key_hash(self) -> str:
        """The recipe hash of every trial key: the training hash, or for a supernet search the
        hash of its checkpoint and evaluation settings (the supernet's metrics.json, memoised)."""
        if self.supernet_key is None:
            return self.train_hash
        return train_hash(self.config, supernet_hash(self.layout, self.supernet_key))

    def key(self, arch: str) -> str:
        return trial_key(self.space.space_id, arch, self.key_hash(), self.seed)

    def final_key(self, arch: str) -> str:
        return final_key(self.space.space_id, arch, self.config)

    # paths (strings: Snakemake input functions and pandas take them as they are)
    def children_path(self, r: int, l: int) -> str:
        return str(self.layout.children(r, l))

    def buckets_path(self, r: int, l: int) -> str:
        return str(self.layout.buckets(r, l))

    def history_path(self, r: int, l: int) -> str:
        return str(self.layout.history(r, l))

    def trial_path(self, key: str) -> str:
        return str(self.layout.trial_metrics(key))

    # stage inputs (file names only; used by the rules' input functions)
    def children_inputs(self, r: int, l: int) -> dict[str, str]:
        out = {}
        prev = stage_before(self.space, r, l)
        if prev is not None:
            out["history"] = self.history_path(*prev)
        if l > 0:
            out["parents_table"] = self.buckets_path(r, l - 1)
        if self.latency_input is not None:
            out["latency_table"] = self.latency_input
        if self.supernet_key is not None:  # the keys hold the trained supernet's hash
            out["supernet"] = str(self.layout.supernet_metrics(self.supernet_key))
        return out

    def aggregate_inputs(self, r: int, l: int) -> dict[str, str]:
        out = {"children": self.children_path(r, l)}
        prev = stage_before(self.space, r, l)
        if prev is not None:
            out["history"] = self.history_path(*prev)
        if r > 0:
            out["prev_table"] = self.buckets_path(r - 1, l)
            if l + 1 < self.space.num_layers:
                out["prev_next_children"] = self.children_path(r - 1, l + 1)
        return out


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


def read_parquet_cached(path: str) -> pd.DataFrame:
    """Parquet read memoised on (path, mtime, size): Snakemake re-evaluates the DAG after every
    checkpoint and walks all stages each time, so without this the walk is quadratic in reads."""
    return _read_parquet(*_stat_key(path))


@lru_cache(maxsize=4096)
def _read_parquet(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def _maybe(path: str | None) -> pd.DataFrame | None:
    return None if path is None else pd.read_parquet(path)


# --------------------------------------------------------------------------- stage steps


def write_children(ctx: Context, r: int, l: int, history: str | None, parents_table: str | None, out: str) -> pd.DataFrame:
    """Checkpoint step: children of (r, l) with their planned action."""
    if ctx.latency_input is not None and (r, l) == (0, 0):  # the config check ran before the table existed
        check_target_reachable(ctx.space, ctx.search, **ctx.cost_kwargs)
    hist = _maybe(history)
    evaluated = results_from_history(hist) if hist is not None else {}
    key_hash = ctx.key_hash()  # once per stage (a supernet search reads its checkpoint's record)
    kids = stage_children(ctx.geo, r, l, _maybe(parents_table),
                          lambda arch: trial_key(ctx.space.space_id, arch, key_hash, ctx.seed))
    planned, stopped = plan_stage(kids, evaluated, len(evaluated), ctx.budget)
    planned = planned.assign(stopped=stopped)
    atomic_write_parquet(out, planned)
    # Metadata for `layernas status` / audit (same content every stage, written atomically).
    # ``trials``: the trial store (absolute path; null for <results>/trials), for readers that
    # know only the results directory (Layout.of_results).
    atomic_write_json(ctx.layout.search_meta, {**ctx.signature, "target": [
        ctx.search.target_min, ctx.search.target_max], "metric": ctx.search.metric,
        "space_name": ctx.space.name, "evaluator": ctx.config["evaluator"],
        "trials": None if ctx.store is None else str(ctx.store), **supernet_meta(ctx, key_hash)})
    return planned


def supernet_meta(ctx: Context, key_hash: str) -> dict:
    """search.json's ``supernet`` (a supernet search only): the supernet's key and content hash
    and the recipe hash of the keys made with it, from which the audit recomputes every key."""
    if ctx.supernet_key is None:
        return {}
    return {"supernet": {"key": ctx.supernet_key, "hash": supernet_hash(ctx.layout, ctx.supernet_key),
                         "key_hash": key_hash}}


def read_trial_metrics(layout: Layout, key: str) -> dict:
    """A finished trial's metrics.json; its second copy (finished.json) in the moment a rerun
    of that trial by another search sharing the store has deleted metrics.json (Snakemake
    deletes a job's output before running it) and not yet restored it from that copy."""
    path = layout.trial_metrics(key)
    try:
        return read_metrics(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): a damaged trial record; `layernas audit "
                         f"{layout.root} --fix` deletes it, then the same command redoes that trial") from None
    except FileNotFoundError:
        metrics = read_finished_record(layout.trial_dir(key), key)
        if metrics is None:
            raise
        return metrics


def final_keys_of(top_path: str) -> list[str]:
    return list(pd.read_parquet(top_path)["final_key"])


class StageFailed(RuntimeError):
    """Every trial of a stage failed the same way: a cause outside the models (no data, a
    broken oracle, every model out of memory), so going on would only fail more trials."""


def check_stage_not_all_failed(ctx: Context, r: int, l: int, records: dict[str, dict]) -> None:
    """Stop the search when a stage's trials (two or more) all failed with the same kind of
    error; one failed trial among good ones is a result, and the search goes on."""
    if len(records) < 2 or any(m.get("status") != Status.FAILED for m in records.values()):
        return
    kinds = {str(m.get("error") or "").split(":")[0] for m in records.values()}
    if len(kinds) != 1:
        return
    key, first = next(iter(records.items()))
    raise StageFailed(
        f"every trial of sweep {r} layer {l} failed ({len(records)} trials), e.g. {first.get('error')} "
        f"(log: {ctx.layout.trial_dir(key) / LOG}). Fix the cause, then `layernas retry-failed {ctx.results}` "
        "and run the same snakemake command again")


def write_aggregate(ctx: Context, r: int, l: int, inputs: dict[str, str], buckets_out: str, history_out: str) -> None:
    """Aggregate step: table(r, l) and the cumulative history after (r, l)."""
    planned = pd.read_parquet(inputs["children"])
    hist = _maybe(inputs.get("history"))
    evaluated = results_from_history(hist) if hist is not None else {}
    new, records = {}, {}
    for a, key in planned.loc[planned["action"] == Action.EVALUATE, ["arch", "key"]].itertuples(index=False):
        records[key] = read_trial_metrics(ctx.layout, key)
        new[a] = metrics_accuracy(records[key])
    check_stage_not_all_failed(ctx, r, l, records)
    table, stage_hist = finish_stage(
        planned.drop(columns=["stopped"]),
        new,
        evaluated,
        _maybe(inputs.get("prev_table")),
        _maybe(inputs.get("prev_next_children")),
        l,
        ctx.search.replicas,
        0 if hist is None else len(hist),
    )
    frames = [f for f in (hist, stage_hist) if f is not None and not f.empty]
    full = pd.concat(frames, ignore_index=True) if frames else stage_hist
    atomic_write_parquet(buckets_out, table)
    atomic_write_parquet(history_out, full)


def walk(ctx: Context, get_children) -> tuple[list[tuple[int, int]], bool]:
    """All stages of the search, in order, as far as the finished checkpoints tell.

    ``get_children(r, l)`` returns the path of children(r, l) or raises (Snakemake's
    IncompleteCheckpointException) when that checkpoint has not run yet; it is called for
    every layer of every sweep on each re-evaluation (snakemake issue 3862)."""
    stages: list[tuple[int, int]] = []
    r = 0
    while True:
        had = False
        for l in range(ctx.space.num_layers):
            kids = read_parquet_cached(get_children(r, l))
            stages.append((r, l))
            had |= not kids.empty
            if not kids.empty and bool(kids["stopped"].iloc[0]):
                return stages, True
        if not had:
            return stages, False
        r += 1


def latest_tables(ctx: Context, stages: list[tuple[int, int]]) -> dict[int, str]:
    latest: dict[int, str] = {}
    for r, l in stages:
        latest[l] = ctx.buckets_path(r, l)
    return latest


def top_models(history: pd.DataFrame, config: SearchConfig, n: int) -> pd.DataFrame:
    """The n best distinct evaluated models in the target range (the final-stage input)."""
    ok = history[(history["status"] == Status.OK) & np.isfinite(history["accuracy"].astype(float))]
    ok = ok[(ok["cost"] >= config.target_min) & (ok["cost"] <= config.target_max)]
    ok = ok.sort_values(["accuracy", "cost", "arch"], ascending=[False, True, True], kind="mergesort")
    return ok.drop_duplicates("arch").head(n).reset_index(drop=True)


def write_summary(ctx: Context, stages, stopped: bool, history_in: str, tables: dict[int, str], out: dict[str, str]) -> dict:
    from layernas.core.search import best_in_target
    from layernas.workflow.outcome import explain

    hist = pd.read_parquet(history_in)
    frames = [pd.read_parquet(p) for _, p in sorted(tables.items())]
    frames = [f for f in frames if not f.empty]
    tables_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    n_top = int(ctx.config.get("final", {}).get("top_n", 3))
    top = top_models(hist, ctx.search, n_top)
    top = top.assign(final_key=[ctx.final_key(a) for a in top["arch"]])
    best = best_in_target(hist, ctx.search)
    # Loud outcomes (layernas.workflow.outcome): "found", or "no-model-in-target" with why and what to change.
    outcome, message = explain(
        hist, best, stopped, ctx.budget, lo=ctx.search.target_min, hi=ctx.search.target_max,
        metric=ctx.search.metric, settings=dataclasses.asdict(ctx.search), results=ctx.results, space=ctx.space,
    )
    summary = search_summary(
        ctx.space, ctx.search, hist, best, stopped, ctx.budget,
        evaluator=ctx.config["evaluator"], stages=len(stages),
        top=top[["arch", "key", "final_key", "cost", "accuracy"]].to_dict("records"),
        outcome=outcome, message=message,
    )
    atomic_write_parquet(out["history"], hist)
    atomic_write_parquet(out["tables"], tables_df)
    atomic_write_parquet(out["top"], top)
    atomic_write_json(out["summary"], summary)
    return summary


# --------------------------------------------------------------------------- key lookup


def arch_for_key(results: str | Path, key: str) -> str:
    """The arch of a trial key, from the children tables on disk (cluster jobs re-parse the
    Snakefile without the driver's memory, so the lookup must work from files alone)."""
    layout = Layout(results)
    top = layout.top  # a final model's key: one small table, before globbing every stage's
    if top.exists():
        arch = _arch_by_key(str(top), "final_key").get(key)
        if arch is not None:
            return arch
    for path in layout.stage_files("children.parquet"):
        arch = _arch_by_key(str(path), "key").get(key)
        if arch is not None:
            return arch
    raise KeyError(f"trial key {key} is not in any children table under {results}/search")


def _arch_by_key(path: str, column: str) -> dict[str, str]:
    """``column`` -> arch of one table, memoised like ``read_parquet_cached``: Snakemake asks
    for every trial's params on every DAG update, and a boolean filter per table per trial made
    a nothing-to-do re-run of a 1,000-trial search spend 46 s of its 64 s here (measured)."""
    return _arch_index(column, *_stat_key(path))


@lru_cache(maxsize=4096)
def _arch_index(column: str, path: str, mtime_ns: int, size: int) -> dict[str, str]:
    table = _read_parquet(path, mtime_ns, size)
    index: dict[str, str] = {}
    for k, arch in zip(table[column], table["arch"]):
        index.setdefault(str(k), str(arch))
    return index


