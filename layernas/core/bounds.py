"""Exact cost bounds over completions, by dynamic programming over the chain of layers.

Why not "last option cheapest, option 0 dearest": in a MobileNet block the expansion conv is
skipped when the expanded width equals the input width, so the cheapest option of one layer
depends on its neighbours, and a default option (`default:` in a space file) need not be the
dearest. The search needs, for a prefix s_0..s_l, the true minimum and maximum cost over every
completion s_{l+1}..s_{L-1}: a child whose cheapest completion is inside the target must not
be dropped.

How: the cost is a sum of pieces (`cost.cost_pieces`), each reading a few layers. Tabulating a
piece over the options of its layers gives a factor; eliminating the free layers one at a time
from the last (min or max over that layer of the sum of the factors that read it) leaves
factors over the fixed prefix only, evaluated for many prefixes by table lookups. A block
reads at most its own layer and the block-filter layers around it, so the tables stay small
(at most a few thousand entries for the paper's spaces) and nothing is enumerated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layernas.core.arch import Space, SpaceError
from layernas.core.cost import (
    Context,
    Resolver,
    as_archs,
    cost_of,
    cost_pieces,
    evaluate_pieces,
    latency_table_of,
)
from layernas.core.latency import LatencyError

MAX_FACTOR = 20_000_000  # entries of one combined table; far above any shipped space


@dataclass(frozen=True)
class Factor:
    """A cost term as a table over the options of the layers it reads (sorted indices)."""

    layers: tuple[int, ...]
    table: np.ndarray  # shape: (|S_j| for j in layers)

    def at(self, archs: np.ndarray) -> np.ndarray:
        if not self.layers:
            return np.full(len(archs), float(self.table))
        return self.table[tuple(archs[:, j] for j in self.layers)]


_CACHE: dict[tuple, Any] = {}


def _ctx_key(space: Space, ctx: dict) -> tuple:
    c = Context.of(space, **ctx)
    table = latency_table_of(c)  # memoised by path, size and mtime: a re-measured table is new
    return (space.space_id, c.input_size, c.input_channels, c.num_classes, id(table) if table else None)


def factors(space: Space, metric: str = "madds", **ctx) -> list[Factor]:
    """The cost of ``space`` as factors: cost(arch) == sum(f.at(arch) for f in factors)."""
    key = ("factors", metric, *_ctx_key(space, ctx))
    if key not in _CACHE:
        _CACHE[key] = _tabulate(space, metric, Context.of(space, **ctx))
    return _CACHE[key]


def _tabulate(space: Space, metric: str, ctx: Context) -> list[Factor]:
    table = latency_table_of(ctx) if metric == "latency" else None
    if metric == "latency" and table is None:
        raise LatencyError("metric latency needs a latency table (cost option latency_table)")
    sizes = space.sizes
    default = np.asarray(space.default_arch(), dtype=np.int64)[None, :]
    index = {layer.name: j for j, layer in enumerate(space.layers)}
    out = []
    for piece in cost_pieces(space, ctx):
        probe = Resolver(space, default)
        piece(probe)
        layers = tuple(sorted(index[n] for n in probe.used))
        shape = tuple(sizes[j] for j in layers)
        if math.prod(shape) > MAX_FACTOR:
            raise SpaceError(f"a cost term reads layers {[space.layers[j].name for j in layers]}: too many option combinations to tabulate")
        rows = np.repeat(default, math.prod(shape), axis=0)
        if layers:
            for j, col in zip(layers, np.indices(shape).reshape(len(layers), -1)):
                rows[:, j] = col
        value = evaluate_pieces(space, [piece], rows, table)[metric]
        out.append(Factor(layers, value.reshape(shape) if layers else np.float64(value[0])))
    return out


def _combine(fs: Sequence[Factor], sizes: Sequence[int]) -> Factor:
    layers = tuple(sorted({j for f in fs for j in f.layers}))
    if math.prod(sizes[j] for j in layers) > MAX_FACTOR:
        raise SpaceError(f"layers {list(layers)} interact too widely for exact bounds")
    total = np.zeros(tuple(sizes[j] for j in layers))
    for f in fs:
        total = total + np.asarray(f.table).reshape([sizes[j] if j in f.layers else 1 for j in layers])
    return Factor(layers, total)


def eliminate(fs: list[Factor], free: Sequence[int], sizes: Sequence[int], reduce) -> list[Factor]:
    """Minimise (``reduce=np.min``) or maximise over the ``free`` layers, last layer first;
    returns factors over the remaining layers whose sum is the bound."""
    fs = list(fs)
    for j in sorted(free, reverse=True):
        touching = [f for f in fs if j in f.layers]
        if not touching:
            continue
        fs = [f for f in fs if j not in f.layers]
        comb = _combine(touching, sizes)
        axis = comb.layers.index(j)
        fs.append(Factor(comb.layers[:axis] + comb.layers[axis + 1:], reduce(comb.table, axis=axis)))
    return fs


def _fix(fs: list[Factor], values: dict[int, int]) -> list[Factor]:
    """Factors with the layers in ``values`` fixed to those options (their axes sliced away)."""
    out = []
    for f in fs:
        idx = tuple(values.get(j, slice(None)) for j in f.layers)
        keep = tuple(j for j in f.layers if j not in values)
        out.append(Factor(keep, np.asarray(f.table)[idx] if f.layers else f.table))
    return out


def _total(fs: list[Factor]) -> float:
    return float(sum(float(np.asarray(f.table)) for f in fs))


def completion_costs(space: Space, archs: Any, layer: int, metric: str = "madds", **ctx) -> tuple[np.ndarray, np.ndarray]:
    """Exact (min, max) cost reachable from each arch by changing only the layers after ``layer``."""
    a = as_archs(space, archs)
    out = []
    for kind, reduce in (("min", np.min), ("max", np.max)):
        key = ("completion", kind, layer, metric, *_ctx_key(space, ctx))
        if key not in _CACHE:
            free = range(layer + 1, space.num_layers)
            _CACHE[key] = eliminate(factors(space, metric, **ctx), free, space.sizes, reduce)
        total = np.zeros(len(a))
        for f in _CACHE[key]:
            total += f.at(a)
        out.append(total)
    return out[0], out[1]


def layer_bounds(space: Space, metric: str = "madds", **ctx) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4's minCost(M_l), maxCost(M_l) for every layer l (0-based): the exact cheapest and
    dearest layer-l candidate (s_0..s_l, o_{l+1}..o_{L-1}), later layers at their defaults.
    They depend only on the space, so bucket bounds never move and resumes are stable."""
    key = ("layer_bounds", metric, space.default_arch(), *_ctx_key(space, ctx))
    if key not in _CACHE:
        L, d = space.num_layers, space.default_arch()
        lo, hi = np.zeros(L), np.zeros(L)
        for l in range(L):
            fixed = _fix(factors(space, metric, **ctx), {j: d[j] for j in range(l + 1, L)})
            lo[l] = _total(eliminate(fixed, range(l + 1), space.sizes, np.min))
            hi[l] = _total(eliminate(fixed, range(l + 1), space.sizes, np.max))
        _CACHE[key] = (lo, hi)
    lo, hi = _CACHE[key]
    return lo.copy(), hi.copy()


