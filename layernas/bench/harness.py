"""Tabular benchmark harness: strategies x seeds x benchmarks on lookup tables, no training.

Why the harness owns evaluation, caching and the budget (not the strategies): so every strategy
is charged the same way. Rules, per run (one strategy, one seed, one benchmark, one target):

- A query of a new arch is one *trial*: it samples one of the arch's seed accuracies with the
  run's noise RNG (the table's seed-to-seed spread is the noise a real search sees) and, with
  ``budget_seconds``, charges the table's train time of the arch.
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
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.cost import cost_of
from layernas.core.space import Space, format_arch, load_space, parse_arch
from layernas.core.strategies import make_strategy, resolve_name
from layernas.core.strategies.base import Target

STALL = 1000  # free lookups in a row after which a run is stopped as stalled
DENSE_LIMIT = 10_000_000  # spaces up to this many archs are indexed by flat arch index


# --------------------------------------------------------------------------- tables


@dataclass
class BenchTable:
    """One benchmark's lookup table, row-aligned arrays plus the arch -> row index.

    ``val`` holds per-seed accuracies, NaN-padded after the valid seeds of each row."""

    name: str
    space: Space
    cost_kwargs: dict
    archs: np.ndarray  # (n, L)
    val: np.ndarray  # (n, S)
    test: np.ndarray | None = None  # (n,)
    train_time: np.ndarray | None = None  # (n,)
    costs: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (n,)
    dense: bool = False  # row i is the arch with flat index i
    _index: dict | None = None

    def __post_init__(self) -> None:
        self.val = np.asarray(self.val, dtype=np.float64)
        if self.val.ndim == 1:
            self.val = self.val[:, None]
        self.n_seeds = np.isfinite(self.val).sum(axis=1)
        total = np.nansum(self.val, axis=1)
        self.val_mean = np.where(self.n_seeds > 0, total / np.maximum(self.n_seeds, 1), np.nan)
        if not self.costs:
            self.costs = cost_of(self.space, self.archs, **self.cost_kwargs)
        if not self.dense:
            self._index = {tuple(int(x) for x in r): i for i, r in enumerate(self.archs)}

    def __len__(self) -> int:
        return len(self.archs)

    def rows(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Row of each arch (-1 when the table has none)."""
        if self.dense:
            a = np.asarray(batch, dtype=np.int64).reshape(-1, self.space.num_layers)
            return np.ravel_multi_index(a.T, self.space.sizes)
        return np.array([self._index.get(tuple(int(x) for x in a), -1) for a in batch], dtype=np.int64)

    def max_cost(self, metric: str = "madds") -> float:
        """Cost of the largest model of the space (the all-default arch)."""
        return float(cost_of(self.space, [self.space.default_arch()], **self.cost_kwargs)[metric][0])

    def target(self, fraction: float, metric: str = "madds") -> Target:
        if not 0 < fraction <= 1:
            raise ValueError(f"target fraction must be in (0, 1], got {fraction!r}")
        return Target(0.0, fraction * self.max_cost(metric), metric)

    def optimum(self, target: Target) -> int:
        """Row of the best in-target arch by mean validation accuracy (-1 if none)."""
        ok = np.asarray(target.contains(self.costs[target.metric]), bool) & np.isfinite(self.val_mean)
        if not ok.any():
            return -1
        return int(np.flatnonzero(ok)[np.argmax(self.val_mean[ok])])


def nb201_table(benchmark: str) -> BenchTable:
    """A NAS-Bench-201 benchmark (nb201-cifar10, nb201-cifar100, nb201-imagenet16-120)."""
    from layernas.bench import nb201

    m = nb201.mapping()
    arrays = nb201.load_by_flat(benchmark, m.space)
    return BenchTable(
        name=benchmark, space=m.space, cost_kwargs=dict(nb201.DATASETS[benchmark][1]), archs=m.all_archs(),
        val=arrays["val"], train_time=arrays["train_time"], dense=True,
    )


