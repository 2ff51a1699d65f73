"""Analytic cost: exact values on hand-checked cases, bounds, and vectorised speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from layernas.core.bounds import completion_costs, cost_range, layer_bounds
from layernas.core.cost import cost_of, make_divisible
from layernas.core.space import load_space


def test_additive_cost_is_the_sum_of_option_costs():
    space = load_space("appendix-i")
    assert cost_of(space, [(3, 0, 0), (1, 3, 0)])["madds"].tolist() == [9.0, 8.0]


def test_nb201_range_matches_published_flops():
    # NAS-Bench-201 reports 7.78M..220.11M FLOPs (CIFAR-10) for its cells.
    lo, hi = cost_range(load_space("nb201-topology"))
    assert lo == pytest.approx(7.78e6, rel=2e-3) and hi == pytest.approx(220.11e6, rel=2e-3)


def test_nats_size_largest_is_about_twice_the_paper_target():
    # The paper's NATS size target is 140M FLOPs = 50% of the largest model (CIFAR-10).
    _, hi = cost_range(load_space("nats-size"))
    assert hi / 2 == pytest.approx(140e6, rel=0.05)


def test_mobilenet_cost_by_hand_single_block():
    from layernas.core.space import space_from_dict

    space = space_from_dict({
        "name": "one", "backbone": "mobilenet", "input_size": 8, "input_channels": 1, "num_classes": 2,
        "network": {"stem": {"out": 4, "kernel": 3, "stride": 1},
                    "blocks": [{"kernel": "$b", "expanded": "$b", "out": 6, "stride": 2}]},
        "layers": [{"name": "b", "kernels": [3], "expanded": [8]}],
    })
    stem = 9 * 1 * 4 * 64
    expand = 4 * 8 * 64
    dw = 9 * 8 * 16
    proj = 8 * 6 * 16
    fc = 6 * 2
    assert cost_of(space, [(0,)])["madds"][0] == stem + expand + dw + proj + fc
    params = (9 * 4 + 8) + (32 + 16) + (72 + 16) + (48 + 12) + (12 + 2)
    assert cost_of(space, [(0,)])["params"][0] == params


def test_make_divisible_matches_torchvision():
    from torchvision.models._utils import _make_divisible

    for v in range(1, 500, 7):
        assert int(make_divisible(v, 8)) == _make_divisible(v, 8)


@pytest.mark.parametrize("name", ["mobilenetv3-small-60m", "appendix-i", "nb201-topology", "nats-size"])
def test_layer_bounds_bracket_every_candidate(name):
    space = load_space(name)
    lo, hi = layer_bounds(space)
    rng = np.random.default_rng(0)
    for layer in range(space.num_layers):
        archs = np.stack([rng.integers(0, n, 200) for n in space.sizes], axis=1)
        archs[:, layer + 1:] = 0  # layer-l candidates: defaults after l
        c = cost_of(space, archs)["madds"]
        assert (c >= lo[layer] - 1e-6).all() and (c <= hi[layer] + 1e-6).all()
        cmin, cmax = completion_costs(space, archs, layer)
        assert (cmin <= c).all() and np.allclose(cmax, c)


def test_costing_100k_children_is_fast():
    space = load_space("mobilenetv2-1.4x-600m")
    rng = np.random.default_rng(0)
    archs = np.stack([rng.integers(0, n, 100_000) for n in space.sizes], axis=1)
    cost_of(space, archs[:10])
    t0 = time.perf_counter()
    c = cost_of(space, archs)
    elapsed = time.perf_counter() - t0
    assert c["madds"].shape == (100_000,)
    assert elapsed < 5.0  # generous for a loaded CI box; benchmarks/cost_speed.py measures it
