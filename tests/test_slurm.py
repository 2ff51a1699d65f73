"""The workflow through `snakemake --profile slurm` on a real single-node SLURM cluster,
started by the project's scripts/slurm_cluster.sh (munge, MariaDB, slurmdbd, slurmctld,
slurmd; the Debian packages are installed when missing). LAYERNAS_SLURM_SCRIPT names
another script with the same `up`/`down` interface.

Skipped, with the reason, only where the cluster cannot be had: not root, no apt-get to
install SLURM, or `up` failed (its output is in the skip reason). The cluster is brought up
once for this module and always brought down afterwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import real_slurm_conf
from trial_records import evaluated_at

from layernas.core.driver import run_search
from layernas.core.search import SearchConfig
from layernas.core.space import load_space
from layernas.examples.toy import appendix_i

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(os.environ.get("LAYERNAS_SLURM_SCRIPT", ROOT / "scripts" / "slurm_cluster.sh"))
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _why_no_slurm() -> str | None:
    if not SCRIPT.exists():
        return f"no cluster script at {SCRIPT}"
    if os.geteuid() != 0:
        return "starting SLURM needs root"
    if not shutil.which("apt-get") and not Path("/usr/sbin/slurmctld").exists():
        return "SLURM is not installed and there is no apt-get to install it (not Debian)"
    return None


@pytest.fixture(scope="module")
def cluster():
    real_slurm_conf()
    why = _why_no_slurm()
    if why:
        pytest.skip(f"SLURM tests skipped: {why}")
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=120)
        pytest.skip(f"SLURM tests skipped: the local cluster did not start:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
    print(up.stdout[-800:])
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=300)


# The .test search with H = 2, K = 1: 10 trials instead of 19 (a SLURM job costs ~6 s here).
SEARCH = {"buckets": 2, "replicas": 1, "per_sweep": 2, "budget": None}


def ci_args(tmp: Path, overrides: dict) -> list[str]:
    """Snakemake arguments for the .test search with a CI override file (results in ``tmp``,
    trials as SLURM jobs, one per job unless the overrides batch them)."""
    cfg = {"results": str(tmp / "results"), "search": SEARCH,
           "resources": {"trial": {"local": False, "runtime": 5, "mem_mb": 500, "batch": 1}}}
    for k, v in overrides.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    (tmp / "ci.yaml").write_text(yaml.safe_dump(cfg))
    return ["--configfile", str(ROOT / ".test" / "config.yaml"), str(tmp / "ci.yaml"),
            "--slurm-init-seconds-before-status-checks", "2"]


def run_profile(tmp: Path, overrides: dict, timeout: int = 600, background: bool = False, extra=()):
    """`snakemake --profile slurm` typed at the project root, with a CI override file."""
    cmd = ["timeout", "-k", "15", str(timeout), str(SNAKEMAKE), "--profile", "slurm", *ci_args(tmp, overrides),
           *extra]
    log = open(tmp / "snakemake.log", "a")
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def show(capsys, title: str, text: str) -> None:
    """Straight to the terminal, passed or failed: the CI log shows SLURM job ids and states."""
    with capsys.disabled():
        print(f"\n--- {title}\n{text}")


def run_ids(log: str) -> set[str]:
    """The SLURM plugin names every job of one snakemake run after its run ID, which it logs."""
    return set(re.findall(r"SLURM run ID: (\S+)", log))


def sacct_jobs(log_path: Path) -> pd.DataFrame:
    """The jobs of the snakemake runs logged in ``log_path``: told apart by job name, because
    neither start times (the cluster's smoke-test job can start in the same second, and
    slurmdbd records it late) nor job ids (the accounting database outlives slurmctld's job-id
    counter across `down`/`up`) separate them from other jobs."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "-o", "JobID,JobName,State,Elapsed"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.strip().splitlines() if line]
    jobs = pd.DataFrame(rows, columns=["jobid", "name", "state", "elapsed"])
    ids = run_ids(log_path.read_text())
    assert ids, "the snakemake log names no SLURM run ID"
    return jobs[jobs.name.isin(ids)].reset_index(drop=True)


def reference_tables():
    engine = run_search(load_space("appendix-i"), lambda b: [appendix_i(a) for a in b],
                        SearchConfig(target_min=8, target_max=9, buckets=SEARCH["buckets"],
                                     replicas=SEARCH["replicas"], per_sweep=SEARCH["per_sweep"]))
    return {f"r{r}/l{l}": t.drop(columns="key") for (r, l), t in engine.tables.items()}, engine.trials


def tables(results: Path) -> dict:
    return {f"{p.parent.parent.name}/{p.parent.name}": pd.read_parquet(p).drop(columns="key")
            for p in sorted((results / "search").glob("r*/l*/buckets.parquet"))}


def assert_tables_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], obj=k)


