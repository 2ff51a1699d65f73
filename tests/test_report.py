"""The report's tables and curves from search history: Pareto front, best-so-far in the
target, failed trials with their recorded errors, the transfer table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from layernas.workflow.report import best_so_far, failed_table, pareto_front, transfer_table


def history(rows):
    cols = ["order", "sweep", "layer", "arch", "cost", "accuracy", "status", "key"]
    return pd.DataFrame(rows, columns=cols)


def test_pareto_front_keeps_only_models_nothing_beats_on_both():
    cost = np.array([1.0, 2.0, 3.0, 2.5, 4.0])
    acc = np.array([0.5, 0.7, 0.6, 0.8, 0.8])
    assert sorted(pareto_front(cost, acc).tolist()) == [0, 1, 3]


def test_best_so_far_counts_failures_as_trials_but_not_as_best():
    h = history([
        (0, 0, 0, "0-0", 5.0, 0.9, "ok", "a"),        # outside the target
        (1, 0, 0, "1-0", 3.0, 0.6, "ok", "b"),
        (2, 0, 0, "2-0", 3.0, None, "failed", "c"),
        (3, 0, 1, "2-1", 2.5, 0.7, "ok", "d"),
        (4, 0, 1, "2-2", 2.0, 0.8, "cached", "d"),     # cached: not a new evaluation
    ])
    curve = best_so_far(h, 2.0, 4.0)
    assert curve["trial"].tolist() == [1, 2, 3, 4]
    assert np.isnan(curve["best"].iloc[0])
    assert curve["best"].iloc[1:].tolist() == [0.6, 0.6, 0.7]


def test_failed_table_lists_each_failed_trial_with_its_error(tmp_path):
    trials = tmp_path / "trials"
    for key, err in (("c", "RuntimeError: simulated crash"), ("e", "ValueError: oracle returned nan")):
        (trials / key).mkdir(parents=True)
        (trials / key / "metrics.json").write_text(json.dumps({"status": "failed", "error": err}))
    (trials / "f").mkdir()
    (trials / "f" / "metrics.json").write_text("{not json")
    h = history([
        (0, 0, 0, "0-0", 3.0, 0.6, "ok", "a"),
        (1, 0, 0, "1-0", 3.0, None, "failed", "c"),
        (2, 0, 1, "1-1", 3.0, None, "failed", "e"),
        (3, 1, 1, "1-1", 3.0, None, "failed", "e"),   # the same trial met again: listed once
        (4, 1, 2, "1-1-1", 3.0, None, "failed", "f"),
    ])
    t = failed_table(h, trials)
    assert t["key"].tolist() == ["c", "e", "f"]
    assert t["error"].iloc[0] == "RuntimeError: simulated crash"
    assert "nan" in t["error"].iloc[1]
    assert t["error"].iloc[2].startswith("metrics.json unreadable")


def test_failed_table_of_a_clean_search_is_empty_with_columns(tmp_path):
    t = failed_table(history([(0, 0, 0, "0-0", 3.0, 0.6, "ok", "a")]), tmp_path)
    assert t.empty and list(t.columns) == ["key", "sweep", "layer", "arch", "cost", "error"]


def test_transfer_table_puts_found_and_reference_side_by_side(tmp_path):
    d = tmp_path / "k1"
    d.mkdir()
    m = {"arch": "1-2", "map": 0.2, "pretrained": True,
         "reference": {"name": "mobilenet_v3_small", "width_mult": 1.5, "map": 0.1, "pretrained": False}}
    (d / "metrics.json").write_text(json.dumps(m))
    t = transfer_table([d / "metrics.json"])
    assert t["backbone"].tolist() == ["found 1-2", "mobilenet_v3_small x1.5"]
    assert t["map"].tolist() == [0.2, 0.1] and set(t["key"]) == {"k1"}
