"""Tabular benchmark harness: strategies x seeds x benchmarks on lookup tables, no training.

Why the harness owns evaluation, caching and the budget (not the strategies): so every strategy
is charged the same way. Rules, per run (one strategy, one seed, one benchmark, one target):

- A query of a new arch is one *trial*: it samples one of the arch's seed accuracies with the
  run's noise RNG (the table's seed-to-seed spread is the noise a real search sees) and, with
  ``budget_seconds``, charges the table's train time of the arch times ``time_scale`` (e.g.
  12/200: NB201's train_time is the 200-epoch time, NATS-Bench's hp=12 search pays 12 epochs).
- A query of an arch evaluated before in the same run is a free *cached* lookup answering the
  value observed the first time; an arch missing from a table is answered as failed (None),
  also free, and counted as *missing*. A strategy stuck on free lookups (``STALL`` in a row)
  is stopped and reported as ``stalled``.
- The run stops when the budget is spent (a batch that would overshoot is truncated), when the
  strategy is done, or when it stalls; unused budget is reported (``trials``, ``seconds``).
- The reported best is the in-target arch with the highest *observed* accuracy (what the
  strategy believes is best), judged by its mean validation accuracy over the table's seeds
  (plus test accuracy when the table has it): standard practice for NAS benchmarks.
- Targets are fractions of the largest model's cost (the all-default arch): the range is
  [0, fraction * max cost] for every strategy.

This module is only those charging rules and the process pool that applies them to many runs:
the tables are loaded by `layernas.bench.tables`, and finished runs are aggregated across seeds
by `layernas.bench.summary`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layernas.bench.tables import BenchTable
from layernas.core.space import format_arch
from layernas.core.strategies import make_strategy, resolve_name
from layernas.core.strategies.base import Target

STALL = 1000  # free lookups in a row after which a run is stopped as stalled


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunSpec:
    benchmark: str
    fraction: float
    strategy: str
    seed: int
    budget: int | None = None  # trials
    budget_seconds: float | None = None
    metric: str = "madds"
    noise: bool = True
    options: tuple = ()  # sorted (key, value) pairs for the strategy
    time_scale: float = 1.0  # seconds charged per new arch = table train_time * time_scale


def run_one(table: BenchTable, spec: RunSpec) -> tuple[dict, np.ndarray, np.ndarray]:
    """One search. Returns (result row, cumulative train seconds per trial, incumbent mean
    validation accuracy per trial)."""
    if spec.budget is None and spec.budget_seconds is None:
        raise ValueError("a run needs a budget in trials or in seconds")
    if spec.budget_seconds is not None and table.train_time is None:
        raise ValueError(f"benchmark {table.name} has no train_time column: use a trial budget")
    t0 = time.perf_counter()
    target = table.target(spec.fraction, spec.metric)
    in_target = np.asarray(target.contains(table.costs[spec.metric]), bool)
    strat = make_strategy(spec.strategy, table.space, target, spec.seed, table.cost_kwargs, **dict(spec.options))
    noise = np.random.default_rng([spec.seed, 0x5EED])
    max_trials = spec.budget if spec.budget is not None else np.iinfo(np.int64).max
    max_sec = spec.budget_seconds if spec.budget_seconds is not None else math.inf
    observed: dict[int, float] = {}
    inc_row, inc_obs = -1, -math.inf
    curve, secs = [], []
    trials, cached, missing, streak, seconds = 0, 0, 0, 0, 0.0
    opt_row = table.optimum(target)
    opt_val = float(table.val_mean[opt_row]) if opt_row >= 0 else math.nan
    with np.errstate(invalid="ignore"):  # ties count: any in-target arch as good as the optimum
        is_opt = in_target & (table.val_mean >= opt_val - 1e-9)
    first_opt = None
    stop = "done"
    while True:
        if trials >= max_trials:
            stop = "budget"
            break
        batch = strat.ask()
        if not batch:
            break
        rows = table.rows(batch)
        results, truncated = [], False
        for arch, r in zip(batch, rows):
            r = int(r)
            if r < 0:
                missing += 1
                streak += 1
                results.append((arch, None))
                continue
            if r in observed:
                cached += 1
                streak += 1
                v = observed[r]
                results.append((arch, None if math.isnan(v) else v))
                continue
            tt = float(table.train_time[r]) * spec.time_scale if table.train_time is not None else 0.0
            if trials >= max_trials or seconds + tt > max_sec:
                truncated = True
                break
            k = int(table.n_seeds[r])
            v = float(table.val[r, noise.integers(k)]) if (spec.noise and k > 1) else float(table.val_mean[r])
            observed[r] = v
            trials += 1
            seconds += tt
            streak = 0
            if first_opt is None and is_opt[r]:
                first_opt = trials
            if in_target[r] and v > inc_obs:
                inc_row, inc_obs = r, v
            curve.append(table.val_mean[inc_row] if inc_row >= 0 else np.nan)
            secs.append(seconds)
            results.append((arch, None if math.isnan(v) else v))
        if truncated:
            stop = "budget"
            break
        if streak >= STALL:
            stop = "stalled"
            break
        strat.tell(results)
        if strat.done:
            break
    best_val = float(table.val_mean[inc_row]) if inc_row >= 0 else math.nan
    row = {
        "benchmark": spec.benchmark,
        "target_fraction": spec.fraction,
        "target": target.hi,
        "strategy": resolve_name(spec.strategy),
        "seed": spec.seed,
        "trials": trials,
        "cached": cached,
        "missing": missing,
        "seconds": seconds,
        "stop": stop,
        "best_arch": format_arch(table.archs[inc_row]) if inc_row >= 0 else None,
        "best_observed": inc_obs if inc_row >= 0 else math.nan,
        "best_val": best_val,
        "best_test": float(table.test[inc_row]) if (table.test is not None and inc_row >= 0) else math.nan,
        "best_cost": float(table.costs[spec.metric][inc_row]) if inc_row >= 0 else math.nan,
        "optimum_val": opt_val,
        "regret": opt_val - best_val,
        "found_optimum": bool(inc_row >= 0 and is_opt[inc_row]),
        "trials_to_optimum": first_opt if first_opt is not None else math.nan,
        "wall_s": time.perf_counter() - t0,
    }
    return row, np.asarray(secs, float), np.asarray(curve, float)


# --------------------------------------------------------------------------- many runs

_TABLES: dict[str, BenchTable] = {}  # filled before the pool forks, read by the workers


def _worker(spec: RunSpec):
    return spec, *run_one(_TABLES[spec.benchmark], spec)


def step_curve(x_at: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Value of a step function (y after the event at x_at) at each grid point (NaN before)."""
    idx = np.searchsorted(x_at, grid, side="right") - 1
    out = np.full(len(grid), np.nan)
    ok = idx >= 0
    out[ok] = y[idx[ok]]
    return out


