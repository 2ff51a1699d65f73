"""LayerNAS as pure state transitions over pandas DataFrames (no I/O, no torch).

The search is a recurrence over bucket tables ("memorial tables" M_l of the paper), one
snapshot per (sweep r, layer l), which the in-process driver (`layernas.core.driver`) and the
Snakemake workflow (`layernas.workflow.stages`) both evaluate with the functions of this module,
so they produce identical tables:

    children(r, 0) = every option of layer 0, later layers at default      (r == 0 only)
    children(r, l) = expand(select_parents(table(r, l-1), R), l)           (l >= 1)
    table(r, l)    = update(mark_expanded(table(r-1, l), parents of children(r-1, l+1)),
                            evaluated feasible children(r, l), K)

The search is done after a sweep that generated no children, or when the trial budget is
spent. Decisions (the paper leaves them open; see docs/algorithm.md):

- Layers are 0-based here and in file names (the paper's layer i is our layer i-1).
- Eq. 4 bounds are per layer and come from the space alone (`bounds.layer_bounds`): the exact
  cheapest and dearest layer-l candidate (s_0..s_l, o_{l+1}..), later layers at their
  defaults. Bounds never move, so resumes are stable. The last bucket is closed (cost ==
  maxCost lands in bucket H-1).
- Feasibility: a child is dropped untrained when its cheapest completion is above the target
  max, or its dearest completion is below the target min, both exact over every completion
  (`bounds.completion_costs`), whatever the defaults. Dropped children are kept in the
  history with the reason.
- Selection (``select``): each sweep expands up to R not-yet-expanded candidates of each
  layer, ``best`` accuracy first (ties: lower cost, then arch string), from the ``dearest``
  bucket down (best first within a bucket: under a budget the candidates that use most of
  the cost go first), or drawn at ``random`` as the paper's Appendix I does, from a generator
  seeded by (seed, sweep, layer), so both drivers draw the same parents and every run is
  reproducible. The order matters most when a budget stops the search early: a search run to
  the end expands every candidate its tables still keep, whatever the order (only which
  candidates were expanded before being pushed out of their bucket can differ).
- Child order (``child_order``): a stage's children are listed ``parent`` by parent (each
  parent's options in space order) or ``interleave``d across parents (option 0 of every
  parent, then option 1, ...); the budget cuts the stage in that order, so interleaving
  spreads a budget that ends mid-stage over all the stage's parents.
- Dedup: an arch is evaluated at most once; e.g. the default-option child of a candidate is
  the candidate itself and reuses its result (status ``cached``).
- Budget: at most ``budget`` new evaluations; by default the paper's bound H*K*sum|S_i|.
  In the loop form a candidate expanded early can later be pushed out of its bucket by a
  better one, which is then expanded too, so without a cap the count could in principle pass
  the bound; the cap keeps the paper's complexity promise and is reported when it bites.
- Failed evaluations (accuracy None/NaN) count as trials and never enter a bucket table.

This module holds the stateless steps of one stage (config, Eq. 4 geometry, children, plan,
finish) and nothing that keeps state between stages: the drivers own that. The tables' own
operations (insert, rank, mark, select) are `layernas.core.tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from layernas.core.bounds import completion_costs, cost_range, layer_bounds
from layernas.core.cost import METRICS, cost_of
from layernas.core.space import Space, format_arch, parse_arch
from layernas.core.strategies.base import Target
from layernas.core.tables import mark_expanded, select_parents, update_table

CHILD_COLUMNS = [
    "sweep", "layer", "arch", "parent", "cost", "min_cost", "bucket", "feasible", "reason", "key",
]
HISTORY_COLUMNS = [
    "order", "sweep", "layer", "arch", "parent", "bucket", "cost", "min_cost", "accuracy",
    "status", "reason", "key",
]


SELECT_MODES = ("best", "dearest", "random")
CHILD_ORDERS = ("parent", "interleave")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that changes the trajectory of a search (and nothing else)."""

    target_min: float
    target_max: float
    buckets: int = 100  # H
    replicas: int = 3  # K
    per_sweep: int = 3  # R
    budget: int | None = None  # None: the paper's bound H*K*sum|S_i|
    metric: str = "madds"
    select: str = "best"  # which unexpanded candidates become parents: best | dearest | random
    seed: int = 0  # draws of select: random
    child_order: str = "parent"  # order of a stage's children (the budget cuts it): parent | interleave

    def __post_init__(self) -> None:
        for name in ("buckets", "replicas", "per_sweep"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.budget is not None and (not isinstance(self.budget, (int, np.integer)) or self.budget <= 0):
            raise ValueError(f"budget must be a positive integer or None, got {self.budget!r}")
        if not self.target_min <= self.target_max:
            raise ValueError(f"target_min ({self.target_min}) must be <= target_max ({self.target_max})")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.child_order not in CHILD_ORDERS:
            raise ValueError(f"child_order must be one of {', '.join(CHILD_ORDERS)}, got {self.child_order!r}")

    @property
    def target(self) -> Target:
        return Target(self.target_min, self.target_max, self.metric)


def max_trials(space: Space, buckets: int = 100, replicas: int = 3) -> int:
    """The paper's complexity bound H*K*sum|S_i| on the number of trained candidates."""
    return int(buckets * replicas * sum(space.sizes))


@dataclass(frozen=True)
class Geometry:
    """Per-space constants of a search: Eq. 4 bounds and cost options."""

    space: Space
    config: SearchConfig
    lo: np.ndarray
    hi: np.ndarray
    cost_kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, space: Space, config: SearchConfig, **cost_kwargs) -> "Geometry":
        lo, hi = layer_bounds(space, config.metric, **cost_kwargs)
        return cls(space, config, lo, hi, dict(cost_kwargs))

    @property
    def budget(self) -> int:
        bound = max_trials(self.space, self.config.buckets, self.config.replicas)
        return bound if self.config.budget is None else int(self.config.budget)


