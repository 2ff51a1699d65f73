"""The real Snakemake workflow on .test/config.yaml (Appendix I toy space, table lookups):
full run == in-process search, resume after SIGTERM and after 10 + 3 SIGKILLs with zero re-run trials,
late-stage changes reuse trials, bad configs stop before any job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from trial_records import evaluated_at

from layernas.core.driver import run_search
from layernas.core.search import SearchConfig
from layernas.core.space import load_space
from layernas.examples.toy import appendix_i, separable

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
TEST_CONFIG = str(ROOT / ".test" / "config.yaml")
SLOW_ORACLE = "oracle=layernas.examples.toy:appendix_i_slow"


def snakemake(
    workdir: Path, *extra: str, overrides: dict | None = None, timeout: int = 300, check: bool = True,
    base: str = TEST_CONFIG,
) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir``; ``overrides`` go in a second configfile (nested values
    given with --config arrive as strings)."""
    files = [base]
    if overrides:
        workdir.mkdir(parents=True, exist_ok=True)
        extra_cfg = workdir.parent / f"{workdir.name}-overrides.yaml"
        extra_cfg.write_text(yaml.safe_dump(overrides))
        files.append(str(extra_cfg))
    return run_snakemake([*SNAKEMAKE, "-d", str(workdir), "--configfile", *files, *extra], timeout, check)


def run_snakemake(cmd: list[str], timeout: int, check: bool = True) -> subprocess.CompletedProcess:
    """Run a snakemake command line; with ``check``, a failure shows the tail of its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def tables(results: Path) -> dict[str, pd.DataFrame]:
    search = results / "search"
    return {str(p.relative_to(search)): pd.read_parquet(p) for p in sorted(search.glob("r*/l*/buckets.parquet"))}


def assert_same_tables(a: dict, b: dict, ignore_key: bool = False) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        if ignore_key:
            x, y = x.drop(columns="key"), y.drop(columns="key")
        pd.testing.assert_frame_equal(x, y, obj=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, shared by the tests below."""
    wd = tmp_path_factory.mktemp("reference")
    snakemake(wd)
    return wd / "results"


def test_full_run_matches_in_process_driver(reference):
    space = load_space("appendix-i")
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2)
    engine = run_search(space, lambda b: [appendix_i(a) for a in b], cfg)
    wf = tables(reference)
    assert len(wf) == len(engine.tables)
    for (r, l), t in engine.tables.items():
        pd.testing.assert_frame_equal(
            wf[f"r{r}/l{l}/buckets.parquet"].drop(columns="key"), t.drop(columns="key"), obj=f"r{r}/l{l}"
        )
    hist = pd.read_parquet(reference / "search" / "history.parquet")
    pd.testing.assert_frame_equal(hist.drop(columns="key"), engine.history_frame().drop(columns="key"))
    summary = pd.read_json(reference / "search" / "summary.json", typ="series")
    assert summary["best"]["arch"] == engine.best()["arch"]
    assert summary["trials"] == engine.trials == len(evaluated_at(reference))
    for name in ("best_vs_trials.png", "accuracy_vs_cost.png", "final_models.csv"):
        assert (reference / "report" / name).stat().st_size > 0


def test_same_cli_keys_and_tables_as_layernas_search(reference, tmp_path):
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "layernas.cli.main", "search", "--space", "appendix-i", "--oracle",
         "layernas.examples.toy:appendix_i", "--target-min", "8", "--target-max", "9",
         "-H", "4", "-K", "2", "-R", "2", "--out", str(out), "--quiet"],
        check=True, capture_output=True,
    )
    cli = {str(p.relative_to(out)): pd.read_parquet(p) for p in sorted(out.glob("r*/l*/buckets.parquet"))}
    assert_same_tables(cli, tables(reference))


