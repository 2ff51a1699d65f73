"""A trial store shared by several results directories (the config's `trials:`), and a deleted or
corrupted trial redone by the same command. Real Snakemake runs of .test/config.yaml (Appendix I
toy space, table lookups; a 1 s lookup that counts its calls where runs must overlap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from layernas.core.driver import run_search
from layernas.core.search import SearchConfig
from layernas.core.space import load_space
from layernas.examples.toy import appendix_i
from layernas.store.keys import train_hash, trial_key
from layernas.store.layout import Layout
from layernas.workflow.config import ConfigError, trial_store

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
NO_REPORT = {"report": {"activate": False}}  # the report's plots are not what is tested here
TRIALS = 19  # trials of the .test search (tests/test_workflow.py)


def command(wd: Path, overrides: dict) -> list[str]:
    wd.mkdir(parents=True, exist_ok=True)
    cfg = wd.parent / f"{wd.name}-overrides.yaml"
    cfg.write_text(yaml.safe_dump({**NO_REPORT, **overrides}))
    return [*SNAKEMAKE, "-d", str(wd), "--configfile", str(TEST_CONFIG), str(cfg)]


def snakemake(wd: Path, overrides: dict, *extra: str, timeout: int = 300) -> str:
    proc = subprocess.run([*command(wd, overrides), *extra], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def _finished(store: Path) -> dict[str, float]:
    """finished_at of every finished trial in a trial store (trial_records.evaluated_at reads
    <results>/trials only); unchanged when a trial is found or restored, not evaluated again."""
    out = {}
    for p in store.glob("*/metrics.json"):
        out[p.parent.name] = json.loads(p.read_text())["finished_at"]
    return out


def tables(results: Path) -> dict[str, pd.DataFrame]:
    search = results / "search"
    return {str(p.relative_to(search)): pd.read_parquet(p) for p in sorted(search.glob("r*/l*/buckets.parquet"))}


def assert_same_tables(a: dict, b: dict, ignore_key: bool = False) -> None:
    assert list(a) == list(b) and a
    for name in a:
        x, y = (a[name].drop(columns="key"), b[name].drop(columns="key")) if ignore_key else (a[name], b[name])
        pd.testing.assert_frame_equal(x, y, obj=name)


def requested(results: Path) -> set[str]:
    """Every trial key the search's children tables ask to evaluate."""
    keys: set[str] = set()
    for p in (results / "search").glob("r*/l*/children.parquet"):
        kids = pd.read_parquet(p)
        keys |= set(kids.loc[kids["action"] == "evaluate", "key"])
    return keys


def jobs_run(results: Path) -> set[str]:
    """Keys whose trial job this results directory ran (its per-job trial logs)."""
    return {p.stem for p in (results / "logs" / "trials").glob("*.log")}


def layernas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layernas.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def toy_tables(target: tuple[float, float]) -> dict:
    """The in-process search of the .test settings (the workflow writes the same tables)."""
    cfg = SearchConfig(target_min=target[0], target_max=target[1], buckets=4, replicas=2, per_sweep=2)
    engine = run_search(load_space("appendix-i"), lambda b: [appendix_i(a) for a in b], cfg)
    return {f"r{r}/l{l}/buckets.parquet": t for (r, l), t in engine.tables.items()}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path]:
    """One search into a shared store (the store, the run's working directory)."""
    tmp = tmp_path_factory.mktemp("shared")
    store = tmp / "store"
    snakemake(tmp / "first", {"trials": str(store)})
    return store, tmp / "first"


# --------------------------------------------------------------------------- the config field


def test_trials_field_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert trial_store({"results": "results"}) is None
    assert trial_store({"results": "results", "trials": None}) is None
    assert trial_store({"results": "res", "trials": "res/trials"}) is None  # the default, named
    assert trial_store({"results": "results", "trials": "../store"}) == tmp_path.parent / "store"
    monkeypatch.setenv("LAYERNAS_TEST_SCRATCH", str(tmp_path / "scratch"))
    assert trial_store({"trials": "$LAYERNAS_TEST_SCRATCH/t"}) == tmp_path / "scratch" / "t"
    for bad, needle in [("$LAYERNAS_NO_SUCH_VARIABLE/t", "not set"), ("results", "is the results directory"),
                        (".", "holds it")]:
        with pytest.raises(ConfigError, match=needle):
            trial_store({"results": "results", "trials": bad})
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        trial_store({"results": "results", "trials": "afile"})