@dataclass
class BenchResult:
    runs: pd.DataFrame
    curves: pd.DataFrame  # long: benchmark, target_fraction, strategy, seed, x, best_val
    x_unit: str  # "trials" or "seconds"
    wall_s: float
    workers: int


def run_bench(
    tables: dict[str, BenchTable],
    strategies: Sequence[str],
    seeds: Sequence[int],
    fractions: Sequence[float],
    budget: int | None = None,
    budget_seconds: float | None = None,
    metric: str = "madds",
    noise: bool = True,
    options: dict[str, dict] | None = None,
    workers: int | None = None,
    grid_points: int = 200,
    progress: Callable[[str], None] | None = None,
    time_scale: float = 1.0,
) -> BenchResult:
    """Every (benchmark, target fraction, strategy, seed), over ``workers`` forked processes.
    ``time_scale`` multiplies the table's train_time wherever seconds are charged."""
    if (budget is None) == (budget_seconds is None):
        raise ValueError("give exactly one of budget (trials) or budget_seconds")
    if budget is not None and budget <= 0:
        raise ValueError(f"budget must be a positive number of trials, got {budget}")
    if budget_seconds is not None and budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
    names = [resolve_name(s) for s in strategies]
    options = {resolve_name(k): v for k, v in (options or {}).items()}
    for name in names:  # fail on bad options before forking anything
        make_strategy(name, next(iter(tables.values())).space, Target(0, 1.0), 0, **options.get(name, {}))
    specs = [
        RunSpec(b, float(f), s, int(seed), budget, budget_seconds, metric, noise,
                tuple(sorted(options.get(s, {}).items())), float(time_scale))
        for b in tables for f in fractions for s in names for seed in seeds
    ]
    workers = max(1, min(workers or (os.cpu_count() or 1), len(specs)))
    _TABLES.clear()
    _TABLES.update(tables)
    t0 = time.perf_counter()
    out = []
    if workers == 1:
        it = map(_worker, specs)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers)
        it = pool.imap_unordered(_worker, specs, chunksize=max(1, len(specs) // (workers * 16)))
    try:
        step = max(1, len(specs) // 10, 50)
        for i, res in enumerate(it, 1):
            out.append(res)
            if progress is not None and (i % step == 0 or i == len(specs)):
                progress(f"{i}/{len(specs)} runs, {time.perf_counter() - t0:.1f} s")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    wall = time.perf_counter() - t0
    fr = [float(f) for f in fractions]
    out.sort(key=lambda r: (list(tables).index(r[0].benchmark), fr.index(r[0].fraction), names.index(r[0].strategy), r[0].seed))
    runs = pd.DataFrame([r[1] for r in out])
    frames = []
    if budget is not None:
        x_unit, grid = "trials", np.arange(1, budget + 1, dtype=float)
    else:
        x_unit, grid = "seconds", np.linspace(0, budget_seconds, grid_points + 1)[1:]
    for spec, _row, secs, curve in out:
        x_at = np.arange(1, len(curve) + 1, dtype=float) if x_unit == "trials" else secs
        y = step_curve(x_at, curve, grid)
        frames.append(pd.DataFrame({
            "benchmark": spec.benchmark, "target_fraction": spec.fraction, "strategy": spec.strategy,
            "seed": spec.seed, "x": grid, "best_val": y.astype(np.float32),
        }))
    curves = pd.concat(frames, ignore_index=True)
    return BenchResult(runs, curves, x_unit, wall, workers)