def test_nothing_to_do_on_rerun(reference):
    proc = snakemake(reference.parent)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_the_documented_command_loads_the_default_profile(tmp_path):
    """`snakemake --cores all` at the project root must pick up profiles/default (greedy,
    rerun-incomplete, no code trigger): the resume recipes depend on it. Snakemake looks for
    profiles/default beside the cwd and the Snakefile only; under workflow/ it was ignored."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-d", str(tmp_path / "run"),
                           "--configfile", TEST_CONFIG], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workflow specific profile profiles/default" in proc.stderr


def _interrupt_and_resume(tmp_path, sig: int, reference: Path) -> None:
    wd = tmp_path / "run"
    wd.mkdir()
    cmd = [*SNAKEMAKE, "-d", str(wd), "--configfile", TEST_CONFIG, "--config", SLOW_ORACLE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while len(evaluated_at(wd / "results")) < 5 if (wd / "results" / "trials").exists() else True:
        if time.time() > deadline or proc.poll() is not None:
            break
        time.sleep(0.2)
    time.sleep(0.5)  # land somewhere inside a running trial
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    before = evaluated_at(wd / "results")
    assert 0 < len(before) < 19, "the interrupt should land mid-search"
    snakemake(wd, "--config", SLOW_ORACLE, "--rerun-incomplete")
    after = evaluated_at(wd / "results")
    assert {k: after[k] for k in before} == before, "a finished trial was re-run"
    assert len(after) == 19
    assert_same_tables(tables(wd / "results"), tables(reference), ignore_key=True)


@pytest.mark.slow
def test_resume_after_sigterm_reruns_no_finished_trial(tmp_path, reference):
    _interrupt_and_resume(tmp_path, signal.SIGTERM, reference)


@pytest.mark.parametrize("batch", [1, 3])
def test_batched_trials_give_the_tables_of_one_job_per_stage(tmp_path, reference, batch):
    """resources.trial.batch: one trial per job, or three, writes the same tables and trial
    records as the default (every trial of a stage in one job), with one job per batch."""
    wd = tmp_path / "run"
    snakemake(wd, overrides={"resources": {"trial": {"batch": batch}}, "report": {"activate": False}})
    res = wd / "results"
    assert_same_tables(tables(res), tables(reference))
    assert set(evaluated_at(res)) == set(evaluated_at(reference))
    manifests = sorted((res / "search").glob("r*/l*/batch*.json"))
    sizes = [len(json.loads(p.read_text())["trials"]) for p in manifests]
    assert sum(sizes) == 19 and max(sizes) == batch
    default = sorted((reference / "search").glob("r*/l*/batch*.json"))
    assert len(default) == len({p.parent for p in default}) < len(manifests)  # one per stage with trials


def test_a_shorter_search_over_a_longer_ones_files_runs_only_its_own_stages(tmp_path, reference):
    """A resumed run asks Snakemake for every stage on disk at once; when those are another
    search's (a budget of 4 over the finished 19-trial run), the search still ends where its own
    walk ends, with the in-process driver's tables, and the old stages after it are not run."""
    import shutil

    wd = tmp_path / "run"
    shutil.copytree(reference.parent, wd, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in (wd / "results" / "search").glob("r3/l*/*.parquet")}
    snakemake(wd, overrides={"search": {"budget": 4}, "report": {"activate": False}}, check=False)
    cfg = SearchConfig(target_min=8, target_max=9, buckets=4, replicas=2, per_sweep=2, budget=4)
    engine = run_search(load_space("appendix-i"), lambda b: [appendix_i(a) for a in b], cfg)
    summary = json.loads((wd / "results" / "search" / "summary.json").read_text())
    assert summary["trials"] == engine.trials == 4 and summary["stages"] == len(engine.tables)
    wf = tables(wd / "results")
    for (r, l), t in engine.tables.items():
        pd.testing.assert_frame_equal(wf[f"r{r}/l{l}/buckets.parquet"].drop(columns="key"), t.drop(columns="key"))
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the old search's last sweep: untouched