def user_table(path: str | Path, space: Space | str, metric: str = "madds", **cost_kwargs) -> BenchTable:
    """A user table (CSV/Parquet) with columns ``arch`` (dash-joined option indices of ``space``)
    and ``accuracy``; optional ``accuracy_<k>`` per-seed columns (noise is sampled from them),
    ``test_accuracy``, ``train_time`` (seconds) and ``cost``.

    Costs are always the space's analytic ones, because LayerNAS's feasibility filter and
    bucket bounds need the cost of archs the table does not list; a ``cost`` column is therefore
    checked against the analytic ``metric`` and refused when it disagrees (relative 1e-3)."""
    from layernas.evaluate.oracle import read_table

    space = load_space(space) if isinstance(space, (str, Path)) else space
    df = read_table(path)
    archs = np.array([parse_arch(a, space) for a in df["arch"]], dtype=np.int64).reshape(-1, space.num_layers)
    seed_cols = sorted((c for c in df.columns if c.startswith("accuracy_") and c[9:].isdigit()), key=lambda c: int(c[9:]))
    if seed_cols:
        val = df[seed_cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        val = np.sort(val, axis=1)  # NaNs last (order of seeds is irrelevant for sampling)
        val = np.where(np.isfinite(val).any(axis=1)[:, None], val, df["accuracy"].to_numpy(float)[:, None])
    else:
        val = df["accuracy"].to_numpy(float)[:, None]
    opt = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in ("test_accuracy", "train_time") if c in df}
    costs = cost_of(space, archs, **cost_kwargs)
    if "cost" in df.columns:
        given = pd.to_numeric(df["cost"], errors="coerce").to_numpy(float)
        bad = ~np.isclose(given, costs[metric], rtol=1e-3, atol=0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"table {path}: column cost disagrees with the analytic {metric} of space {space.name} for "
                f"{int(bad.sum())} archs, e.g. {df['arch'].iloc[i]} (table {given[i]:g}, analytic {costs[metric][i]:g}); "
                "the harness uses analytic costs (LayerNAS needs them for archs not in the table): "
                "drop the column or choose the matching --metric / space"
            )
    dense = math.prod(space.sizes) <= DENSE_LIMIT and len(df) == math.prod(space.sizes)
    if dense:
        order = np.argsort(np.ravel_multi_index(archs.T, space.sizes))
        archs, val = archs[order], val[order]
        opt = {k: v[order] for k, v in opt.items()}
        costs = {k: v[order] for k, v in costs.items()}
    return BenchTable(
        name=Path(path).stem, space=space, cost_kwargs=dict(cost_kwargs), archs=archs, val=val,
        test=opt.get("test_accuracy"), train_time=opt.get("train_time"), costs=costs, dense=dense,
    )


def benchmark_names() -> list[str]:
    from layernas.bench.nb201 import DATASETS

    return list(DATASETS)


def load_table(name: str, space: str | None = None, metric: str = "madds") -> BenchTable:
    """A built-in benchmark by name, or a user table by path (then ``space`` is required)."""
    if name in benchmark_names():
        return nb201_table(name)
    if Path(name).suffix in (".csv", ".parquet", ".txt"):
        if not space:
            raise ValueError(f"user table {name} needs --space (the search space its arch column indexes)")
        return user_table(name, space, metric)
    raise ValueError(
        f"unknown benchmark {name!r}; choose from {', '.join(benchmark_names())} or give a .csv/.parquet table"
    )


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
            tt = float(table.train_time[r]) if table.train_time is not None else 0.0
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
) -> BenchResult:
    """Every (benchmark, target fraction, strategy, seed), over ``workers`` forked processes."""
    if (budget is None) == (budget_seconds is None):
        raise ValueError("give exactly one of budget (trials) or budget_seconds")
    if budget is not None and budget <= 0:
        raise ValueError(f"budget must be a positive number of trials, got {budget}")
    if budget_seconds is not None and budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    names = [resolve_name(s) for s in strategies]
    options = {resolve_name(k): v for k, v in (options or {}).items()}
    for name in names:  # fail on bad options before forking anything
        make_strategy(name, next(iter(tables.values())).space, Target(0, 1.0), 0, **options.get(name, {}))
    specs = [
        RunSpec(b, float(f), s, int(seed), budget, budget_seconds, metric, noise, tuple(sorted(options.get(s, {}).items())))
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


# --------------------------------------------------------------------------- summaries


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, target, strategy): best constrained accuracy mean/std and efficiency."""
    def agg(g: pd.DataFrame) -> pd.Series:
        reached = g["trials_to_optimum"].dropna()
        return pd.Series({
            "runs": len(g),
            "with_incumbent": g["best_val"].notna().mean(),
            "val_mean": g["best_val"].mean(),
            "val_std": g["best_val"].std(ddof=0),
            "test_mean": g["best_test"].mean(),
            "test_std": g["best_test"].std(ddof=0),
            "regret_mean": g["regret"].mean(),
            "optimum_val": g["optimum_val"].iloc[0],
            "hit_rate": g["found_optimum"].mean(),
            "evaluated_optimum": len(reached) / len(g),
            "trials_to_optimum_median": reached.median() if len(reached) else math.nan,
            "trials_mean": g["trials"].mean(),
            "cached_mean": g["cached"].mean(),
            "seconds_mean": g["seconds"].mean(),
            "stopped_done": (g["stop"] == "done").mean(),
            "wall_s_mean": g["wall_s"].mean(),
        })

    keys = ["benchmark", "target_fraction", "strategy"]
    order = {k: list(dict.fromkeys(runs[k])) for k in keys}
    out = runs.groupby(keys, sort=False)[list(runs.columns.drop(keys))].apply(agg).reset_index()
    return out.sort_values(keys, key=lambda s: s.map({v: i for i, v in enumerate(order[s.name])})).reset_index(drop=True)


def curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and quartiles over seeds of the incumbent curve (NaN: nothing in target yet,
    left out of the statistics; ``n`` says how many runs had an incumbent)."""
    g = curves.groupby(["benchmark", "target_fraction", "strategy", "x"], sort=False)["best_val"]
    return g.agg(
        mean="mean", std=lambda s: s.std(ddof=0), q25=lambda s: s.quantile(0.25),
        q75=lambda s: s.quantile(0.75), n="count",
    ).reset_index()


