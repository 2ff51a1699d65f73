"""Benchmark lookup tables: what a tabular benchmark knows about each arch of its space.

Its own module because loading and indexing a table (NAS-Bench-201 arrays, a user CSV/Parquet
checked against the space's analytic costs, dense flat-index or dict lookup) is independent of
how a search is charged for querying it (`layernas.bench.harness`): studies and tests build a
`BenchTable` directly, and the harness only reads rows, costs and seed accuracies from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.bounds import cost_range
from layernas.core.cost import cost_of
from layernas.core.space import Space, load_space, parse_arch
from layernas.core.strategies.base import Target

DENSE_LIMIT = 10_000_000  # spaces up to this many archs are indexed by flat arch index


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
        """Cost of the largest model of the space (whatever its defaults)."""
        return cost_range(self.space, metric, **self.cost_kwargs)[1]

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


def nb201_table(benchmark: str, space: str | None = None) -> BenchTable:
    """A NAS-Bench-201 benchmark (nb201-cifar10, nb201-cifar100, nb201-imagenet16-120), indexed
    by the archs of ``space`` (default `nb201-topology`; any space of the same cell, e.g. one
    with other defaults)."""
    from layernas.bench import nb201

    m = nb201.mapping(space) if space else nb201.mapping()
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
        return nb201_table(name, space)
    if Path(name).suffix in (".csv", ".parquet", ".txt"):
        if not space:
            raise ValueError(f"user table {name} needs --space (the search space its arch column indexes)")
        return user_table(name, space, metric)
    raise ValueError(
        f"unknown benchmark {name!r}; choose from {', '.join(benchmark_names())} or give a .csv/.parquet table"
    )