@pytest.mark.slow
def test_a_batch_killed_half_way_reruns_only_its_unfinished_trials(tmp_path, reference):
    """SIGKILL while the first stage's batch (4 lookups of 1 s in one job) is half done: the
    resumed run's batch evaluates only the trials the killed one had not finished, and the
    search ends with the tables of an uninterrupted run."""
    wd = tmp_path / "run"
    wd.mkdir()
    results = wd / "results"
    cmd = [*SNAKEMAKE, "-d", str(wd), "--configfile", TEST_CONFIG, "--config", SLOW_ORACLE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(evaluated_at(results)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_group(proc)
    manifest = results / "search" / "r0" / "l0" / "batch0.0.json"
    before = evaluated_at(results)
    assert not manifest.exists() and 2 <= len(before) < 4, "the kill should land inside the first batch"
    subprocess.run([*cmd, "--unlock"], capture_output=True, check=True, timeout=120)
    run_snakemake(cmd, 300)
    after = evaluated_at(results)
    assert {k: after[k] for k in before} == before, "a trial the killed batch finished was evaluated again"
    ran = {t["key"]: t["ran"] for t in json.loads(manifest.read_text())["trials"]}
    assert {k for k, r in ran.items() if not r} == set(before) and len(ran) == 4
    assert_same_tables(tables(results), tables(reference), ignore_key=True)


@pytest.mark.slow
def test_second_search_with_other_buckets_reuses_shared_trials(tmp_path, reference):
    import shutil

    wd = tmp_path / "run"
    shutil.copytree(reference.parent, wd, symlinks=True)  # a copy of the finished run (~40 s saved)
    before = evaluated_at(wd / "results")
    snakemake(wd, overrides={"search": {"buckets": 3}})
    after = evaluated_at(wd / "results")
    assert {k: after[k] for k in before} == before
    summary = pd.read_json(wd / "results" / "search" / "summary.json", typ="series")
    assert summary["buckets"] == 3
    # changing a setting of a later stage only (final.top_n) re-runs the summary, no trial
    snakemake(wd, overrides={"final": {"activate": False, "top_n": 1}})
    assert evaluated_at(wd / "results") == after


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"search": {"buckets": 0}}, "buckets"),
        ({"search": {"replicas": "three"}}, "replicas"),
        ({"space": "no-such-space"}, "space"),
        ({"target": {"min": 100, "max": 200}}, "target"),
        ({"evaluator": "magic"}, "evaluator"),
        ({"oracle": "/nonexistent/table.csv"}, "oracle"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, override, needle):
    proc = snakemake(tmp_path / "run", overrides=override, check=False, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "results").exists()


# --------------------------------------------------------------------------- training pipeline

TRAIN_CONFIG = {
    "space": "mobilenet-tiny",
    "evaluator": "train",
    "target": {"metric": "madds", "min": 4.0e6, "max": 5.5e6},
    "search": {"buckets": 4, "replicas": 1, "per_sweep": 1, "budget": 6},
    "train": {"dataset": "digits", "epochs": 1, "batch_size": 64},
    "final": {"activate": True, "top_n": 1, "epochs": 1},
    "transfer": {"activate": True, "data": {"num_train": 64, "num_val": 24, "source": "digits"},
                 "recipe": {"epochs": 2}},
}


def mtimes(results: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.glob(pattern)}


