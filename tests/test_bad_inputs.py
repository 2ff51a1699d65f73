"""The bad-input corpus (tests/bad_inputs/, indexed by cases.yaml) through the two user entry
points: the Snakemake workflow and the `layernas` command. Each bad input gives one error line
naming the field and the bad value, before any job starts, and nothing under results/ is created
or changed; an oracle table without an arch the search needs fails only that trial, recorded.

Every case is a subprocess. They run a few at a time (`outcomes` below): a Snakemake start-up
is mostly waiting (imports, executor-plugin probes), not CPU, so this keeps the file short
without loading the machine much more than running them one by one."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"
TEST_CONFIG = str(ROOT / ".test" / "config.yaml")
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1"]
LAYERNAS = [sys.executable, "-m", "layernas.cli.main"]
WORKERS = 3
# Run after the finished partial-oracle run, in its directory: rejected by the schema check and
# by the semantic check (common.smk) respectively.
AFTER_GOOD_RUN = ("config_buckets_zero.yaml", "config_target_unreachable.yaml")


def case_id(case: dict) -> str:
    return case.get("id") or f"{Path(case['file']).stem}-{case['entry']}"


CASES = {case_id(c): c for c in yaml.safe_load((BAD / "cases.yaml").read_text())}
ERROR_CASES = [cid for cid, c in CASES.items() if c["entry"] in ("workflow", "cli")]
TRIAL_CASE = next(cid for cid, c in CASES.items() if c["entry"] == "trial")


def fill(obj, case: dict):
    """``{file}`` -> the case file's absolute path, in nested config values and CLI args."""
    if isinstance(obj, dict):
        return {k: fill(v, case) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v, case) for v in obj]
    if isinstance(obj, str) and case.get("file"):
        return obj.replace("{file}", str(BAD / case["file"]))
    return obj


def snakemake(workdir: Path, override: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "-d", str(workdir), "--configfile", TEST_CONFIG, str(override)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# Snakemake's own notice, printed before it reads the Snakefile whenever profiles/default is
# loaded (the README's commands always load it); everything after it must be our one line.
PROFILE_NOTICE = re.compile(r"Using (profile \S+ and )?workflow specific profile \S+ for setting default command line arguments\.")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not PROFILE_NOTICE.fullmatch(line)]


def snapshot(results: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(results)): (p.stat().st_mtime_ns, p.stat().st_size) for p in results.rglob("*")}


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    workdir: Path
    # trial case only: each AFTER_GOOD_RUN config run in the finished run's directory, and
    # the results/ snapshots before and after it
    after: dict[str, tuple[subprocess.CompletedProcess, dict, dict]] = field(default_factory=dict)


def run_case(case: dict, tmp: Path) -> Outcome:
    """Run one case in its own directory ``tmp``."""
    tmp.mkdir(parents=True)
    if case["entry"] == "cli":
        proc = subprocess.run([*LAYERNAS, *shlex.split(fill(case["args"], case))], cwd=tmp,
                              capture_output=True, text=True, timeout=120)
        return Outcome(proc, tmp)
    if "config" in case:
        override = tmp / "override.yaml"
        override.write_text(yaml.safe_dump(fill(case["config"], case)))
    else:
        override = BAD / case["file"]
    out = Outcome(snakemake(tmp / "run", override), tmp / "run")
    if case["entry"] == "trial" and out.proc.returncode in (0, 3):  # 3: finished, no model in target
        for name in AFTER_GOOD_RUN:
            before = snapshot(out.workdir / "results")
            proc = snakemake(out.workdir, BAD / name)
            out.after[name] = (proc, before, snapshot(out.workdir / "results"))
    return out


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case, run concurrently once per module (``-k`` runs only what it selects);
    the trial case, the longest, first."""
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "cid" in params:
            wanted.add(params["cid"])
        if getattr(item, "originalname", None) in ("test_missing_oracle_arch_fails_only_that_trial",
                                                   "test_bad_config_after_a_finished_run_changes_nothing"):
            wanted.add(TRIAL_CASE)
    base = tmp_path_factory.mktemp("bad_inputs")
    order = sorted(wanted, key=lambda cid: (CASES[cid]["entry"] != "trial", cid))
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {cid: pool.submit(run_case, CASES[cid], base / cid) for cid in order}
        return {cid: f.result() for cid, f in futures.items()}


def test_index_is_consistent():
    ids = [case_id(c) for c in yaml.safe_load((BAD / "cases.yaml").read_text())]
    assert len(ids) == len(set(ids)), "duplicate case ids in cases.yaml"
    for case in CASES.values():
        assert case["entry"] in ("workflow", "cli", "trial") and case["needles"]
        assert "file" not in case or (BAD / case["file"]).is_file(), case["file"]
    listed = {c["file"] for c in CASES.values() if "file" in c}
    assert listed == {p.name for p in BAD.iterdir()} - {"cases.yaml"}, "a corpus file without a case"
    assert len(listed) >= 20


@pytest.mark.parametrize("cid", ERROR_CASES)
def test_bad_input_is_one_clear_error_line(cid, outcomes):
    case = CASES[cid]
    proc, workdir = outcomes[cid].proc, outcomes[cid].workdir
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    if case["entry"] == "cli":
        assert proc.returncode == 2
        assert lines[0].startswith("layernas: error: ")
        assert list(workdir.iterdir()) == [], "the CLI wrote files for a rejected input"
    else:
        assert proc.returncode != 0
        assert lines[0].startswith("layernas: config error: config field ")
        assert not (workdir / "results").exists()
    missing = [n for n in case["needles"] if n not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"


def test_missing_oracle_arch_fails_only_that_trial(outcomes):
    """A table without an arch the search needs cannot be found out up front (the search picks
    the archs): the run goes on, and each such trial is recorded failed, naming its arch."""
    proc, workdir = outcomes[TRIAL_CASE].proc, outcomes[TRIAL_CASE].workdir
    # Its 4-trial budget ends before an in-target model succeeds: a loud outcome (exit 3), not an error.
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    results = workdir / "results"
    metrics = [json.loads(p.read_text()) for p in sorted(results.glob("trials/*/metrics.json"))]
    failed = [m for m in metrics if m["status"] == "failed"]
    assert failed and len(failed) < len(metrics)
    for m in failed:
        assert f"{CASES[TRIAL_CASE]['needles'][0]} {m['arch']}" in m["error"]
        assert m["arch"] in (results / "logs" / "trials" / f"{m['key']}.log").read_text()
    summary = json.loads((results / "search" / "summary.json").read_text())
    assert summary["failed"] == len(failed) and summary["trials"] == len(metrics)


def test_bad_config_after_a_finished_run_changes_nothing(outcomes):
    """The partial-oracle run above finished; a bad config run in its directory stops before
    any job and leaves every file under results/ as it was (mtime and size)."""
    after = outcomes[TRIAL_CASE].after
    assert set(after) == set(AFTER_GOOD_RUN), outcomes[TRIAL_CASE].proc.stderr[-3000:]
    for name, (proc, before, now) in after.items():
        lines = error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("layernas: config error: "), proc.stderr
        assert any(k.endswith("summary.json") for k in before)
        assert now == before, f"{name} changed files under results/"
