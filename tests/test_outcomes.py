"""Loud outcomes and a run a person can follow: a search that ends with no model in the target
range says so (summary.json outcome and message, a block on the terminal, exit status 3,
`layernas status`), a budget that cannot reach the target is warned about before any job, each
stage prints a progress line (terminal and results/logs/progress.log), and an interrupted run
ends with the exact command that resumes it, which then redoes no finished trial."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from trial_records import evaluated_at

from layernas.core.search import Geometry, SearchConfig
from layernas.core.space import load_space
from layernas.workflow.hooks import expected_stages, resume_command
from layernas.workflow.outcome import (
    EXIT_NO_MODEL,
    FOUND,
    NO_MODEL,
    explain,
    preflight_warnings,
    trials_needed,
)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
TEST_CONFIG = str(ROOT / ".test" / "config.yaml")
SLOW_ORACLE = "oracle=layernas.examples.toy:appendix_i_slow"
LAYERNAS = [sys.executable, "-m", "layernas.cli.main"]


def run(workdir: Path, overrides: dict | None = None, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    files = [TEST_CONFIG]
    if overrides:
        cfg = workdir.parent / f"{workdir.name}-overrides.yaml"
        cfg.write_text(yaml.safe_dump(overrides))
        files.append(str(cfg))
    cmd = [*SNAKEMAKE, "-d", str(workdir), "--configfile", *files, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- pure parts


def history(rows: list[tuple[str, float, str, float]]) -> pd.DataFrame:
    """(arch, cost, status, accuracy) rows in search order."""
    return pd.DataFrame({"order": range(len(rows)), "arch": [r[0] for r in rows], "cost": [r[1] for r in rows],
                         "status": [r[2] for r in rows], "accuracy": [r[3] for r in rows]})


SETTINGS = {"buckets": 4, "replicas": 2, "per_sweep": 2}


def test_budget_spent_before_the_target_says_why_and_what_to_change():
    h = history([("0-0-0", 12, "ok", 0.5), ("1-0-0", 11, "ok", 0.45), ("2-0-0", 10, "ok", 0.35),
                 ("3-0-0", 9, "budget", float("nan"))])
    outcome, msg = explain(h, None, True, 3, lo=8, hi=9, metric="madds", settings=SETTINGS, results="res")
    assert outcome == NO_MODEL
    assert "no model in the target range 8-9 MAdds after 3 trials (0 failed)" in msg
    assert "the trial budget (3) was spent before the search evaluated a candidate in the target range" in msg
    assert "1 candidate in the target range was generated but not evaluated (after 3 trials)" in msg
    assert "raise search.budget (now 3; at least 4 to evaluate that candidate)" in msg
    assert "widen the target range" in msg


def test_every_in_target_candidate_failed_points_at_the_errors():
    h = history([("0-0-0", 12, "ok", 0.5), ("3-0-0", 9, "failed", float("nan")), ("2-1-0", 9, "failed", float("nan"))])
    outcome, msg = explain(h, None, False, 96, lo=8, hi=9, metric="madds", settings=SETTINGS, results="res")
    assert outcome == NO_MODEL
    assert "every candidate in the target range that was evaluated failed (2 trials)" in msg
    assert "layernas retry-failed res" in msg and "budget" not in msg.split("What to change")[0]


def test_failed_in_target_and_then_the_budget_ended_names_both():
    """What a flaky search ran into: its one candidate in the target range failed, and the budget
    ended before another was evaluated (no "raise the budget to N" below the budget it had)."""
    h = history([("0-0-0", 12, "ok", 0.5), ("3-0-0", 9, "failed", float("nan")), ("1-0-0", 11, "ok", 0.4)])
    outcome, msg = explain(h, None, True, 3, lo=8, hi=9, metric="madds", settings=SETTINGS, results="res")
    assert outcome == NO_MODEL
    assert "failed (1 trial); and the trial budget (3) was spent before the search evaluated another" in msg
    assert "raise search.budget (now 3)," in msg and "at least" not in msg


def test_a_search_that_ran_out_of_candidates_names_h_k_r():
    h = history([("0-0-0", 12, "ok", 0.5), ("1-0-0", 11, "dropped", float("nan"))])
    outcome, msg = explain(h, None, False, 96, lo=8, hi=9, metric="madds", settings=SETTINGS, results="res")
    assert outcome == NO_MODEL and "ran to its end" in msg and "H=4, K=2, R=2" in msg
    assert "search.buckets (H), search.replicas (K) or search.per_sweep (R)" in msg


def test_found_names_the_best_model_decoded():
    best = {"arch": "1-2-0", "cost": 9.0, "accuracy": 0.42, "key": "k"}
    h = history([("1-2-0", 9, "ok", 0.42)])
    outcome, msg = explain(h, best, False, 96, lo=8, hi=9, metric="madds", settings=SETTINGS,
                           space=load_space("appendix-i"))
    assert outcome == FOUND and "1-2-0 (C B D), 9 MAdds, accuracy 0.4200" in msg


def geometry(budget: int | None, lo: float = 8, hi: float = 9) -> Geometry:
    cfg = SearchConfig(target_min=lo, target_max=hi, buckets=4, replicas=2, per_sweep=2, budget=budget)
    return Geometry.of(load_space("appendix-i"), cfg)


def test_the_up_front_bound_is_the_first_layer0_candidate_in_target():
    # layer 0 evaluates DDD (12), CDD (11), BDD (10), ADD (9): ADD is the 4th and in 8-9
    assert trials_needed(geometry(3)) == (4, 4, True)
    (warning,) = preflight_warnings(geometry(3))
    assert "search.budget (3) is too small" in warning and "at least 4" in warning
    assert preflight_warnings(geometry(4)) == [] and preflight_warnings(geometry(None)) == []
    # 5-6: no layer-0 candidate is in range, so every layer-0 trial and one more are needed
    assert trials_needed(geometry(4, 5, 6)) == (5, 4, False)
    assert "none in the target range" in preflight_warnings(geometry(4, 5, 6))[0]


def test_resume_command_is_the_command_line_as_typed():
    assert resume_command(["/opt/env/bin/snakemake", "--cores", "2", "--config", "a=b c"]) == \
        "/opt/env/bin/snakemake --cores 2 --config 'a=b c'"
    main = str(Path(shlex.__file__).parent / "site-packages" / "snakemake" / "__main__.py")
    cmd = resume_command([main, "-d", "my dir"])
    assert cmd.endswith(" -m snakemake -d 'my dir'")
    assert expected_stages({"evaluator": "tabular", "final": {"activate": True}, "transfer": {"activate": True},
                            "report": {"activate": False}}) == {"final": False, "transfer": False, "report": False}


# --------------------------------------------------------------------------- real runs


def test_a_budget_too_small_for_the_target_ends_loudly_with_exit_3(tmp_path):
    """Budget 3 on the toy space: sweep 0 layer 0 evaluates DDD, CDD, BDD and the budget stops
    the search before ADD (cost 9, the only layer-0 candidate in 8-9)."""
    wd = tmp_path / "run"
    proc = run(wd, {"search": {"budget": 3}})
    err = proc.stderr
    assert proc.returncode == EXIT_NO_MODEL, err[-3000:]
    assert "Traceback" not in err
    # before any job: the warning
    assert "[layernas] warning: search.budget (3) is too small to reach the target" in err
    assert err.index("too small to reach") < err.index("localcheckpoint children")
    # progress lines on the terminal, from the rule scripts
    assert ("[layernas] sweep 0 layer 0: 4 children, 3 to evaluate (0 cached, 0 dropped, 1 over the budget); "
            "trials 0 done / budget 3") in err
    assert "[layernas] sweep 0 layer 0 done: 3 trials (0 failed); trials 3 done / budget 3; no model in" in err
    # the end: one clear block
    block = err[err.index("[layernas] NO MODEL IN THE TARGET RANGE (exit status 3)"):]
    flat = " ".join(block.split())
    assert "The search ended with no model in the target range 8-9 MAdds after 3 trials" in flat
    assert "Why: the trial budget (3) was spent" in flat
    assert "raise search.budget (now 3; at least 4 to evaluate that candidate)" in flat
    res = wd / "results"
    assert f"status: layernas status {res}" in block
    summary = json.loads((res / "search" / "summary.json").read_text())
    assert summary["outcome"] == NO_MODEL and summary["best"] is None and summary["top"] == []
    assert "raise search.budget" in summary["message"]
    log = (res / "logs" / "progress.log").read_text()
    assert "sweep 0 layer 0: 4 children" in log and "NO MODEL IN THE TARGET RANGE" in log
    assert json.loads((res / "logs" / "run.json").read_text())["state"] == "done"
    status = subprocess.run([*LAYERNAS, "status", str(res)], capture_output=True, text=True, check=True)
    assert "outcome: NO MODEL IN THE TARGET RANGE" in status.stdout
    assert "What to change: raise search.budget (now 3; at least 4" in " ".join(status.stdout.split())
    st = json.loads(subprocess.run([*LAYERNAS, "status", str(res), "--json"], capture_output=True, text=True,
                                   check=True).stdout)
    assert st["outcome"] == NO_MODEL and st["done"] and st["state"] == "done"


def test_a_run_that_finds_a_model_ends_with_the_best_one_and_where_it_is(tmp_path):
    """Budget 4: the budget stops the search after layer 0, which found ADD (3-0-0) in range."""
    wd = tmp_path / "run"
    proc = run(wd, {"search": {"budget": 4}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "too small to reach" not in err
    block = err[err.index("[layernas] search done: 4 trials (0 failed)"):]
    assert "best model: 3-0-0 (A D D), 9 MAdds, accuracy 0.3000" in block
    assert "the trial budget (4) stopped the search" in " ".join(block.split())
    assert f"results: {wd / 'results'}" in block and f"status: layernas status {wd / 'results'}" in block
    assert json.loads((wd / "results" / "search" / "summary.json").read_text())["outcome"] == FOUND


@pytest.mark.slow
def test_ctrl_c_ends_with_the_command_that_resumes_and_it_redoes_nothing(tmp_path):
    """SIGINT to the process group (what Ctrl-C does) after a trial finished: Snakemake 9 stops its
    jobs and calls onerror, which prints the exact command; that command, run as printed, completes
    the search without evaluating any finished trial again."""
    wd = tmp_path / "run"
    wd.mkdir()
    results = wd / "results"
    one_per_job = tmp_path / "one-per-job.yaml"  # a batch of lookups would finish before the signal lands
    one_per_job.write_text("resources: {trial: {batch: 1}}\n")
    cmd = [*SNAKEMAKE, "-d", str(wd), "--configfile", TEST_CONFIG, str(one_per_job), "--config", SLOW_ORACLE]
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while not evaluated_at(results) if (results / "trials").exists() else True:
            assert time.monotonic() < deadline and proc.poll() is None, "no trial finished"
            time.sleep(0.1)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    text = out.read_text()
    assert rc != 0
    assert "[layernas] the run stopped before the end: it was interrupted (SIGINT)." in text
    lines = text.splitlines()
    i = lines.index("layernas: the run stopped before the end. Run the same command again to resume:")
    printed = lines[i + 1].strip()
    assert shlex.split(printed)[1:] == cmd[1:]
    flat = " ".join(text.split())
    assert "Nothing that finished will be redone" in flat and f"layernas audit {results} --fix" in flat
    assert json.loads((results / "logs" / "run.json").read_text())["signal"] == "SIGINT"
    status = subprocess.run([*LAYERNAS, "status", str(results)], capture_output=True, text=True, check=True).stdout
    assert "(interrupted by SIGINT)" in status and printed in status
    before = evaluated_at(results)
    assert 0 < len(before) < 19

    again = subprocess.run(shlex.split(printed), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    after = evaluated_at(results)
    assert len(after) == 19
    assert {k: after[k] for k in before} == before, "a finished trial was evaluated again"
    assert re.search(r"\[layernas\] search done: 19 trials", again.stderr)


def test_the_end_block_lists_final_models_with_test_accuracy_map_and_weights(tmp_path):
    from layernas.store.layout import Layout
    from layernas.workflow.outcome import end_block

    layout = Layout(tmp_path / "results")
    top = [{"arch": "1-2-0", "key": "k1", "final_key": "f1", "cost": 9.0, "accuracy": 0.42}]
    final = layout.final_dir("f1")
    final.mkdir(parents=True)
    (final / "metrics.json").write_text(json.dumps({"status": "ok", "test_accuracy": 0.91}))
    (final / "model.pt").write_bytes(b"w")
    layout.transfer_dir("f1").mkdir(parents=True)
    layout.transfer_metrics("f1").write_text(json.dumps({"map": 0.31, "reference": {"map": 0.27}}))
    summary = {"outcome": FOUND, "best": top[0], "top": top, "trials": 19, "failed": 1, "sweeps": 3, "stages": 12,
               "metric": "madds"}
    lines = end_block(summary, layout, load_space("appendix-i"))
    assert lines[0] == "[layernas] search done: 19 trials (1 failed), 3 sweeps, 12 stages"
    assert "  best model: 1-2-0 (C B D), 9 MAdds, accuracy 0.4200" in lines
    assert "    1-2-0 (C B D): test accuracy 0.9100, transfer mAP 0.3100 (reference 0.2700)" in lines
    assert f"      weights {final / 'model.pt'}" in lines
    assert lines[-1] == f"  status: layernas status {layout.root}"