def test_layout_takes_the_store_and_finds_it_from_search_json(tmp_path):
    default = Layout(tmp_path / "r")
    assert default.trial_dir("k") == tmp_path / "r" / "trials" / "k" and not default.shared_store
    lay = Layout(tmp_path / "r", trials_dir=tmp_path / "s")
    assert lay.trial_metrics("k") == tmp_path / "s" / "k" / "metrics.json" and lay.area("trials") == tmp_path / "s"
    assert lay.shared_store and lay.final_dir("k") == tmp_path / "r" / "final" / "k"
    assert Layout.of_results(tmp_path / "r").trials_dir == tmp_path / "r" / "trials"  # no search.json
    default.search_meta.parent.mkdir(parents=True)
    default.search_meta.write_text(json.dumps({"trials": str(tmp_path / "s")}))
    assert Layout.of_results(tmp_path / "r").trials_dir == tmp_path / "s"
    default.search_meta.write_text('{"trials": nul')  # unreadable: the default (the audit says why)
    assert Layout.of_results(tmp_path / "r").trials_dir == tmp_path / "r" / "trials"


# --------------------------------------------------------------------------- sharing


def test_a_second_results_directory_evaluates_no_trial(shared, tmp_path):
    """(a) A second results directory on the same store: its search evaluates zero trials, runs no
    trial job, and writes the same tables; status and audit read the store from search.json."""
    store, first = shared
    before = _finished(store)
    assert len(before) == TRIALS and not (first / "results" / "trials").exists()
    meta = json.loads((first / "results" / "search" / "search.json").read_text())
    assert meta["trials"] == str(store)

    t0 = time.perf_counter()
    proc = snakemake(tmp_path / "second", {"trials": str(store)})
    # The progress lines say the stage's trials are already there, so nobody waits for training.
    assert "sweep 0 layer 0: 4 children, 4 to evaluate (0 cached, 0 dropped, 4 already in the trial store)" \
        in proc
    print(f"\nsecond results directory on the shared store: {time.perf_counter() - t0:.1f} s, "
          f"{len(jobs_run(tmp_path / 'second' / 'results'))} trial jobs")
    second = tmp_path / "second" / "results"
    assert _finished(store) == before, "a trial was evaluated again"
    assert jobs_run(second) == set()
    assert_same_tables(tables(second), tables(first / "results"))

    st = json.loads(layernas("status", str(second), "--json").stdout)
    assert st["trials"]["pending"] == 0 and st["trials"]["ok"] == TRIALS
    audit = layernas("audit", str(second), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["checked"]["trials"] == TRIALS


COUNTED = """import os, time
from layernas.examples.toy import appendix_i
def lookup(arch):  # appendix_i_slow, one line in $LAYERNAS_TEST_CALLS per evaluation
    with open(os.environ["LAYERNAS_TEST_CALLS"], "a") as f:
        f.write("-".join(map(str, arch)) + "\\n")
    time.sleep(1.0)
    return appendix_i(arch)
"""


def test_two_searches_at_once_on_one_store(tmp_path, monkeypatch):
    """(b) Two snakemake processes, other working and results directories, one store, started
    together (1 s lookups, so they overlap on the same keys): both succeed, every key is evaluated
    once (the second job for a key waits on its lock, then restores it), every record in the
    store is whole and holds its key's arch, and both have the tables of a lone run."""
    store, calls = tmp_path / "store", tmp_path / "calls.txt"
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "counted_oracle.py").write_text(COUNTED)
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "mod"), os.environ.get("PYTHONPATH", "")]),
           "LAYERNAS_TEST_CALLS": str(calls)}
    cfg = {"trials": str(store), "oracle": "counted_oracle:lookup"}
    procs = [subprocess.Popen(command(tmp_path / name, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, env=env) for name in ("a", "b")]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-4000:]

    space = load_space("appendix-i")
    h = train_hash({"evaluator": "tabular", "oracle": "counted_oracle:lookup"})
    evaluated = calls.read_text().split()
    assert len(evaluated) == len(set(evaluated)) == TRIALS, "a key was evaluated twice"
    dirs = sorted(store.iterdir())
    assert len(dirs) == TRIALS
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        rec = json.loads((d / "finished.json").read_text())
        inputs = json.loads((d / "trial.json").read_text())
        assert m["status"] == "ok" and trial_key(space.space_id, m["arch"], h, 0) == d.name
        assert rec["key"] == d.name and rec["arch"] == m["arch"] == inputs["arch"]
        assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    lone = toy_tables((8, 9))
    for name in ("a", "b"):
        assert_same_tables(tables(tmp_path / name / "results"), lone, ignore_key=True)
    ran = [jobs_run(tmp_path / name / "results") for name in ("a", "b")]
    print(f"\ntwo searches at once: trial jobs {len(ran[0])} + {len(ran[1])}, both ran {len(ran[0] & ran[1])} "
          f"keys, {len(evaluated)} evaluations, {TRIALS} trials in the store")