def cost_range(space: Space, metric: str = "madds", **ctx) -> tuple[float, float]:
    """Exact cheapest and dearest cost of any arch of the space."""
    lo, hi = completion_costs(space, [space.default_arch()], -1, metric, **ctx)
    return float(lo[0]), float(hi[0])


def extreme_arch(space: Space, kind: str = "min", metric: str = "madds", **ctx) -> tuple[int, ...]:
    """The cheapest (``min``) or dearest (``max``) arch: greedy on exact completion bounds
    (ties: the lowest option index), which is exact because each bound is over every completion."""
    arch = list(space.default_arch())
    pick = 0 if kind == "min" else 1
    for j in range(space.num_layers):
        rows = np.tile(np.asarray(arch, dtype=np.int64), (space.sizes[j], 1))
        rows[:, j] = np.arange(space.sizes[j])
        b = completion_costs(space, rows, j, metric, **ctx)[pick]
        arch[j] = int(np.argmin(b) if kind == "min" else np.argmax(b))
    return tuple(arch)


def check_consistent(space: Space) -> None:
    """The cost model is usable for search: every term finite and >= 0 for every option, and
    the factor sum reproduces the direct cost (so bounds and costs agree)."""
    for metric in ("madds", "params"):
        fs = factors(space, metric)
        for f in fs:
            t = np.asarray(f.table)
            if not np.isfinite(t).all() or (t < 0).any():
                names = [space.layers[j].name for j in f.layers]
                raise SpaceError(f"the cost ({metric}) of layers {names} is negative or not finite for some option")
    rng = np.random.default_rng(0)
    archs = np.stack([rng.integers(0, n, 16) for n in space.sizes], axis=1)
    archs[0] = space.default_arch()
    direct = cost_of(space, archs)["madds"]
    summed = sum(f.at(archs) for f in factors(space, "madds"))
    if not np.allclose(direct, summed, rtol=1e-9, atol=1e-6):
        raise SpaceError("the cost model is inconsistent: its terms do not add up to the cost of an arch")


# --------------------------------------------------------------------------- option order


def order_options(space: Space, raw_layers: list | None = None) -> Space:
    """Sort generated option sets most expensive first, and check the cost model is usable.

    Generated option sets (kernel x expanded, NB201 edge-op combinations) are sorted by their
    cost with every other layer at its provisional default, stable so equal-cost options keep
    their listed order: that fixes the arch strings of the built-in spaces. Explicitly listed
    options keep the order the user wrote (any order works: the bounds are exact and the
    default is declared with ``default:``).
    """
    from dataclasses import replace

    layers = list(space.layers)

    def generated(j: int) -> bool:
        raw = raw_layers[j] if raw_layers is not None else None
        return isinstance(raw, dict) and any(k in raw for k in ("edges", "kernels", "out"))

    # Provisional default: the option that is maximal in every numeric field (for generated
    # products that is the largest kernel with the largest expansion, or conv3x3 everywhere).
    base = [0] * len(layers)
    for j, layer in enumerate(layers):
        if generated(j) and "expanded" in layer.options[0]:
            top = {k: max(o[k] for o in layer.options) for k in layer.options[0]}
            base[j] = max(range(len(layer)), key=lambda i: tuple(layer.options[i][k] == top[k] for k in top))
    probe = replace(space, layers=tuple(layers))
    for j, layer in enumerate(layers):
        if generated(j):
            rows = np.tile(np.asarray(base, dtype=np.int64), (len(layer), 1))
            rows[:, j] = np.arange(len(layer))
            c = cost_of(probe, rows)["madds"]
            order = sorted(range(len(layer)), key=lambda i: -c[i])  # stable
            layers[j] = replace(
                layer, options=tuple(layer.options[i] for i in order), labels=tuple(layer.labels[i] for i in order)
            )
        base[j] = 0
        probe = replace(space, layers=tuple(layers))
    return probe
