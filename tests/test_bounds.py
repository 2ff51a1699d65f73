"""Exact completion bounds (layernas.core.bounds): equal to brute force on spaces small enough
to enumerate, never beaten by a local search on the shipped spaces, and no feasible child
dropped where the old "last option is cheapest" rule was wrong."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layernas.core.bounds import completion_costs, cost_range, extreme_arch, factors, layer_bounds
from layernas.core.cost import cost_of
from layernas.core.search import Geometry, SearchConfig, make_children
from layernas.core.space import list_spaces, load_space, space_from_dict

# A MobileNet-style space small enough to enumerate (4*4*4*3*3 = 576 archs), whose block
# widths can equal their input (expanded == input filters skips the expansion conv), so a
# layer's cheapest option depends on its neighbours, and whose defaults are not the dearest.
TINY_MOBILENET = {
    "name": "tiny-enum", "backbone": "mobilenet", "input_size": 8, "input_channels": 1, "num_classes": 3,
    "network": {
        "stem": {"out": 8, "kernel": 3, "stride": 1},
        "blocks": [
            {"kernel": "$b1", "expanded": "$b1", "out": "$bf1", "stride": 2},
            {"kernel": 3, "expanded": "$b2", "out": "$bf1", "stride": 1, "se": True},
            {"kernel": 3, "expanded": "in", "out": "$bf2", "stride": 1},
        ],
        "head": {"conv": "$head"},
    },
    "layers": [
        {"name": "bf1", "filters": [16, 12, 8, 4], "default": 2},
        {"name": "b1", "kernels": [3, 5], "expanded": [8, 6]},
        {"name": "b2", "options": [{"expanded": 24}, {"expanded": 12}, {"expanded": 10}, {"expanded": 9}], "default": 3},
        {"name": "bf2", "filters": [12, 8, 4]},
        {"name": "head", "filters": [32, 16, 8], "default": 1},
    ],
}


def _random_additive(rng: np.random.Generator) -> dict:
    layers = []
    for i in range(int(rng.integers(2, 5))):
        n = int(rng.integers(2, 6))
        layers.append({"name": f"l{i}", "options": [{"cost": int(c)} for c in rng.integers(0, 20, n)],
                       "default": int(rng.integers(0, n))})
    return {"name": "rand", "backbone": "additive", "layers": layers}


SMALL = [pytest.param(TINY_MOBILENET, id="tiny-mobilenet")] + [
    pytest.param(_random_additive(np.random.default_rng(s)), id=f"additive{s}") for s in range(6)
]


def _all(space) -> np.ndarray:
    return np.array(list(itertools.product(*[range(n) for n in space.sizes])), dtype=np.int64)


@pytest.mark.parametrize("spec", SMALL)
@pytest.mark.parametrize("metric", ["madds", "params"])
def test_bounds_equal_brute_force_on_small_spaces(spec, metric):
    space = space_from_dict(spec)
    archs = _all(space)
    cost = cost_of(space, archs)[metric]
    assert cost_range(space, metric) == (cost.min(), cost.max())
    d = np.asarray(space.default_arch())
    lo_l, hi_l = layer_bounds(space, metric)
    for layer in range(space.num_layers):
        lo, hi = completion_costs(space, archs, layer, metric)
        prefix = [tuple(a[: layer + 1]) for a in archs]
        want_lo, want_hi = {}, {}
        for p, c in zip(prefix, cost):
            want_lo[p] = min(want_lo.get(p, np.inf), c)
            want_hi[p] = max(want_hi.get(p, -np.inf), c)
        assert np.array_equal(lo, [want_lo[p] for p in prefix])
        assert np.array_equal(hi, [want_hi[p] for p in prefix])
        # Eq. 4 bounds: over the layer-l candidates (s_0..s_l, defaults after l)
        cand = (archs[:, layer + 1:] == d[layer + 1:]).all(axis=1)
        assert (lo_l[layer], hi_l[layer]) == (cost[cand].min(), cost[cand].max())


def test_tiny_mobilenet_really_has_neighbour_dependent_cheapest_options():
    """The fixture must exercise what the old bound got wrong: some prefix whose cheapest
    completion is not 'every later layer on its last option'."""
    space = space_from_dict(TINY_MOBILENET)
    archs = _all(space)
    for layer in range(space.num_layers - 1):
        naive = archs.copy()
        naive[:, layer + 1:] = np.asarray(space.sizes[layer + 1:]) - 1
        lo, _ = completion_costs(space, archs, layer)
        if (lo < cost_of(space, naive)["madds"]).any():
            return
    pytest.fail("no prefix has a completion cheaper than its all-last-options completion")


def test_extreme_archs_attain_the_range():
    space = space_from_dict(TINY_MOBILENET)
    lo, hi = cost_range(space)
    assert cost_of(space, [extreme_arch(space, "min")])["madds"][0] == lo
    assert cost_of(space, [extreme_arch(space, "max")])["madds"][0] == hi


def _local_search(space, prefixes, layer, sign, rng, starts=2, rounds=3):
    """Coordinate descent over the layers after ``layer`` from random starts, all prefixes at
    once (sign +1: minimise, -1: maximise); the best cost found per prefix."""
    L = space.num_layers
    a = np.repeat(prefixes, starts, axis=0)
    for j in range(layer + 1, L):
        a[:, j] = rng.integers(0, space.sizes[j], len(a))
    for _ in range(rounds):
        for j in rng.permutation(np.arange(layer + 1, L)):
            n = space.sizes[j]
            rows = np.repeat(a, n, axis=0)
            rows[:, j] = np.tile(np.arange(n), len(a))
            c = sign * cost_of(space, rows)["madds"].reshape(len(a), n)
            a[:, j] = np.argmin(c, axis=1)
    found = sign * cost_of(space, a)["madds"].reshape(len(prefixes), starts)
    return sign * found.min(axis=1)


@pytest.mark.parametrize("name", list_spaces())
def test_local_search_never_beats_the_bounds_on_shipped_spaces(name):
    space = load_space(name)
    rng = np.random.default_rng(0)
    for layer in range(space.num_layers - 1):
        prefixes = np.stack([rng.integers(0, n, 4) for n in space.sizes], axis=1)
        lo, hi = completion_costs(space, prefixes, layer)
        assert (lo <= _local_search(space, prefixes, layer, +1, rng) + 1e-6).all(), (name, layer)
        assert (_local_search(space, prefixes, layer, -1, rng) <= hi + 1e-6).all(), (name, layer)


@pytest.mark.parametrize("name", list_spaces())
def test_factor_sum_is_the_cost(name):
    space = load_space(name)
    rng = np.random.default_rng(1)
    archs = np.stack([rng.integers(0, n, 50) for n in space.sizes], axis=1)
    for metric in ("madds", "params"):
        total = sum(f.at(archs) for f in factors(space, metric))
        assert np.allclose(total, cost_of(space, archs)[metric], rtol=1e-12)


@pytest.mark.parametrize("name", ["mobilenetv3-large-220m", "mobilenetv2-1.4x-600m"])
def test_a_feasible_child_the_old_bound_dropped_is_kept(name):
    """Build a child whose true cheapest completion is inside the target but whose
    'all later layers on their last option' completion is above it: it must be feasible."""
    space = load_space(name)
    rng = np.random.default_rng(2)
    for layer in range(space.num_layers - 1):
        archs = np.stack([rng.integers(0, n, 64) for n in space.sizes], axis=1)
        archs[:, layer + 1:] = 0
        naive = archs.copy()
        naive[:, layer + 1:] = np.asarray(space.sizes[layer + 1:]) - 1
        old_lo = cost_of(space, naive)["madds"]
        lo, _ = completion_costs(space, archs, layer)
        gap = np.flatnonzero(old_lo - lo > 1e3)
        if len(gap):
            break
    else:
        pytest.fail(f"{name}: no prefix where the last-option completion is dearer than the cheapest")
    i = int(gap[0])
    target_max = (lo[i] + old_lo[i]) / 2  # reachable, but not by the last-option completion
    cfg = SearchConfig(target_min=0, target_max=target_max, buckets=10, replicas=1, per_sweep=1)
    geo = Geometry.of(space, cfg)
    parent = archs[i].copy()
    parent[layer] = space.default_arch()[layer]  # a layer-(l-1) candidate whose child is archs[i]
    parent[layer + 1:] = space.default_arch()[layer + 1:]
    kids = make_children(geo, 0, layer, ["-".join(map(str, parent))], lambda a: a) if layer else \
        make_children(geo, 0, 0, [], lambda a: a)
    mine = "-".join(map(str, [*archs[i][: layer + 1], *space.default_arch()[layer + 1:]]))
    row = kids[kids["arch"] == mine].iloc[0]
    assert row["feasible"] and row["min_cost"] == pytest.approx(lo[i])
    # and the bound is attained: some completion really costs that little
    best = list(archs[i][: layer + 1])
    for j in range(layer + 1, space.num_layers):
        rows = np.tile(np.array(best + list(space.default_arch()[j:]), dtype=np.int64), (space.sizes[j], 1))
        rows[:, j] = np.arange(space.sizes[j])
        best.append(int(np.argmin(completion_costs(space, rows, j)[0])))
    assert cost_of(space, [best])["madds"][0] == pytest.approx(lo[i])
    assert cost_of(space, [best])["madds"][0] <= target_max