def test_every_trial_runs_as_a_slurm_job_and_a_cancelled_one_is_resubmitted(cluster, tmp_path, capsys):
    """One trial job is scancel'ed while running: sacct and the snakemake log name it, the
    profile's `retries: 1` resubmits it and the run finishes with the local run's tables, every
    trial completed as exactly one SLURM job; the same command again has nothing to do.
    (One test, not two: each SLURM run here costs ~1.5 min, mostly the plugin's status polling.
    The resume of a failed SLURM run is the controller test below.)"""
    slow = {"oracle": "layernas.examples.toy:appendix_i_slow"}
    proc = run_profile(tmp_path, slow, background=True)
    cancelled = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        q = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if q:
            cancelled = q[0]
            subprocess.run(["scancel", cancelled], check=True)
            break
        time.sleep(0.5)
    assert cancelled, "no running trial job to cancel"
    rc = proc.wait(timeout=600)
    log = (tmp_path / "snakemake.log").read_text()
    assert rc == 0, log[-3000:]
    assert f"SLURM-job '{cancelled}' failed" in log, log[-3000:]  # the failure names the job
    ref, n_trials = reference_tables()
    assert_tables_equal(tables(tmp_path / "results"), ref)
    first = evaluated_at(tmp_path / "results")
    assert len(first) == n_trials

    proc2 = run_profile(tmp_path, slow)
    log = (tmp_path / "snakemake.log").read_text()
    assert proc2.returncode == 0 and "Nothing to be done" in log, log[-3000:]
    assert evaluated_at(tmp_path / "results") == first

    time.sleep(2)
    jobs = sacct_jobs(tmp_path / "snakemake.log")
    show(capsys, "sacct: this test's trial jobs (both runs)", jobs.to_string())
    assert jobs.set_index("jobid").loc[cancelled, "state"].startswith("CANCELLED")
    done = jobs[jobs.state == "COMPLETED"]
    assert len(done) == n_trials, f"expected {n_trials} completed trial jobs, sacct shows:\n{jobs}"
    for jid in done.jobid:
        assert f"SLURM jobid {jid} " in log, f"job {jid} not in the snakemake log"


def test_oversized_memory_request_is_rejected_clearly(cluster, tmp_path):
    proc = run_profile(tmp_path, {"resources": {"trial": {"local": False, "runtime": 5, "mem_mb": 10_000_000, "batch": 1}}},
                       timeout=300)
    log = (tmp_path / "snakemake.log").read_text()
    assert proc.returncode != 0
    assert "sbatch" in log.lower() and ("memory" in log.lower() or "mem" in log.lower()), log[-3000:]


def test_trial_over_its_time_limit_is_reported_as_timeout(cluster, tmp_path):
    # --retries 0: the profile's retry would wait out the 1-minute limit a second time
    proc = run_profile(tmp_path, {"oracle": "layernas.examples.toy:appendix_i_stuck",
                                  "resources": {"trial": {"local": False, "runtime": 1, "mem_mb": 500, "batch": 1}}},
                       timeout=400, extra=["--retries", "0"])
    log = (tmp_path / "snakemake.log").read_text()
    assert proc.returncode != 0
    jobs = sacct_jobs(tmp_path / "snakemake.log")
    print(jobs.to_string())
    assert (jobs.state == "TIMEOUT").any(), jobs
    assert "TIMEOUT" in log, log[-3000:]


def jobs_named(name: str) -> pd.DataFrame:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "--name", name,
                          "-o", "JobID,JobName,State,Elapsed"], capture_output=True, text=True, check=True).stdout
    return pd.DataFrame([line.split("|") for line in out.strip().splitlines() if line],
                        columns=["jobid", "name", "state", "elapsed"])


def test_controller_killed_mid_search_is_resumed_by_its_successor(cluster, tmp_path, capsys):
    """The walltime/preemption recipe with the shipped wrapper: slurm/controller.sbatch runs
    the controller as a SLURM job and queues its successor; scancel of the controller mid-search
    (what a walltime kill does: SIGTERM, then SIGKILL) starts the successor, which unlocks and
    finishes the search. Same tables as an uninterrupted run; no trial finished before the kill
    is evaluated again; the successor's own successor is cancelled once the search is done."""
    name = f"layernas-ctl-{uuid.uuid4().hex[:8]}"
    args = ci_args(tmp_path, {"oracle": "layernas.examples.toy:appendix_i_slow"})
    env = {**os.environ, "LAYERNAS_RESUBMITS": "3", "LAYERNAS_SNAKEMAKE": str(SNAKEMAKE)}
    first = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", f"--output={tmp_path}/slurm-controller-%j.log",
                            str(ROOT / "slurm" / "controller.sbatch"), *args],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    results = tmp_path / "results"
    deadline = time.time() + 300
    while len(evaluated_at(results)) < 3 and time.time() < deadline:
        time.sleep(0.5)
    before = evaluated_at(results)
    assert len(before) >= 3, f"the controller finished no trials in 300 s:\n{jobs_named(name)}"
    subprocess.run(["scancel", first], check=True)

    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(2)
        queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True).stdout
        if not queued.strip():
            break
    time.sleep(2)  # slurmdbd records the end states a moment later
    jobs = jobs_named(name)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("slurm-controller-*.log")))
    show(capsys, "sacct: controller jobs", jobs.to_string())
    print(logs[-3000:])
    assert jobs.set_index("jobid").loc[first, "state"].startswith("CANCELLED")
    completed = jobs[jobs.state == "COMPLETED"]
    assert len(completed) == 1, f"expected one successor to complete the search:\n{jobs}\n{logs[-3000:]}"
    assert len(jobs) == 2, jobs
    assert "TERM received" in logs and "Terminating processes on user request" in logs  # trials cancelled
    # the successor's own successor (pending, never started: sacct does not list it) was cancelled
    spare = re.search(r"successor (\d+) cancelled \(snakemake ended by itself\)", logs)
    assert spare and spare.group(1) not in set(jobs.jobid), logs[-3000:]
    ref, n_trials = reference_tables()
    assert_tables_equal(tables(results), ref)
    after = evaluated_at(results)
    assert len(after) == n_trials
    assert {k: after[k] for k in before} == before, "a trial finished before the kill was evaluated again"