def check_target_reachable(space: Space, config: SearchConfig, **cost_kwargs) -> None:
    """Fail before any work when no model of the space lands in the target range."""
    c = cost_range(space, config.metric, **cost_kwargs)
    if config.target_max < c[0] or config.target_min > c[1]:
        raise ValueError(
            f"target {config.metric} range [{config.target_min:g}, {config.target_max:g}] is unreachable: "
            f"models of space {space.name} cost between {c[0]:g} and {c[1]:g}"
        )


# --------------------------------------------------------------------------- pure steps


def bucket_of(cost: np.ndarray, lo: float, hi: float, buckets: int) -> np.ndarray:
    """Eq. 4: h = floor((cost - minCost) / (maxCost - minCost) * H), last bucket closed."""
    cost = np.asarray(cost, dtype=np.float64)
    if hi <= lo:
        return np.zeros(cost.shape, dtype=np.int64)
    h = np.floor((cost - lo) / (hi - lo) * buckets).astype(np.int64)
    return np.clip(h, 0, buckets - 1)


def _archs(values: Iterable[str]) -> np.ndarray:
    rows = [parse_arch(a) for a in values]
    return np.asarray(rows, dtype=np.int64)


def make_children(
    geo: Geometry, sweep: int, layer: int, parents: list[str], key_fn: Callable[[str], str]
) -> pd.DataFrame:
    """Children of ``parents`` at ``layer`` (for layer 0: every option), with Eq. 4 bucket,
    cost, cheapest completion and the feasibility verdict."""
    space, cfg = geo.space, geo.config
    n = space.sizes[layer]
    if layer == 0:
        base = np.tile(np.asarray(space.default_arch(), dtype=np.int64), (n, 1))
        base[:, 0] = np.arange(n)
        parent_col = [""] * n
    else:
        if not parents:
            return pd.DataFrame({c: [] for c in CHILD_COLUMNS})
        p = _archs(parents)
        base = np.repeat(p, n, axis=0)
        base[:, layer] = np.tile(np.arange(n), len(parents))
        parent_col = [a for a in parents for _ in range(n)]
    lo_c, hi_c = completion_costs(space, base, layer, cfg.metric, **geo.cost_kwargs)
    own = cost_of(space, base, **geo.cost_kwargs)[cfg.metric]  # later layers at their defaults
    feasible = (lo_c <= cfg.target_max) & (hi_c >= cfg.target_min)
    reason = np.where(
        lo_c > cfg.target_max,
        np.char.add("cheapest completion ", np.char.add(np.char.mod("%g", lo_c), f" > target max {cfg.target_max:g}")),
        np.where(
            hi_c < cfg.target_min,
            np.char.add("most expensive completion ", np.char.add(np.char.mod("%g", hi_c), f" < target min {cfg.target_min:g}")),
            "",
        ),
    )
    archs = [format_arch(row) for row in base]
    return pd.DataFrame(
        {
            "sweep": sweep,
            "layer": layer,
            "arch": archs,
            "parent": parent_col,
            "cost": own,
            "min_cost": lo_c,
            "bucket": bucket_of(own, geo.lo[layer], geo.hi[layer], cfg.buckets),
            "feasible": feasible,
            "reason": reason.astype(str),
            "key": [key_fn(a) for a in archs],
        },
        columns=CHILD_COLUMNS,
    )


def best_in_target(history: pd.DataFrame, config: SearchConfig) -> dict | None:
    """Best evaluated model whose cost is in the target range (ties: cheaper, then arch)."""
    if history.empty:
        return None
    ok = history[history["status"].isin(["ok", "cached"]) & np.isfinite(history["accuracy"].astype(float))]
    ok = ok[(ok["cost"] >= config.target_min) & (ok["cost"] <= config.target_max)]
    if ok.empty:
        return None
    ok = ok.sort_values(["accuracy", "cost", "arch"], ascending=[False, True, True], kind="mergesort")
    row = ok.iloc[0]
    return {"arch": row["arch"], "cost": float(row["cost"]), "accuracy": float(row["accuracy"]), "key": row["key"]}


