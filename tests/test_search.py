"""LayerNAS engine: the Appendix I example, properties on random additive spaces, budget and
failure handling. Pure functions only: no torch, no files."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from layernas.core.bounds import cost_range
from layernas.core.cost import cost_of
from layernas.core.driver import LayerNAS, run_search
from layernas.core.search import SearchConfig, bucket_of, max_trials
from layernas.core.space import format_arch, load_space, space_from_dict
from layernas.core.tables import mark_expanded, select_parents, update_table
from layernas.examples.toy import appendix_i, appendix_i_name


def random_additive_space(rng: np.random.Generator, layers: int, max_options: int = 5, any_default: bool = False):
    """Options most expensive first with option-0 defaults, or (``any_default``) in random
    order with a random declared default."""
    spec = {"name": "rand", "backbone": "additive", "layers": []}
    for i in range(layers):
        n = int(rng.integers(2, max_options + 1))
        costs = sorted(rng.choice(np.arange(1, 12), size=n, replace=False).tolist(), reverse=True)
        layer = {"name": f"l{i}", "options": [{"cost": int(c)} for c in costs]}
        if any_default:
            layer["options"] = [layer["options"][j] for j in rng.permutation(n)]
            layer["default"] = int(rng.integers(0, n))
        spec["layers"].append(layer)
    return space_from_dict(spec)


def separable_oracle(space, rng):
    table = [rng.random(len(layer)) for layer in space.layers]

    def oracle(batch):
        return [float(sum(table[i][x] for i, x in enumerate(a))) for a in batch]

    return oracle


def brute_force_best(space, oracle, lo, hi):
    archs = list(itertools.product(*[range(n) for n in space.sizes]))
    costs = cost_of(space, archs)["madds"]
    accs = oracle(archs)
    feasible = [(acc, a) for a, c, acc in zip(archs, costs, accs) if lo <= c <= hi]
    return max(feasible) if feasible else None


def test_appendix_i_finds_best_in_target_with_few_trials():
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2)
    engine = run_search(space, lambda b: [appendix_i(a) for a in b], cfg)
    best = engine.best()
    # CBD (cost 9, .42) is the best listed model in [8, 9]; the notes' narrative names CAD
    # (.40) but its own accuracy list has CBD higher (see docs/algorithm.md).
    assert appendix_i_name(tuple(int(x) for x in best["arch"].split("-"))) == "CBD"
    assert best["cost"] == 9 and best["accuracy"] == pytest.approx(0.42)
    assert engine.trials < 64 / 2
    # brute force over all 64 agrees
    acc, arch = brute_force_best(space, lambda b: [appendix_i(a) for a in b], 8, 9)
    assert format_arch(arch) == best["arch"]


def test_appendix_i_trace_is_stable():
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2)
    engine = run_search(space, lambda b: [appendix_i(a) for a in b], cfg)
    h = engine.history_frame()
    trained = h[h.status == "ok"]
    names = [appendix_i_name(tuple(int(x) for x in a.split("-"))) for a in trained.arch]
    assert names[:4] == ["DDD", "CDD", "BDD", "ADD"]  # M_1: every layer-1 variant
    assert len(names) == len(set(names)) == engine.trials == 19
    dropped = h[h.status == "dropped"]
    assert (dropped.reason.str.len() > 0).all()
    assert set(dropped.layer) <= {1, 2}


@pytest.mark.parametrize("any_default", [False, True], ids=["option0-default", "any-default"])
@pytest.mark.parametrize("seed", range(25))
def test_random_additive_spaces_properties(seed, any_default):
    rng = np.random.default_rng(seed)
    space = random_additive_space(rng, layers=int(rng.integers(2, 5)), any_default=any_default)
    oracle = separable_oracle(space, rng)
    cmin, cmax = cost_range(space)
    lo = float(rng.integers(cmin, cmax + 1))
    hi = float(min(cmax, lo + rng.integers(0, 6)))
    truth = brute_force_best(space, oracle, lo, hi)

    # H large: each cost value has its own bucket, so Assumption 4.2 holds and the DP is exact.
    cfg = SearchConfig(target_min=lo, target_max=hi, buckets=1000, replicas=1, per_sweep=2)
    engine = run_search(space, oracle, cfg)
    best = engine.best()
    if truth is None:  # no arch costs exactly what the target asks
        assert best is None
    else:
        assert best is not None and lo <= best["cost"] <= hi
        assert best["accuracy"] == pytest.approx(truth[0])

    # The order of expansion does not change what a whole search keeps: exact with any order.
    cfg = SearchConfig(target_min=lo, target_max=hi, buckets=1000, replicas=1, per_sweep=2, select="dearest",
                       child_order="interleave")
    other = run_search(space, oracle, cfg).best()
    assert (other is None) == (truth is None)
    if truth is not None:
        assert other["accuracy"] == pytest.approx(truth[0])

    # Small H, K: never infeasible, never more trials than H*K*sum|S_i|, no arch twice.
    orders = [("best", "parent")] * 3 + [("dearest", "interleave"), ("random", "interleave"), ("dearest", "parent")]
    for (H, K, R), (select, child_order) in zip([(2, 1, 1), (3, 2, 2), (5, 1, 3)] * 2, orders):
        cfg = SearchConfig(target_min=lo, target_max=hi, buckets=H, replicas=K, per_sweep=R, budget=10**9,
                           select=select, seed=seed, child_order=child_order)
        engine = run_search(space, oracle, cfg)
        h = engine.history_frame()
        evaluated = h[h.status == "ok"]
        assert engine.trials <= max_trials(space, H, K)
        assert evaluated.arch.is_unique
        b = engine.best()
        if b is not None:
            assert lo <= b["cost"] <= hi
        # every table keeps at most K per bucket and only feasible, evaluated archs
        for t in engine.tables.values():
            assert (t.groupby("bucket").size() <= K).all()
            assert set(t.arch) <= set(evaluated.arch)


def test_budget_caps_new_evaluations_and_is_reported():
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2, budget=7)
    engine = run_search(space, lambda b: [appendix_i(a) for a in b], cfg)
    assert engine.trials == 7
    assert engine.stopped_by_budget
    assert (engine.history_frame().status == "budget").any()


def test_failed_evaluations_count_but_never_enter_tables():
    space = load_space("appendix-i")

    def flaky(batch):
        return [None if sum(a) % 3 == 0 else appendix_i(a) for a in batch]

    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2)
    engine = run_search(space, flaky, cfg)
    h = engine.history_frame()
    failed = set(h[h.status == "failed"].arch)
    assert failed
    for t in engine.tables.values():
        assert not failed & set(t.arch)
        assert np.isfinite(t.accuracy).all()


def test_unreachable_target_fails_before_any_evaluation():
    space = load_space("appendix-i")
    calls = []
    with pytest.raises(ValueError, match="unreachable"):
        run_search(space, lambda b: calls.append(b) or [0.5] * len(b), SearchConfig(target_min=20, target_max=30))
    assert not calls


@pytest.mark.parametrize("field,value", [
    ("buckets", 0), ("replicas", -1), ("per_sweep", 0), ("budget", 0), ("select", "worst"), ("seed", -1),
    ("child_order", "random"), ("child_order", None),
])
def test_bad_search_config_names_the_field(field, value):
    kwargs = dict(target_min=1, target_max=2)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        SearchConfig(**kwargs)


def test_bucket_of_is_eq4_with_closed_last_bucket():
    h = bucket_of(np.array([9, 10, 11, 12]), 9, 12, 4)
    assert h.tolist() == [0, 1, 2, 3]
    assert bucket_of(np.array([5.0]), 5, 5, 10).tolist() == [0]


def test_update_table_keeps_k_best_per_bucket_and_expanded_flags():
    t = update_table(
        None,
        pd.DataFrame({"arch": ["a", "b", "c"], "key": ["ka", "kb", "kc"], "cost": [1.0, 1.0, 1.0],
                      "bucket": [0, 0, 0], "accuracy": [0.1, 0.3, 0.2]}),
        layer=0, replicas=2,
    )
    assert list(t.arch) == ["b", "c"] and list(t["rank"]) == [0, 1]
    t = mark_expanded(t, ["b"])
    assert select_parents(t, 5) == ["c"]
    t2 = update_table(
        t,
        pd.DataFrame({"arch": ["d"], "key": ["kd"], "cost": [1.0], "bucket": [0], "accuracy": [0.25]}),
        layer=0, replicas=2,
    )
    assert list(t2.arch) == ["b", "d"] and bool(t2.set_index("arch").loc["b", "expanded"])


def test_ask_tell_matches_run_search():
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2)
    a = run_search(space, lambda b: [appendix_i(x) for x in b], cfg)
    b = LayerNAS(space, cfg)
    while batch := b.ask():
        b.tell([(x, appendix_i(x)) for x in reversed(batch)])  # order of results is free
    assert b.done
    pd.testing.assert_frame_equal(a.history_frame(), b.history_frame())
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k])


def _table(rows):
    """A bucket table from (arch, bucket, cost, accuracy, expanded) rows."""
    df = pd.DataFrame(rows, columns=["arch", "bucket", "cost", "accuracy", "expanded"])
    return update_table(None, df.assign(key=df["arch"]), layer=0, replicas=3).pipe(
        mark_expanded, list(df.loc[df["expanded"], "arch"]))


def test_select_dearest_takes_the_dearest_bucket_first_best_within():
    t = _table([
        ("a", 0, 1.0, 0.9, False), ("b", 2, 5.0, 0.5, False), ("c", 2, 5.5, 0.6, False),
        ("d", 1, 3.0, 0.8, False), ("e", 3, 7.0, 0.7, True),  # e is expanded: never again
    ])
    assert select_parents(t, 3, "best") == ["a", "d", "c"]
    assert select_parents(t, 3, "dearest") == ["c", "b", "d"]
    assert select_parents(t, 9, "dearest") == ["c", "b", "d", "a"]
    drawn = select_parents(t, 2, "random", np.random.default_rng(0))
    assert drawn == select_parents(t, 2, "random", np.random.default_rng(0)) and set(drawn) <= set("abcd")
    with pytest.raises(ValueError, match="select"):
        select_parents(t, 3, "cheapest")
    with pytest.raises(ValueError, match="generator"):
        select_parents(t, 3, "random")


def test_select_dearest_changes_the_trajectory_not_the_rules():
    space = load_space("appendix-i")

    def cheaper_is_better(batch):  # the opposite of the bet select: dearest makes
        return [1 - float(c) / 20 for c in cost_of(space, batch)["madds"]]

    runs = {}
    for select in ("best", "dearest"):
        cfg = SearchConfig(target_min=0, target_max=12, buckets=4, replicas=1, per_sweep=1, select=select)
        runs[select] = run_search(space, cheaper_is_better, cfg)
    # layer 1 of sweep 0 expands M_0's most accurate (cheapest) candidate, or its dearest one
    h = {k: e.history_frame() for k, e in runs.items()}
    first = {k: v[(v.sweep == 0) & (v.layer == 1)].parent.iloc[0] for k, v in h.items()}
    m0 = runs["best"].tables[(0, 0)]
    assert first["best"] == m0.sort_values("cost").arch.iloc[0] == "3-0-0"
    assert first["dearest"] == m0.sort_values("cost").arch.iloc[-1] == "0-0-0"
    # both are whole LayerNAS searches: every table entry expanded, the same optimum found
    assert runs["best"].best()["arch"] == runs["dearest"].best()["arch"]
    assert runs["best"].done and runs["dearest"].done


def test_child_order_interleave_cycles_the_parents_and_keeps_the_children():
    from layernas.core.search import Geometry, plan_stage, stage_children

    space = load_space("appendix-i")
    t = _table([("0-0-0", 3, 12.0, 0.5, False), ("1-0-0", 2, 11.0, 0.45, False)])
    kids = {}
    for order in ("parent", "interleave"):
        cfg = SearchConfig(target_min=0, target_max=12, buckets=4, replicas=1, per_sweep=2, child_order=order)
        kids[order] = stage_children(Geometry.of(space, cfg), 0, 1, t, lambda a: a)
    assert list(kids["parent"].arch) == ["0-0-0", "0-1-0", "0-2-0", "0-3-0", "1-0-0", "1-1-0", "1-2-0", "1-3-0"]
    assert list(kids["interleave"].arch) == ["0-0-0", "1-0-0", "0-1-0", "1-1-0", "0-2-0", "1-2-0", "0-3-0", "1-3-0"]
    pd.testing.assert_frame_equal(  # same children, same columns, only the order differs
        kids["parent"].sort_values("arch").reset_index(drop=True),
        kids["interleave"].sort_values("arch").reset_index(drop=True))
    # a budget that ends mid-stage covers both parents' first options when interleaved
    planned, stopped = plan_stage(kids["interleave"], {"0-0-0": 0.5, "1-0-0": 0.45}, 2, 6)
    assert stopped and list(planned.loc[planned.action == "evaluate", "arch"]) == ["0-1-0", "1-1-0", "0-2-0", "1-2-0"]
    planned, _ = plan_stage(kids["parent"], {"0-0-0": 0.5, "1-0-0": 0.45}, 2, 6)
    assert list(planned.loc[planned.action == "evaluate", "arch"]) == ["0-1-0", "0-2-0", "0-3-0", "1-1-0"]


@pytest.mark.parametrize("select,child_order", [("dearest", "interleave"), ("random", "interleave")])
def test_new_options_are_deterministic_and_ask_tell_matches_run_search(select, child_order):
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2, select=select, seed=5,
                       child_order=child_order, budget=15)
    a = run_search(space, lambda b: [appendix_i(x) for x in b], cfg)
    b = LayerNAS(space, cfg)
    while batch := b.ask():
        b.tell([(x, appendix_i(x)) for x in reversed(batch)])
    pd.testing.assert_frame_equal(a.history_frame(), b.history_frame())
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k])