def _kill_controller(proc: subprocess.Popen) -> None:
    """SIGKILL the controller (and its `timeout` wrapper): its SLURM jobs run on."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_batched_trials_survive_controller_kills_and_cancelled_jobs(cluster, tmp_path, capsys):
    """Trial batches (every trial of a stage in one SLURM job): the controller is SIGKILLed
    twice at seeded random moments and a running batch job is scancel'ed along the way; each
    time the documented recipe resumes (`--unlock`, then the same command). The search ends with
    the tables of an uninterrupted run, and no trial that had finished is evaluated again."""
    import random

    rng = random.Random(13)
    # The whole trial section: ci_args merges one level deep, and {"batch": "all"} alone dropped
    # local: false, so the lookups ran inside the controller and no SLURM job was ever started.
    batched = {"oracle": "layernas.examples.toy:appendix_i_slow",
               "resources": {"trial": {"local": False, "runtime": 5, "mem_mb": 500, "batch": "all"}}}
    results = tmp_path / "results"
    finished: dict[str, float] = {}
    cancelled = []
    for attempt in range(3):
        proc = run_profile(tmp_path, batched, background=True)
        if attempt == 2:
            break
        since = time.time()
        deadline = since + 300
        while time.time() < deadline and proc.poll() is None:
            if any(t > since for t in evaluated_at(results).values()):
                break
            time.sleep(0.5)
        if attempt == 0:  # scancel a running batch job, then let the profile's retry resubmit it
            # A stage's batch may have just ended when its first trial is seen: wait for the
            # next running job (between stages none runs for a moment).
            while time.time() < deadline and proc.poll() is None and not cancelled:
                q = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout.split()
                if q:
                    subprocess.run(["scancel", q[0]], check=True)
                    cancelled.append(q[0])
                time.sleep(0.2)
        time.sleep(rng.uniform(1.0, 6.0))
        assert proc.poll() is None, "the search ended before the kill; kill earlier"
        _kill_controller(proc)
        for k, t in evaluated_at(results).items():
            assert finished.setdefault(k, t) == t, f"finished trial {k} was evaluated again"
        subprocess.run(["timeout", "120", str(SNAKEMAKE), "--profile", "slurm", *ci_args(tmp_path, batched), "--unlock"],
                       cwd=ROOT, capture_output=True, check=True)
    rc = proc.wait(timeout=600)
    log = (tmp_path / "snakemake.log").read_text()
    assert rc == 0, log[-3000:]
    assert finished and cancelled, "the kills and the scancel should land mid-search"
    ref, n_trials = reference_tables()
    assert_tables_equal(tables(results), ref)
    after = evaluated_at(results)
    assert len(after) == n_trials
    assert {k: after[k] for k in finished} == finished, "a trial finished before a kill was evaluated again"
    time.sleep(2)
    jobs = sacct_jobs(tmp_path / "snakemake.log")
    show(capsys, "sacct: batched trial jobs (three controllers)", jobs.to_string())
    batches = len(list((results / "search").glob("r*/l*/batch*.json")))
    assert (jobs.state == "COMPLETED").sum() >= batches, jobs  # each batch's manifest: one completed job


def test_slurm_profile_sets_what_users_edit():
    prof = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["scheduler"] == "greedy"
    assert prof["rerun-incomplete"] is True
    assert "slurm_partition" in prof["default-resources"]
    assert prof["default-resources"]["cpus_per_task"] == "threads"
    assert prof["slurm-delete-logfiles-older-than"] == 0  # the plugin's sweep deletes queued jobs' log dirs


def test_default_workflow_profile_does_not_override_the_slurm_profile():
    """`snakemake --profile slurm` also loads profiles/default, whose keys win over the named
    profile's: every key both set must agree, or the local value silently replaces SLURM's."""
    slurm = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    local = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert {k: local[k] for k in local if k in slurm} == {k: slurm[k] for k in local if k in slurm}
    assert "latency-wait" not in local