def test_a_job_for_a_finished_key_leaves_its_metrics_in_place(shared, tmp_path):
    """Snakemake deletes a job's existing output before running it: a search whose DAG was built
    before another search finished a key would remove that finished trial's metrics.json for as
    long as its own job takes to start (on SLURM: its time in the queue). A trial record is never a
    job's output (a trial batch's manifest is), so it is left in place. Forced trial jobs over a
    finished store stand in for that race: no metrics.json is ever missing (polled every 2 ms),
    none is evaluated again."""
    import threading

    store, first = shared
    wd = Path(shutil.copytree(first, tmp_path / "wd", symlinks=True))
    trials = Path(shutil.copytree(store, tmp_path / "store"))
    cfg = {"trials": str(trials)}
    snakemake(wd, cfg)  # the new store path re-runs the search stages once; no trial job
    shutil.rmtree(wd / "results" / "logs" / "trials")  # the first search's job logs
    before = _finished(trials)
    paths = [trials / k / "metrics.json" for k in before]
    missing: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            missing.update(p.parent.name for p in paths if not p.exists())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = snakemake(wd, cfg, "--forcerun", "trial")
    finally:
        stop.set()
        watcher.join()
    # Every trial batch ran again and found each of its keys finished: nothing evaluated.
    handled = [t for p in (wd / "results" / "search").glob("r*/l*/batch*.json") for t in json.loads(p.read_text())["trials"]]
    assert {t["key"] for t in handled} == set(before) and not any(t["ran"] for t in handled), out[-2000:]
    assert not jobs_run(wd / "results")
    assert not missing, f"metrics.json of {sorted(missing)} vanished while their jobs ran"
    assert _finished(trials) == before


def test_a_lower_target_reuses_every_trial_it_can(shared, tmp_path):
    """(c) A search with a target 30% lower (same space, oracle, seed) on the same store: every
    trial it asks for that the first search finished is found by its key, only the others run."""
    store, first = shared
    before = _finished(store)
    target = {"min": 8 * 0.7, "max": 9 * 0.7}
    snakemake(tmp_path / "lower", {"trials": str(store), "target": target})
    results = tmp_path / "lower" / "results"
    after = _finished(store)
    asked = requested(results)
    hits = asked & set(before)
    assert {k: after[k] for k in before} == before, "a trial of the first search was evaluated again"
    assert jobs_run(results) == asked - hits == set(after) - set(before)
    assert_same_tables(tables(results), toy_tables((target["min"], target["max"])), ignore_key=True)
    print(f"\nlower target (appendix-i, target {target['min']:g}-{target['max']:g}): {len(asked)} trials asked, "
          f"{len(hits)} found in the store (cache hits), {len(asked - hits)} evaluated")
    assert hits


# config.yaml's space, target, H, K and R; budget 60, not 30: with these lookups 30 trials end
# before any model in the default target range is evaluated (measured with `layernas search`).
MOBILENET = {"space": "mobilenet-tiny", "evaluator": "tabular", "oracle": "layernas.examples.toy:separable",
             "search": {"buckets": 10, "replicas": 1, "per_sweep": 2, "budget": 60},
             "target": {"metric": "madds", "min": 3.5e6, "max": 4.0e6}}


