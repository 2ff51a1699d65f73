"""``evaluator: supernet`` in the workflow (issue 16): the supernet rule, evaluations recorded as
trials keyed by the checkpoint's content hash, resume after SIGKILL, the audit of the supernet
and of evaluations that do not match it, and the config check of the ``supernet:`` section.

Real Snakemake and real torch on a tiny problem (.test/supernet.yaml: mobilenet-tiny on
scikit-learn's digits, half an epoch of supernet training)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SUPERNET_CONFIG, config_file, run_workflow, snakemake_cmd
from trial_records import evaluated_at

from layernas.core.space import load_space
from layernas.evaluate.recipe import SupernetConfig
from layernas.evaluate.supernet_job import checkpoint_hash, run_supernet_job
from layernas.store.audit import audit
from layernas.store.keys import RECAL_SAMPLES, supernet_key, train_hash, trial_key
from layernas.store.records import sha256_file, write_finished_record
from layernas.workflow.config import SCHEMA, ConfigError, check_config

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = load_space("mobilenet-tiny")


def checked(path: Path = SUPERNET_CONFIG, **overrides) -> dict:
    """The run's config as the workflow sees it: config.yaml, then the test config, then overrides."""
    root = SUPERNET_CONFIG.parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text())
    for layer in (yaml.safe_load(Path(path).read_text()), overrides):
        for k, v in layer.items():
            config[k] = {**config[k], **v} if isinstance(v, dict) and isinstance(config.get(k), dict) else v
    return check_config(config)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One uninterrupted supernet search, shared by the tests below (its workdir)."""
    wd = tmp_path_factory.mktemp("supernet") / "run"
    run_workflow(wd, SUPERNET_CONFIG)
    return wd


def the_supernet(results: Path) -> Path:
    (path,) = (results / "supernet").iterdir()
    return path


def copy_results(wd: Path, dst: Path) -> Path:
    shutil.copytree(wd / "results", dst)
    return dst


# --------------------------------------------------------------------------- the search


def test_a_supernet_search_ends_with_records_keyed_by_its_checkpoint(run):
    res = run / "results"
    summary = json.loads((res / "search" / "summary.json").read_text())
    assert summary["outcome"] == "found" and summary["evaluator"] == "supernet" and summary["trials"] == 12
    config = checked()
    skey = supernet_key(SPACE.space_id, config)
    sdir = the_supernet(res)
    assert sdir.name == skey
    rec = json.loads((sdir / "metrics.json").read_text())
    assert rec["status"] == "ok" and rec["steps"] == 10 and rec["artifacts"]["supernet.pt"] == sha256_file(
        sdir / "supernet.pt")
    assert checkpoint_hash(sdir / "supernet.pt", SPACE) == rec["hash"]
    meta = json.loads((res / "search" / "search.json").read_text())
    assert meta["supernet"] == {"key": skey, "hash": rec["hash"], "key_hash": train_hash(config, rec["hash"])}
    # every evaluation: a trial record under the key of (space, arch, checkpoint hash + eval settings, seed)
    hist = pd.read_parquet(res / "search" / "history.parquet")
    evaluated = hist[hist["status"].isin(["ok", "failed"])]
    assert len(evaluated) == 12 and set(evaluated["status"]) == {"ok"}
    for arch, key in zip(evaluated["arch"], evaluated["key"]):
        assert key == trial_key(SPACE.space_id, arch, meta["supernet"]["key_hash"], 0)
        m = json.loads((res / "trials" / key / "metrics.json").read_text())
        assert m["supernet"] == rec["hash"] and m["arch"] == arch and m["bn_calibration_images"] == 256
    # the progress lines and the rule's own log
    progress = (res / "logs" / "progress.log").read_text()
    assert f"supernet {skey}: training on 1294 digits images" in progress
    assert f"supernet {skey} done: 10 steps" in progress and progress.index("supernet") < progress.index("sweep 0")
    assert "step 10/10 loss" in (res / "logs" / "supernet" / f"{skey}.log").read_text()
    assert audit(res, load=checkpoint_hash).problems == []


def test_an_evaluation_record_is_what_the_supernet_gives_that_child(run):
    """The record's accuracy is the checkpoint's child, sliced and recalibrated as recorded."""
    from layernas.evaluate.supernet_job import data_of
    from layernas.evaluate.supernet_train import evaluate_children, load_supernet

    res = run / "results"
    hist = pd.read_parquet(res / "search" / "history.parquet")
    row = hist[hist["status"] == "ok"].iloc[-1]
    net, meta, _ = load_supernet(the_supernet(res) / "supernet.pt", SPACE)
    (got,) = evaluate_children(net, [row["arch"]], data_of(checked()), meta, recal_samples=256, recal_batch_size=64)
    assert got["accuracy"] == pytest.approx(row["accuracy"], abs=1e-12)


def test_a_rerun_with_the_same_settings_does_nothing(run):
    proc = run_workflow(run, SUPERNET_CONFIG, extra=("-n",))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_unhashed_supernet_fields_retrain_nothing(run, tmp_path):
    """Where and how fast the supernet trains (device, threads, log_every) is in no key."""
    extra = config_file(tmp_path / "x.yaml", {"supernet": {"threads": 2, "log_every": 3, "device": "cpu"}})
    proc = run_workflow(run, SUPERNET_CONFIG, extra, extra=("-n",))
    assert "Nothing to be done" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the audit


def test_audit_finds_a_corrupted_checkpoint_and_fix_retrains_only_the_supernet(run, tmp_path):
    wd = tmp_path / "wd"
    res = copy_results(run, wd / "results")
    sdir = the_supernet(res)
    before = evaluated_at(res)
    ckpt = sdir / "supernet.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    kinds = [(p.kind, p.path) for p in audit(res, load=checkpoint_hash).problems]
    assert kinds == [("checksum", str(sdir))]
    # the same flipped byte with the sha256 in metrics.json updated: load_supernet's content hash finds it
    m = json.loads((sdir / "metrics.json").read_text())
    m["artifacts"]["supernet.pt"] = sha256_file(ckpt)
    (sdir / "metrics.json").write_text(json.dumps(m))
    (sdir / "finished.json").unlink()
    report = audit(res, load=checkpoint_hash)
    assert [(p.kind, p.severity, p.fixable) for p in report.problems] == [("corrupt", "error", True)]
    assert "corrupted" in report.problems[0].message and report.exit_code == 1
    assert audit(res).problems == []  # without the deep check (torch) the sha256 alone cannot tell
    # --fix deletes the supernet; the same command trains it again (same settings, same hash on
    # CPU), so the stages find every evaluation under its key and evaluate nothing
    assert audit(res, do_fix=True, load=checkpoint_hash).removed == [str(sdir)]
    run_workflow(wd, SUPERNET_CONFIG)
    assert json.loads((sdir / "metrics.json").read_text())["hash"] == m["hash"]
    assert evaluated_at(res) == before
    assert audit(res, load=checkpoint_hash).problems == []


def _claim_supernet(trial_dir: Path, chash: str) -> None:
    """Rewrite a record, consistently (digests, finished.json), as evaluated on supernet ``chash``."""
    inputs = json.loads((trial_dir / "trial.json").read_text())
    (trial_dir / "trial.json").write_text(json.dumps({**inputs, "supernet": chash}))
    m = json.loads((trial_dir / "metrics.json").read_text())
    m["supernet"] = chash
    m["artifacts"] = {name: sha256_file(trial_dir / name) for name in m["artifacts"]}
    (trial_dir / "metrics.json").write_text(json.dumps(m))
    write_finished_record(trial_dir, trial_dir.name, m["arch"], m)


def test_audit_finds_evaluations_that_do_not_match_the_checkpoint(run, tmp_path):
    """A record of another supernet is an error --fix removes and the same command evaluates again
    (that child only); a checkpoint replaced after the stages ran is one the same command follows:
    every stage re-runs on it and its children are evaluated under new keys."""
    wd = tmp_path / "wd"
    res = copy_results(run, wd / "results")
    sdir = the_supernet(res)
    first = json.loads((sdir / "metrics.json").read_text())["hash"]
    before = evaluated_at(res)
    key = sorted(before)[0]
    _claim_supernet(res / "trials" / key, "0123456789abcdef")
    (p,) = audit(res, load=checkpoint_hash).problems
    assert (p.kind, p.severity, p.path, p.fixable) == ("supernet-mismatch", "error", str(res / "trials" / key), True)
    assert "0123456789abcdef" in p.message and "delete it" in p.action
    assert audit(res, do_fix=True, load=checkpoint_hash).removed == [str(res / "trials" / key)]
    run_workflow(wd, SUPERNET_CONFIG)
    after = evaluated_at(res)
    assert after.keys() == before.keys() and after[key] > before[key]
    assert {k: t for k, t in after.items() if k != key} == {k: t for k, t in before.items() if k != key}
    assert audit(res, load=checkpoint_hash).problems == []

    # the supernet replaced by another one (here: trained with seed 1) after the stages ran
    other = tmp_path / "other"
    config = checked(seed=1)
    run_supernet_job(config, other / supernet_key(SPACE.space_id, config))
    for f in ("supernet.pt", "metrics.json", "finished.json", "trial.json", "log.txt"):
        shutil.copy(next(other.iterdir()) / f, sdir / f)
    problems = audit(res, load=checkpoint_hash).problems
    assert [p.kind for p in problems] == ["supernet-changed"]
    assert "the stages keyed their evaluations by supernet" in problems[0].message
    assert "re-runs on this checkpoint" in problems[0].action
    run_workflow(wd, SUPERNET_CONFIG)
    meta = json.loads((res / "search" / "search.json").read_text())
    assert meta["supernet"]["hash"] == json.loads((sdir / "metrics.json").read_text())["hash"] != first
    new = set(evaluated_at(res)) - set(before)
    assert len(new) == 12  # every child evaluated again, on the new checkpoint
    assert all(json.loads((res / "trials" / k / "metrics.json").read_text())["supernet"] == meta["supernet"]["hash"]
               for k in new)
    kinds = {p.kind for p in audit(res, load=checkpoint_hash).problems}
    assert kinds == {"orphan"}  # the first checkpoint's evaluations, reusable by a search on it


def test_status_shows_the_supernet(run):
    from layernas.store.status import collect_status

    st = collect_status(run / "results")
    sn = st["supernet"]
    assert sn["state"] == "trained" and sn["key"] == the_supernet(run / "results").name and sn["steps"] == 10
    proc = subprocess.run([sys.executable, "-m", "layernas.cli.main", "status", str(run / "results")], capture_output=True,
                          text=True, check=True)
    assert "supernet: trained (10 steps" in proc.stdout


# --------------------------------------------------------------------------- the supernet job


def test_a_supernet_whose_metrics_json_was_deleted_is_restored_not_retrained(tmp_path):
    """Snakemake deletes a job's output when it reruns a job it saw start but not finish: the
    job restores metrics.json from finished.json when the checkpoint is the one it lists."""
    config = checked()
    out = tmp_path / "results" / "supernet" / supernet_key(SPACE.space_id, config)
    first = run_supernet_job(config, out)
    mtime = (out / "supernet.pt").stat().st_mtime_ns
    (out / "metrics.json").unlink()
    lines = []
    assert run_supernet_job(config, out, progress=lines.append) == first
    assert (out / "supernet.pt").stat().st_mtime_ns == mtime and "restored" in lines[0]
    with pytest.raises(ValueError, match="not named by this config's supernet key"):
        run_supernet_job(config, tmp_path / "elsewhere")


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("section, needle", [
    ({"epochs": 0}, "config field 'supernet.epochs': must be > 0, got 0"),
    ({"epoch": 3}, "config field 'supernet.epoch': unknown field (value 3)"),
    ({"recal_samples": -1}, "config field 'supernet.recal_samples': must be >= 0, got -1"),
    ({"distill": True, "sandwich": False}, "config field 'supernet.distill': needs sandwich"),
    ({"sandwich": False, "random_children": 0, "distill": False}, "config field 'supernet.random_children'"),
    ({"optimizer": "adam"}, "config field 'supernet.optimizer': must be one of sgd, rmsprop, got 'adam'"),
    ({"device": "tpu"}, "config field 'supernet.device': must be one of auto, cpu, cuda, got 'tpu'"),
    ({"batch_size": 1.5}, "config field 'supernet.batch_size': must be of type integer, got 1.5"),
])
def test_bad_supernet_settings_are_config_errors(section, needle):
    with pytest.raises(ConfigError) as exc:
        checked(supernet=section)
    assert needle in str(exc.value)


def test_a_space_without_a_mobilenet_backbone_has_no_supernet():
    with pytest.raises(ConfigError, match="config field 'evaluator': evaluator supernet supports the mobilenet"):
        checked(space="nats-size", target={"metric": "params", "min": 1.0e5, "max": 1.0e6})


def test_the_schema_defaults_are_the_recipe_defaults():
    """A config that leaves a field out gets the schema's default, and supernet keys hash the
    section as filled: it must be what SupernetConfig would use (device: auto in the workflow)."""
    from dataclasses import asdict

    props = yaml.safe_load(SCHEMA.read_text())["properties"]["supernet"]["properties"]
    defaults = {k: v["default"] for k, v in props.items()}
    assert defaults.pop("recal_samples") == RECAL_SAMPLES and defaults.pop("device") == "auto"
    assert defaults == {k: v for k, v in asdict(SupernetConfig()).items() if k != "device"}


def test_a_bad_supernet_section_stops_the_workflow_before_any_job(tmp_path):
    extra = config_file(tmp_path / "bad.yaml", {"supernet": {"lr": -1}})
    proc = run_workflow(tmp_path / "wd", SUPERNET_CONFIG, extra, check=False, timeout=120)
    assert proc.returncode != 0
    assert "layernas: config error: config field 'supernet.lr': must be > 0, got -1" in proc.stderr
    assert not (tmp_path / "wd" / "results").exists()


# --------------------------------------------------------------------------- kill and resume


def _start(wd: Path, *configs) -> subprocess.Popen:
    return subprocess.Popen(snakemake_cmd(wd, *configs, cores=1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen, wd: Path, *configs) -> None:
    """SIGKILL snakemake and its jobs, then the documented `--unlock`."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    subprocess.run([*snakemake_cmd(wd, *configs), "--unlock"], capture_output=True, check=True, timeout=120)