# --------------------------------------------------------------------------- one stage


def stage_children(
    geo: Geometry, sweep: int, layer: int, prev_layer_table: pd.DataFrame | None, key_fn: Callable[[str], str]
) -> pd.DataFrame:
    """children(r, l): every layer-0 option in sweep 0; no layer-0 children later (M_0 is
    complete after sweep 0); else the children of up to R unexpanded candidates of table(r, l-1)."""
    if layer == 0:
        kids = make_children(geo, sweep, 0, [], key_fn)
        return kids if sweep == 0 else kids.iloc[0:0]
    cfg = geo.config
    rng = np.random.default_rng([cfg.seed, sweep, layer]) if cfg.select == "random" else None
    parents = select_parents(prev_layer_table, cfg.per_sweep, cfg.select, rng)
    kids = make_children(geo, sweep, layer, parents, key_fn)
    if cfg.child_order == "interleave" and len(parents) > 1:
        n = geo.space.sizes[layer]  # children are parent-major: row i is option i % n of parent i // n
        kids = kids.iloc[np.lexsort((np.arange(len(kids)) // n, np.arange(len(kids)) % n))].reset_index(drop=True)
    return kids


def plan_stage(
    children: pd.DataFrame, evaluated: Container[str], trials_so_far: int, budget: int
) -> tuple[pd.DataFrame, bool]:
    """Decide each child's action: dropped (infeasible), cached (evaluated before), evaluate,
    or budget (feasible and new, but the budget is spent). Returns (children + action, stopped)."""
    feas = children["feasible"].to_numpy(bool)
    fresh = np.fromiter((a not in evaluated for a in children["arch"]), bool, len(children))
    need = feas & fresh
    room = max(budget - trials_so_far, 0)
    stopped = int(need.sum()) > room
    evaluate = need & (np.cumsum(need) <= room)
    action = np.select([~feas, ~fresh, evaluate], ["dropped", "cached", "evaluate"], default="budget")
    return children.assign(action=action), bool(stopped)


def finish_stage(
    planned: pd.DataFrame,
    new_results: Mapping[str, float],
    evaluated: Mapping[str, float],
    prev_same_layer: pd.DataFrame | None,
    next_children_prev_sweep: pd.DataFrame | None,
    layer: int,
    replicas: int,
    order0: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """table(r, l) and the stage's history rows, from the planned children and their results.

    table(r, l) = update(mark_expanded(table(r-1, l), parents of children(r-1, l+1)),
                         children of this stage evaluated ok now or before)
    """
    arch = planned["arch"].tolist()
    action = planned["action"].to_numpy(str)
    acc = np.full(len(arch), np.nan)
    for i, (a, act) in enumerate(zip(arch, action)):
        if act == "evaluate":
            if a not in new_results:
                raise ValueError(f"no result for arch {a} (key {planned['key'].iloc[i]})")
            acc[i] = new_results[a]
        elif act == "cached":
            acc[i] = evaluated[a]
    status = np.select(
        [action == "dropped", (action == "evaluate") & np.isfinite(acc), action == "evaluate", action == "cached"],
        ["dropped", "ok", "failed", "cached"],
        default="budget",
    )
    reason = np.where(status == "dropped", planned["reason"].to_numpy(str), "")
    reason = np.where(status == "budget", "budget spent", reason)
    history = pd.DataFrame(
        {
            "order": np.arange(order0, order0 + len(arch), dtype=np.int64),
            "sweep": planned["sweep"].to_numpy(np.int64) if len(arch) else np.array([], np.int64),
            "layer": layer,
            "arch": arch,
            "parent": planned["parent"].to_numpy(),
            "bucket": planned["bucket"].to_numpy(np.int64),
            "cost": planned["cost"].to_numpy(float),
            "min_cost": planned["min_cost"].to_numpy(float),
            "accuracy": acc,
            "status": status,
            "reason": reason,
            "key": planned["key"].to_numpy(),
        },
        columns=HISTORY_COLUMNS,
    )
    nxt = next_children_prev_sweep
    parents = [] if nxt is None or nxt.empty else list(dict.fromkeys(nxt["parent"]))
    usable = history[np.isin(status, ["ok", "cached"]) & np.isfinite(acc)]
    table = update_table(mark_expanded(prev_same_layer, parents), usable, layer, replicas)
    return table, history


def results_from_history(history: pd.DataFrame) -> dict[str, float]:
    """arch -> accuracy (nan for failed) of every evaluation recorded in a history."""
    done = history[history["status"].isin(["ok", "failed"])]
    return dict(zip(done["arch"], done["accuracy"].astype(float)))


def stage_after(space: Space, sweep: int, layer: int) -> tuple[int, int]:
    return (sweep, layer + 1) if layer + 1 < space.num_layers else (sweep + 1, 0)


def stage_before(space: Space, sweep: int, layer: int) -> tuple[int, int] | None:
    if layer > 0:
        return sweep, layer - 1
    return None if sweep == 0 else (sweep - 1, space.num_layers - 1)