@pytest.mark.slow
def test_a_lower_target_reuses_trials_on_mobilenet_tiny(tmp_path):
    """(c) on the default run's space and search settings (config.yaml, budget 60), with a
    table-lookup oracle instead of training: the default target, then one 30% lower, on one store."""
    store = tmp_path / "store"
    snakemake(tmp_path / "default", {**MOBILENET, "trials": str(store)}, timeout=600)
    before = _finished(store)
    lower = {"metric": "madds", "min": 3.5e6 * 0.7, "max": 4.0e6 * 0.7}
    snakemake(tmp_path / "lower", {**MOBILENET, "trials": str(store), "target": lower}, timeout=600)
    results = tmp_path / "lower" / "results"
    after = _finished(store)
    asked = requested(results)
    hits = asked & set(before)
    assert {k: after[k] for k in before} == before
    assert jobs_run(results) == asked - hits == set(after) - set(before)
    print(f"\nlower target (mobilenet-tiny, {lower['min']:.4g}-{lower['max']:.4g} MAdds): first search "
          f"{len(before)} trials; second {len(asked)} asked, {len(hits)} cache hits, {len(asked - hits)} evaluated")
    assert hits


# --------------------------------------------------------------------------- a deleted or corrupted trial


@pytest.fixture(scope="module")
def lone(tmp_path_factory) -> Path:
    """One finished run in the default layout (results/trials), copied by the tests below."""
    wd = tmp_path_factory.mktemp("lone") / "wd"
    snakemake(wd, {})
    return wd


def _stage_key(results: Path) -> str:
    """A key of a stage that later stages build on (sweep 0, layer 1)."""
    kids = pd.read_parquet(results / "search" / "r0" / "l1" / "children.parquet")
    return str(kids.loc[kids["action"] == "evaluate", "key"].iloc[0])


@pytest.mark.parametrize("layout", ["default", "shared"])
def test_deleted_or_corrupted_trial_is_redone_by_the_same_command(layout, lone, shared, tmp_path):
    """Delete a trial's directory: the same command redoes that trial only (the stages after it
    re-run by mtime) and the tables come out the same. Corrupt a metrics.json (Snakemake cannot
    see it): `layernas audit --fix` deletes it, and the same command redoes it."""
    if layout == "default":
        wd = Path(shutil.copytree(lone, tmp_path / "wd", symlinks=True))
        overrides, trials = {}, wd / "results" / "trials"
    else:
        store, first = shared  # a store of its own: the module's store stays as the other tests expect it
        wd = Path(shutil.copytree(first, tmp_path / "wd", symlinks=True))
        trials = Path(shutil.copytree(store, tmp_path / "store"))
        overrides = {"trials": str(trials)}
        snakemake(wd, overrides)  # the new store path re-runs the (cheap) search stages once
    results = wd / "results"
    reference = tables(results)
    before = _finished(trials)
    assert "Nothing to be done" in snakemake(wd, overrides)

    key = _stage_key(results)
    shutil.rmtree(trials / key)
    st = json.loads(layernas("status", str(results), "--json").stdout)
    assert st["trials"]["pending"] == 1 and not st["done"]  # not done until the same command redid it
    out = snakemake(wd, overrides)
    after = _finished(trials)
    assert after[key] > before[key] and {k: v for k, v in after.items() if k != key} == \
        {k: v for k, v in before.items() if k != key}, "another trial was evaluated again"
    assert_same_tables(tables(results), reference)
    assert "Nothing to be done" in snakemake(wd, overrides), out[-3000:]

    other = next(k for k in sorted(before) if k != key)
    metrics = trials / other / "metrics.json"
    st = metrics.stat()
    metrics.write_text('{"status": "o')
    os.utime(metrics, ns=(st.st_atime_ns, st.st_mtime_ns))  # damage without a write time (bit rot, a bad copy)
    assert "Nothing to be done" in snakemake(wd, overrides)  # what Snakemake cannot see
    fix = layernas("audit", str(results), "--fix", "--json")
    assert json.loads(fix.stdout)["removed"] == [str(trials / other)], fix.stdout + fix.stderr
    snakemake(wd, overrides)
    again = _finished(trials)
    assert again[other] > after[other]
    assert {k: v for k, v in again.items() if k != other} == {k: v for k, v in after.items() if k != other}
    assert_same_tables(tables(results), reference)
    assert layernas("audit", str(results)).returncode == 0