def _wait(proc: subprocess.Popen, what, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None and not what():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill: kill earlier"


@pytest.mark.slow
def test_sigkill_during_training_and_during_evaluation_retrains_nothing_finished(tmp_path):
    """SIGKILL while the supernet trains (nothing half-written is left, the resume trains it),
    then again once it is trained and an evaluation finished: the resumed run reuses the
    checkpoint (same file, same record) and every finished evaluation (same finished_at)."""
    wd = tmp_path / "wd"
    longer = config_file(tmp_path / "longer.yaml", {"supernet": {"epochs": 3}})
    res = wd / "results"
    sdir = res / "supernet" / supernet_key(SPACE.space_id, checked(supernet={"epochs": 3}))

    proc = _start(wd, SUPERNET_CONFIG, longer)
    _wait(proc, lambda: (sdir / "trial.json").exists())
    time.sleep(1.5)  # mid-training (it takes ~8 s here)
    _kill(proc, wd, SUPERNET_CONFIG, longer)
    assert not (sdir / "metrics.json").exists()
    assert {p.name for p in sdir.iterdir() if not p.name.startswith(".")} <= {"trial.json", "log.txt"}

    proc = _start(wd, SUPERNET_CONFIG, longer)
    _wait(proc, lambda: len(evaluated_at(res)) >= 2)
    _kill(proc, wd, SUPERNET_CONFIG, longer)
    ckpt = (sdir / "supernet.pt").stat().st_mtime_ns
    trained = json.loads((sdir / "metrics.json").read_text())["finished_at"]
    finished = evaluated_at(res)
    assert finished and ckpt

    run_workflow(wd, SUPERNET_CONFIG, longer, cores=1)
    assert (sdir / "supernet.pt").stat().st_mtime_ns == ckpt
    assert json.loads((sdir / "metrics.json").read_text())["finished_at"] == trained
    after = evaluated_at(res)
    assert {k: after[k] for k in finished} == finished, "a finished evaluation was evaluated again"
    assert json.loads((res / "search" / "summary.json").read_text())["trials"] == 12
    assert audit(res, load=checkpoint_hash).problems == []


def test_the_models_a_supernet_search_finds_are_retrained_from_scratch(tmp_path):
    """The final stage after a supernet search is the one after a train search: the top model
    retrained with the final recipe on the trials' data, in the report beside its search accuracy."""
    wd = tmp_path / "wd"
    extra = config_file(tmp_path / "final.yaml", {"final": {"activate": True, "top_n": 1, "epochs": 1, "export": False},
                                                   "report": {"activate": True}})
    run_workflow(wd, SUPERNET_CONFIG, extra, timeout=600)
    res = wd / "results"
    (top,) = json.loads((res / "search" / "summary.json").read_text())["top"]
    final = json.loads((res / "final" / top["final_key"] / "metrics.json").read_text())
    assert final["status"] == "ok" and final["arch"] == top["arch"] and 0 <= final["test_accuracy"] <= 1
    table = pd.read_csv(res / "report" / "final_models.csv")
    assert table["key"].tolist() == [top["final_key"]] and table["val_accuracy"].iloc[0] == pytest.approx(top["accuracy"])
    assert "slice of the supernet" in (res / "report" / "front.rst").read_text()


def test_status_while_the_supernet_trains_before_any_stage(tmp_path):
    """A supernet search trains before its first stage: status shows that, not 'no search'."""
    from layernas.store.status import collect_status

    sdir = tmp_path / "results" / "supernet" / "0123456789abcdef"
    sdir.mkdir(parents=True)
    (sdir / "trial.json").write_text(json.dumps({"space": "mobilenet-tiny"}))
    st = collect_status(tmp_path / "results")
    assert st["supernet"]["state"] == "training" and st["space"] == "mobilenet-tiny"
    assert st["stages_generated"] == 0 and st["disk"]["supernet"] > 0
    with pytest.raises(ValueError, match="holds no search"):
        collect_status(tmp_path / "nothing")
