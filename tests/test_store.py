"""Trial records: keys by content, atomic files, failures recorded, finished trials kept."""

from __future__ import annotations

import json

from layernas.core.space import load_space
from layernas.evaluate.trial import run_trial
from layernas.store.files import atomic_write_json
from layernas.store.keys import config_hash, trial_key
from layernas.store.records import is_finished

TRAIN = {"dataset": "digits", "epochs": 0.5, "batch_size": 32, "lr": 0.05, "threads": 1}


def test_trial_key_depends_on_every_input_and_nothing_else():
    base = trial_key("s@v1-x", "0-1", config_hash({"a": 1, "b": 2}), 0)
    assert base == trial_key("s@v1-x", "0-1", config_hash({"b": 2, "a": 1}), 0)  # key order free
    others = {trial_key("s@v1-y", "0-1", config_hash({"a": 1, "b": 2}), 0),
              trial_key("s@v1-x", "0-2", config_hash({"a": 1, "b": 2}), 0),
              trial_key("s@v1-x", "0-1", config_hash({"a": 1, "b": 3}), 0),
              trial_key("s@v1-x", "0-1", config_hash({"a": 1, "b": 2}), 1)}
    assert base not in others and len(others) == 4


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_successful_trial_writes_all_records(tmp_path):
    space = load_space("mobilenet-tiny")
    m = run_trial(space, "min", TRAIN, 0, tmp_path / "t")
    assert m["status"] == "ok" and 0 <= m["accuracy"] <= 1
    for name in ("trial.json", "metrics.json", "log.txt"):
        assert (tmp_path / "t" / name).exists()
    on_disk = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert on_disk["madds"] > 0 and on_disk["versions"]["torch"] and on_disk["device"] == "cpu"


def test_finished_trial_is_never_overwritten(tmp_path):
    space = load_space("mobilenet-tiny")
    first = run_trial(space, "min", TRAIN, 0, tmp_path / "t")
    mtime = (tmp_path / "t" / "metrics.json").stat().st_mtime_ns
    again = run_trial(space, "min", TRAIN, 0, tmp_path / "t")
    assert again == json.loads(json.dumps(first, default=str)) or again["accuracy"] == first["accuracy"]
    assert (tmp_path / "t" / "metrics.json").stat().st_mtime_ns == mtime


def test_directory_without_metrics_is_unfinished_and_redone(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "trial.json").write_text("{}")
    (d / "log.txt").write_text("killed here")
    assert not is_finished(d)
    m = run_trial(load_space("mobilenet-tiny"), "min", TRAIN, 0, d)
    assert m["status"] == "ok" and is_finished(d)


def test_broken_trials_are_recorded_as_failed(tmp_path):
    space = load_space("mobilenet-tiny")
    bad_arch = run_trial(space, "9-0-0-0-0-0-0", TRAIN, 0, tmp_path / "a")
    assert bad_arch["status"] == "failed" and "out of range" in bad_arch["error"]
    nan = run_trial(space, "min", TRAIN, 0, tmp_path / "b", fail_with="nan")
    assert nan["status"] == "failed" and "nan" in nan["error"].lower()
    crash = run_trial(space, "min", TRAIN, 0, tmp_path / "c", fail_with="crash")
    assert crash["status"] == "failed" and "injected crash" in crash["error"]
    for sub in "abc":
        assert json.loads((tmp_path / sub / "metrics.json").read_text())["status"] == "failed"


def test_same_seed_same_trial_metrics(tmp_path):
    space = load_space("mobilenet-tiny")
    a = run_trial(space, "min", TRAIN, 5, tmp_path / "a")
    b = run_trial(space, "min", TRAIN, 5, tmp_path / "b")
    assert (a["accuracy"], a["val_loss"]) == (b["accuracy"], b["val_loss"])