@pytest.fixture(scope="module")
def training_run(tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted real-training run (config file, workdir), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("training")
    base = tmp / "train.yaml"
    base.write_text(yaml.safe_dump(TRAIN_CONFIG))
    wd = tmp / "run"
    snakemake(wd, base=str(base), timeout=900)
    return base, wd


@pytest.mark.slow
def test_training_run_ends_with_final_models_and_transfer_table(training_run):
    """Real training end to end (digits): trials, final retraining, detection transfer, report;
    then a transfer-only change re-runs the transfer stage and nothing before it."""
    base, wd = training_run
    res = wd / "results"
    summary = pd.read_json(res / "search" / "summary.json", typ="series")
    assert summary["trials"] == 6 and len(evaluated_at(res)) == 6
    (final_path,) = res.glob("final/*/metrics.json")
    key = final_path.parent.name
    assert pd.read_json(final_path, typ="series")["status"] == "ok" and (final_path.parent / "model.pt").is_file()
    final_table = pd.read_csv(res / "report" / "final_models.csv")
    assert final_table["key"].tolist() == [key]
    table = pd.read_csv(res / "report" / "transfer.csv")
    assert list(table["backbone"].str.split().str[0]) == ["found", "mobilenet_v3_small"]
    assert (table["map"] >= 0).all() and table["pretrained"].tolist() == [True, False]
    metrics = pd.read_json(res / "transfer" / key / "metrics.json", typ="series")
    assert metrics["weights"].endswith(f"final/{key}/model.pt")
    assert metrics["map"] == pytest.approx(table["map"].iloc[0], rel=1e-9)

    before = mtimes(res, "trials/*/metrics.json") | mtimes(res, "final/*/metrics.json")
    transfer_before = mtimes(res, "transfer/*/metrics.json")
    changed = {**TRANSFER_ONLY_CHANGE}
    snakemake(wd, base=str(base), overrides=changed, timeout=900)
    assert mtimes(res, "trials/*/metrics.json") | mtimes(res, "final/*/metrics.json") == before
    after = mtimes(res, "transfer/*/metrics.json")
    assert after.keys() == transfer_before.keys()
    assert all(after[k] > transfer_before[k] for k in after)
    again = pd.read_json(res / "transfer" / key / "metrics.json", typ="series")
    assert again["config"]["epochs"] == 1


TRANSFER_ONLY_CHANGE = {"transfer": {"recipe": {"epochs": 1}}}


@pytest.mark.slow
def test_unhashed_train_fields_rerun_no_trial_and_no_final_retraining(training_run):
    """Where and how fast a trial runs (threads, device, logging) is not part of any key:
    changing it leaves every trial and every final retraining done."""
    base, wd = training_run
    finals = sorted(str(p.relative_to(wd)) for p in (wd / "results").glob("final/*/metrics.json"))
    assert finals
    # Targets: the final models (whose keys would change) and so every trial and stage before them.
    proc = snakemake(wd, "-n", *finals, base=str(base),
                     overrides={"train": {"threads": 2, "log_every": 7, "device": "cpu"}})
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_a_stage_whose_every_trial_failed_stops_the_search(tmp_path):
    """An evaluator that fails for every arch is a broken set-up, not a search result: the run
    stops at the first stage with the common error instead of "succeeding" with no model."""
    proc = snakemake(tmp_path / "wd", overrides={"oracle": "layernas.examples.toy:broken"}, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "every trial of sweep 0 layer 0 failed" in out and "simulated broken evaluator" in out
    assert "layernas retry-failed" in out
    assert not (tmp_path / "wd" / "results" / "search" / "summary.json").exists()


# --------------------------------------------------------------------------- reliability

def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL snakemake and every job it started (they share its session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_for_a_trial_to_finish(proc: subprocess.Popen, results: Path, since: float, limit: float) -> None:
    """Block until a trial of this attempt has finished (or snakemake ended, or ``limit`` s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if any(t > since for t in evaluated_at(results).values()):
            return
        time.sleep(0.1)


def kill_and_resume(wd: Path, config: list[str], kills: int, delay: tuple[float, float], seed: int,
                    cores: int = 1, timeout: int = 300) -> Path:
    """SIGKILL snakemake and its jobs ``kills`` times, resuming each time with the documented
    command (--unlock, then the same command; the profile sets --rerun-incomplete); asserts no
    trial that had finished was evaluated again.

    Each kill lands a seeded random ``delay`` after the attempt's first finished trial, not after
    process start: start-up takes 3.5 s here and 10+ s on a slow CI machine, and a fixed clock
    let every kill land before any trial ran (so the test proved nothing) or, on a fast machine,
    after the search ended. Measured from progress, each attempt finishes at least one trial and
    each kill hits whatever runs next (a trial starting, mid-evaluation, writing, an aggregate)."""
    import random

    rng = random.Random(seed)
    wd.mkdir()
    results = wd / "results"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores),
           "-d", str(wd), "--configfile", *config]
    finished: dict[str, float] = {}
    done = 0
    for _ in range(kills):
        since = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_a_trial_to_finish(proc, results, since, limit=timeout)
        time.sleep(rng.uniform(*delay))
        ended = proc.poll() is not None
        _kill_group(proc)
        if ended:
            break
        done += 1
        for k, t in evaluated_at(results).items():
            assert finished.setdefault(k, t) == t, f"finished trial {k} was evaluated again"
        subprocess.run([*cmd, "--unlock"], capture_output=True, check=True, timeout=120)
    assert done == kills, f"the search finished after {done} kills; kill earlier"
    assert finished, "no trial had finished at any kill: the test would prove nothing"
    run_snakemake(cmd, timeout)
    after = evaluated_at(results)
    assert {k: after[k] for k in finished} == finished, "a finished trial was evaluated again"
    return results


@pytest.mark.slow
def test_ten_sigkills_at_random_moments_change_nothing(tmp_path, reference):
    """SIGKILL at 10 seeded random moments of a tabular search (one trial at a time, so 10 kills
    cannot outrun its 19 trials): same tables as an uninterrupted run, and no trial that had
    finished is evaluated again."""
    res = kill_and_resume(tmp_path / "run", [TEST_CONFIG, "--config", SLOW_ORACLE], 10, (0.0, 2.0), seed=10)
    assert len(evaluated_at(res)) == 19
    assert_same_tables(tables(res), tables(reference), ignore_key=True)


@pytest.mark.slow
def test_sigkills_during_real_training_change_nothing(tmp_path, training_run):
    """The kill-anywhere test with real training (digits), 3 seeded moments mid-training: same
    bucket tables, keys and best model as the uninterrupted run, no finished trial trained again."""
    base = tmp_path / "train.yaml"
    base.write_text(yaml.safe_dump({**TRAIN_CONFIG, "final": {"activate": False}, "transfer": {"activate": False}}))
    # One job at a time and kills within 2.5 s of a finished trial (a trial job takes longer):
    # each attempt finishes one or two of the 6 trials. With two jobs at a time and up to 8 s,
    # the search once ended before the third kill.
    res = kill_and_resume(tmp_path / "run", [str(base)], 3, (0.0, 2.5), seed=3, cores=1, timeout=900)
    ref = training_run[1] / "results"
    assert_same_tables(tables(res), tables(ref))
    best = [pd.read_json(r / "search" / "summary.json", typ="series")["best"] for r in (res, ref)]
    assert best[0] == best[1]


FLAKY = {
    "space": "mobilenet-tiny",
    "evaluator": "tabular",
    "oracle": "layernas.examples.toy:separable_flaky",
    "trial_timeout": 2,
    "target": {"metric": "madds", "min": 3.0e6, "max": 3.6e6},
    "search": {"buckets": 10, "replicas": 1, "per_sweep": 2, "budget": 40},
    "final": {"activate": False},
}


@pytest.mark.slow
def test_failing_trials_are_recorded_not_retried_until_asked(tmp_path):
    """~10% of trials crash, return NaN or hang past trial_timeout: the search completes, each
    failure is recorded with its error and shown by `layernas status`, a rerun does not retry
    them, and `layernas retry-failed` + the same command evaluates exactly those again."""
    import json

    from layernas.core.space import parse_arch
    from layernas.examples.toy import flaky_kind

    space = load_space("mobilenet-tiny")
    base = tmp_path / "flaky.yaml"
    base.write_text(yaml.safe_dump(FLAKY))
    wd = tmp_path / "run"

    def run(*extra: str) -> subprocess.CompletedProcess:
        """This budget ends before the target range (a loud outcome: exit status 3); the
        failures, not the outcome, are what this test is about."""
        proc = snakemake(wd, *extra, base=str(base), timeout=600, check=False)
        assert proc.returncode in (0, 3), proc.stderr[-3000:]
        return proc

    run()
    res = wd / "results"
    records = {p.parent.name: json.loads(p.read_text()) for p in (res / "trials").glob("*/metrics.json")}
    expected_error = {"crash": "simulated crash", "nan": "oracle returned nan", "timeout": "TrialTimeout"}
    kinds = {}
    for key, m in records.items():
        kind = flaky_kind(parse_arch(m["arch"], space))
        kinds[key] = kind
        if kind is None:
            assert m["status"] == "ok", m
        else:
            assert m["status"] == "failed" and expected_error[kind] in m["error"], (kind, m)
    failed = {k for k, kind in kinds.items() if kind}
    assert len(failed) >= 3, f"only {len(failed)} failures among {len(records)} trials"
    summary = json.loads((res / "search" / "summary.json").read_text())
    assert summary["failed"] == len(failed) and summary["trials"] == len(records)

    report = pd.read_csv(res / "report" / "failed_trials.csv")
    assert set(report["key"]) == failed
    assert all(expected_error[kinds[k]] in e for k, e in zip(report["key"], report["error"]))

    status = subprocess.run([sys.executable, "-m", "layernas.cli.main", "status", str(res), "--json"],
                            capture_output=True, text=True, check=True)
    st = json.loads(status.stdout)
    assert st["trials"]["failed"] == len(failed)
    assert {e["key"] for e in st["failed_trials"]} <= failed

    before = evaluated_at(res)
    proc = run()
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert evaluated_at(res) == before

    subprocess.run([sys.executable, "-m", "layernas.cli.main", "retry-failed", str(res)], check=True,
                   capture_output=True)
    assert sorted(p.name.split(".")[0] for p in (res / "failed").iterdir()) == sorted(failed)
    run()  # the same command: the run asks for every trial its stages request
    after = evaluated_at(res)
    assert {k: after[k] for k in before if k not in failed} == {k: before[k] for k in before if k not in failed}
    assert all(k in after and after[k] > before[k] for k in failed)


@pytest.mark.slow
def test_second_snakemake_on_the_same_directory_is_refused(tmp_path, reference):
    """Snakemake's lock: a second run on a directory a run is using stops with LockException and
    the message tells what to do; the first run is not disturbed. A search in another directory
    at the same time runs and both end with the tables of an undisturbed run."""
    wd = tmp_path / "run"
    wd.mkdir()
    cmd = [*SNAKEMAKE, "-d", str(wd), "--configfile", TEST_CONFIG, "--config", SLOW_ORACLE]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    other = tmp_path / "other"
    other.mkdir()
    second_search = None
    try:
        deadline = time.time() + 60
        while not list((wd / ".snakemake" / "locks").glob("*")) and time.time() < deadline:
            time.sleep(0.2)
        second_search = subprocess.Popen([*SNAKEMAKE, "-d", str(other), "--configfile", TEST_CONFIG, "--config",
                                          SLOW_ORACLE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        second = snakemake(wd, "--config", SLOW_ORACLE, check=False, timeout=120)
        assert second.returncode != 0
        err = second.stdout + second.stderr
        assert "LockException" in err or "cannot be locked" in err.lower(), err[-2000:]
        assert "--unlock" in err
        assert first.wait(timeout=300) == 0
        assert second_search.wait(timeout=300) == 0
    finally:
        _kill_group(first)
        if second_search is not None:
            _kill_group(second_search)
    assert len(evaluated_at(wd / "results")) == 19
    for d in (wd, other):
        assert_same_tables(tables(d / "results"), tables(reference), ignore_key=True)


def test_arch_for_key_finds_every_child_and_refuses_unknown_keys(reference):
    """The trial rule's params come from this lookup (memoised per table): each key of every
    children table maps to its arch, and a key of no table is an error naming it."""
    from layernas.workflow.stages import arch_for_key

    kids = pd.concat([pd.read_parquet(p) for p in sorted((reference / "search").glob("r*/l*/children.parquet"))])
    assert len(kids)
    for key, arch in zip(kids["key"], kids["arch"]):
        assert arch_for_key(reference, key) == arch
    with pytest.raises(KeyError, match="0123456789abcdef"):
        arch_for_key(reference, "0123456789abcdef")


@pytest.mark.parametrize(
    "space, oracle, search, target",
    [
        pytest.param("appendix-i", appendix_i, {"select": "random", "seed": 3}, {"min": 8, "max": 9},
                     id="select-random"),
        pytest.param("nb201-topology-noop", separable, {"buckets": 5, "replicas": 1, "per_sweep": 2, "budget": 40},
                     {"min": 0, "max": 60e6}, id="nb201-noop-default"),
        pytest.param("nb201-topology-noop", separable, {"buckets": 5, "replicas": 2, "per_sweep": 2, "budget": 25,
                                                        "select": "dearest", "child_order": "interleave"},
                     {"min": 0, "max": 60e6}, id="dearest-interleave-budget"),
    ],
)
def test_workflow_matches_driver_with_random_selection_and_noop_defaults(tmp_path, space, oracle, search, target):
    """The two drivers agree where the engine draws parents at random and where the defaults
    are not option 0 (the NB201 no-op space), so both evaluate the same stage functions."""
    base = {"buckets": 4, "replicas": 2, "per_sweep": 2, "budget": None} | search
    wd = tmp_path / "run"
    snakemake(wd, overrides={"space": space, "oracle": f"layernas.examples.toy:{oracle.__name__}",
                             "search": base, "target": target})
    cfg = SearchConfig(target_min=target["min"], target_max=target["max"], **base)
    engine = run_search(load_space(space), lambda b: [oracle(a) for a in b], cfg)
    wf = tables(wd / "results")
    assert len(wf) == len(engine.tables) and engine.trials > 0
    for (r, l), t in engine.tables.items():
        pd.testing.assert_frame_equal(wf[f"r{r}/l{l}/buckets.parquet"].drop(columns="key"), t.drop(columns="key"))
    hist = pd.read_parquet(wd / "results" / "search" / "history.parquet")
    pd.testing.assert_frame_equal(hist.drop(columns="key"), engine.history_frame().drop(columns="key"))
