"""The light trial job: keys checked against the config, failures (crash, NaN, timeout) recorded
as failed trials, and a finished trial restored instead of evaluated again after Snakemake
deleted its metrics.json (rerun of an incomplete job)."""

from __future__ import annotations

import json
import time

import pytest

from layernas.core.space import format_arch, load_space
from layernas.evaluate.trial import TrialTimeout, run_trial_job, time_limit
from layernas.examples.toy import flaky_kind
from layernas.store.keys import train_hash, trial_key
from layernas.store.layout import RECORD

CONFIG = {"space": "mobilenet-tiny", "evaluator": "tabular", "oracle": "layernas.examples.toy:separable_flaky",
          "seed": 0, "trial_timeout": 1}


def _arch_of_kind(kind):
    space = load_space("mobilenet-tiny")
    import itertools

    for arch in itertools.product(*[range(len(layer.options)) for layer in space.layers]):
        if flaky_kind(arch) == kind:
            return format_arch(arch)
    raise AssertionError(kind)


def _key(arch: str) -> str:
    space = load_space(CONFIG["space"])
    return trial_key(space.space_id, arch, train_hash(CONFIG), 0)


@pytest.mark.parametrize("kind, needle", [(None, None), ("crash", "simulated crash"),
                                          ("nan", "oracle returned nan"), ("timeout", "TrialTimeout")])
def test_each_failure_kind_is_a_recorded_failed_trial(tmp_path, kind, needle):
    arch = _arch_of_kind(kind)
    t0 = time.time()
    m = run_trial_job(CONFIG, arch, _key(arch), tmp_path)
    assert time.time() - t0 < 10
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["status"] == m["status"] == ("ok" if kind is None else "failed")
    if needle:
        assert needle in on_disk["error"]


def test_finished_trial_is_restored_not_evaluated_again(tmp_path):
    arch = _arch_of_kind(None)
    first = run_trial_job(CONFIG, arch, _key(arch), tmp_path)
    log_mtime = (tmp_path / "log.txt").stat().st_mtime_ns  # rewritten by every evaluation
    (tmp_path / "metrics.json").unlink()  # what Snakemake does before rerunning an incomplete job
    time.sleep(0.01)
    again = run_trial_job(CONFIG, arch, _key(arch), tmp_path)
    assert again == first
    assert (tmp_path / "log.txt").stat().st_mtime_ns == log_mtime
    assert json.loads((tmp_path / "metrics.json").read_text()) == first


def test_record_of_another_key_is_not_restored(tmp_path):
    arch = _arch_of_kind(None)
    (tmp_path / RECORD).write_text(json.dumps({"key": "0" * 16, "arch": arch, "metrics": {"status": "ok"}}))
    m = run_trial_job(CONFIG, arch, _key(arch), tmp_path)
    assert "accuracy" in m and json.loads((tmp_path / RECORD).read_text())["key"] == _key(arch)


def test_wrong_key_is_refused(tmp_path):
    arch = _arch_of_kind(None)
    with pytest.raises(ValueError, match="does not match"):
        run_trial_job(CONFIG, arch, "f" * 16, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_time_limit_raises_and_clears_the_alarm():
    with pytest.raises(TrialTimeout):
        with time_limit(0.2):
            time.sleep(2)
    with time_limit(None):
        time.sleep(0.01)
    time.sleep(0.3)  # no stray alarm after the block


def test_cli_and_trial_record_use_the_workflow_train_hash(tmp_path, capsys):
    """`layernas trial --out-is-root results/trials` must land on the key the workflow uses, and
    trial.json must record the hash the key was made from: one train_hash for all three (fields
    that do not change results, like threads, left out; the trainer version in)."""
    from layernas.cli.main import main as cli
    from layernas.evaluate.trial import run_trial

    train = {"dataset": "digits", "epochs": 1, "batch_size": 64, "max_train_samples": 200, "threads": 1}
    workflow_hash = train_hash({"evaluator": "train", "train": train})
    assert workflow_hash == train_hash({"evaluator": "train", "train": {k: v for k, v in train.items()
                                                                        if k != "threads"}})
    space = load_space("mobilenet-tiny")
    # an arch the space does not have fails at once, after trial.json is written
    run_trial(space, "99-0-0-0-0-0-0", train, 0, tmp_path / "bad")
    assert json.loads((tmp_path / "bad" / "trial.json").read_text())["train_hash"] == workflow_hash

    cfg = tmp_path / "train.yaml"
    cfg.write_text(json.dumps({"train": train}))
    rc = cli(["trial", "--space", "mobilenet-tiny", "--arch", "min", "--train-config", str(cfg),
              "--out", str(tmp_path / "trials"), "--out-is-root", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["status"] == "ok"
    assert out["key"] == trial_key(space.space_id, out["arch"], workflow_hash, 0)
    assert (tmp_path / "trials" / out["key"] / "metrics.json").is_file()