def markdown_table(summary: pd.DataFrame) -> str:
    has_test = summary["test_mean"].notna().any()
    head = "| benchmark | target | strategy | best val acc (mean ± std) | " + ("test acc | " if has_test else "")
    head += "regret | optimum reported | optimum evaluated (median trial) | trials | cached |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in summary.iterrows():
        acc = "–" if math.isnan(r["val_mean"]) else f"{r['val_mean']:.2f} ± {r['val_std']:.2f}"
        if r["with_incumbent"] < 1:
            acc += f" ({r['with_incumbent']:.0%} of runs found an in-target arch)"
        cells = [r["benchmark"], f"{r['target_fraction']:.0%}", r["strategy"], acc]
        if has_test:
            cells.append(f"{r['test_mean']:.2f} ± {r['test_std']:.2f}")
        ev = f"{r['evaluated_optimum']:.0%}"
        if not math.isnan(r["trials_to_optimum_median"]):
            ev += f" ({r['trials_to_optimum_median']:.0f})"
        cells += [f"{r['regret_mean']:.2f}", f"{r['hit_rate']:.0%}", ev, f"{r['trials_mean']:.0f}", f"{r['cached_mean']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot_curves(cs: pd.DataFrame, path: str | Path, x_unit: str = "trials") -> None:
    """One panel per (target, benchmark): mean incumbent accuracy with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(cs["benchmark"]))
    fracs = list(dict.fromkeys(cs["target_fraction"]))
    fig, axes = plt.subplots(len(fracs), len(benches), figsize=(4.6 * len(benches), 3.4 * len(fracs)), squeeze=False)
    colors = {"layernas": "C3", "random": "C0", "evolution": "C2", "ppo": "C1"}
    for i, f in enumerate(fracs):
        for j, b in enumerate(benches):
            ax = axes[i][j]
            sub = cs[(cs["benchmark"] == b) & (cs["target_fraction"] == f)]
            lows, highs = [], []
            for s in dict.fromkeys(sub["strategy"]):
                d = sub[sub["strategy"] == s]
                ax.plot(d["x"], d["mean"], label=s, color=colors.get(s), lw=1.4)
                ax.fill_between(d["x"], d["mean"] - d["std"], d["mean"] + d["std"], color=colors.get(s), alpha=0.15, lw=0)
                d = d.dropna(subset=["mean"])
                if len(d):
                    lows.append(d["mean"].iloc[len(d) // 10])
                    highs.append(d["mean"].iloc[-1] + d["std"].fillna(0).iloc[-1])
            if lows:
                ax.set_ylim(min(lows) - 0.3, max(highs) + 0.3)
            ax.set_title(f"{b}, target {f:.0%} of max cost", fontsize=9)
            ax.set_xlabel("trials" if x_unit == "trials" else "simulated training seconds")
            ax.set_ylabel("best in-target val acc (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
