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


def test_written_files_honour_the_umask(tmp_path):
    """Atomic writes go through a private temp file; the result must still get the mode
    open() would give under the user's umask, so teammates can read shared results."""
    import os
    import subprocess
    import sys

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        path = tmp_path / f"m{mask:o}.json"
        code = (f"import os; os.umask({mask}); from layernas.store.files import atomic_write_json; "
                f"atomic_write_json({str(path)!r}, {{'a': 1}})")
        subprocess.run([sys.executable, "-c", code], check=True)
        assert os.stat(path).st_mode & 0o777 == mode, f"umask {mask:o}"


def test_a_programming_error_is_raised_not_recorded_as_a_failed_trial(tmp_path):
    import pytest

    from layernas.store.records import record_run

    def buggy(metrics, log):
        raise AttributeError("module 'layernas' has no attribute 'trian_model'")

    with pytest.raises(AttributeError):
        record_run(tmp_path / "bug", {"arch": "0"}, {}, buggy)
    assert not is_finished(tmp_path / "bug")  # nothing says "finished": the job is redone once fixed
    assert "ERROR in the code" in (tmp_path / "bug" / "log.txt").read_text()

    def model_fails(metrics, log):
        raise RuntimeError("CUDA out of memory")

    m = record_run(tmp_path / "oom", {"arch": "0"}, {}, model_fails, torch=False, on_failure={"accuracy": None})
    assert m["status"] == "failed" and m["error"].startswith("out of memory") and m["accuracy"] is None
    assert json.loads((tmp_path / "oom" / "metrics.json").read_text()) == m
