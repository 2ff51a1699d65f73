"""`layernas status`: the run's state (running / done / stopped) from the files alone, per final
model its test accuracy, transfer mAP and weights, decoded archs and readable costs, `--watch`
ending quietly on Ctrl-C, and no BrokenPipeError traceback when the reader goes away."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from layernas.core.space import load_space
from layernas.store.status import collect_status

LAYERNAS = [sys.executable, "-m", "layernas.cli.main"]
TOP = [{"arch": "1-2-0", "key": "9754140bf00270dd", "final_key": "c5286f9afb92de48", "cost": 9.0, "accuracy": 0.42},
       {"arch": "1-3-0", "key": "44fea7e6643717d7", "final_key": "75065e46204f131f", "cost": 8.0, "accuracy": 0.40}]


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A finished toy search (the in-process driver, 2 s) with the workflow's search.json."""
    res = tmp_path_factory.mktemp("status") / "results"
    subprocess.run([*LAYERNAS, "search", "--space", "appendix-i", "--oracle", "layernas.examples.toy:appendix_i",
                    "--target-min", "8", "--target-max", "9", "-H", "4", "-K", "2", "-R", "2",
                    "--out", str(res / "search"), "--quiet"], check=True, capture_output=True)
    write(res / "search" / "search.json", {"space": load_space("appendix-i").space_id, "space_name": "appendix-i",
                                           "target": [8.0, 9.0], "metric": "madds", "budget": 96})
    return res


@pytest.fixture
def results(searched, tmp_path) -> Path:
    """A copy of the search with a summary whose top list asks for final retraining and transfer."""
    import shutil

    res = tmp_path / "results"
    shutil.copytree(searched, res)
    summary = json.loads((res / "search" / "summary.json").read_text())
    write(res / "search" / "summary.json", {**summary, "top": TOP, "outcome": "found", "message": "found it"})
    return res


def run_state(res: Path, state: str, pid: int | None = None, **extra) -> None:
    write(res / "logs" / "run.json", {
        "state": state, "pid": pid or os.getpid(), "host": socket.gethostname(), "space": "appendix-i",
        "command": "snakemake --cores 2 --configfile my.yaml", "started_at": "2026-11-29T10:00:00",
        "ended_at": None if state == "running" else "2026-11-29T10:05:00",
        "expects": {"final": True, "transfer": True, "report": True}, **extra})


def finish_models(res: Path, transfer: bool = True) -> None:
    for i, row in enumerate(TOP):
        final = res / "final" / row["final_key"]
        write(final / "metrics.json", {"status": "ok", "arch": row["arch"], "test_accuracy": 0.9 - i / 10})
        (final / "model.pt").write_bytes(b"weights")
        if transfer:
            write(res / "transfer" / row["final_key"] / "metrics.json",
                  {"status": "ok", "arch": row["arch"], "map": 0.25, "reference": {"map": 0.2}})


def status_text(res: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAYERNAS, "status", str(res), *extra], capture_output=True, text=True, timeout=120)


def test_done_only_when_every_final_and_transfer_result_exists(results):
    run_state(results, "done")
    st = collect_status(results)
    assert st["state"] == "stopped" and not st["done"]  # the summary alone is not the end of the run
    assert len(st["missing"]) == 4
    finish_models(results, transfer=False)
    st = collect_status(results)
    assert not st["done"] and len(st["missing"]) == 2 and all("transfer" in p for p in st["missing"])
    finish_models(results)
    st = collect_status(results)
    assert st["done"] and st["state"] == "done" and st["missing"] == []
    models = st["final_models"]
    assert [m["final"]["test_accuracy"] for m in models] == [0.9, 0.8]
    assert models[0]["transfer"] == {"status": "ok", "map": 0.25, "reference_map": 0.2}
    assert models[0]["final"]["weights"] == str(results / "final" / TOP[0]["final_key"] / "model.pt")


def test_text_shows_decoded_archs_costs_final_results_and_exports(results):
    run_state(results, "done")
    finish_models(results)
    export = results / "export" / f"{TOP[0]['final_key']}.onnx"
    export.parent.mkdir()
    export.write_bytes(b"onnx")
    proc = status_text(results)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.splitlines()[0].endswith("target 8-9 MAdds: done")
    assert "best in target: 1-2-0 (C B D), 9 MAdds, accuracy 0.4200" in out
    assert "final models:" in out and "1-3-0 (C A D), 8 MAdds, search accuracy 0.4000" in out
    assert "test accuracy 0.9000; transfer mAP 0.2500 (reference 0.2000)" in out
    assert f"weights {results / 'final' / TOP[0]['final_key'] / 'model.pt'}" in out
    assert f"export {export}" in out and f"export: {results / 'export'}" in out


def test_running_while_the_recorded_snakemake_lives_even_with_an_old_summary(results):
    finish_models(results)
    run_state(results, "running", pid=os.getpid())
    st = collect_status(results)
    assert st["state"] == "running" and not st["done"] and st["run"]["alive"] is True
    assert "running since 2026-11-29T10:00:00" in status_text(results).stdout.splitlines()[0]


def test_a_killed_run_reads_stopped_with_the_command_that_resumes_it(results):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_state(results, "running", pid=dead.pid)
    st = collect_status(results)
    assert st["state"] == "stopped" and st["run"]["alive"] is False
    out = status_text(results).stdout
    assert "not running: the run started 2026-11-29T10:00:00" in out and "killed?" in out
    assert "resume with the same command (nothing finished is redone):\n    snakemake --cores 2 --configfile my.yaml" in out


def test_an_interrupted_run_names_its_signal(results):
    run_state(results, "stopped", signal="SIGINT")
    assert "stopped before the end at 2026-11-29T10:05:00 (interrupted by SIGINT)" in status_text(results).stdout


def test_no_model_in_target_is_shown_with_its_message(results):
    summary = json.loads((results / "search" / "summary.json").read_text())
    msg = "The search ended with no model. Why: the budget. What to change: raise search.budget."
    write(results / "search" / "summary.json", {**summary, "top": [], "best": None, "outcome": "no-model-in-target",
                                                "message": msg})
    run_state(results, "done", outcome="no-model-in-target")
    out = status_text(results).stdout
    assert "outcome: NO MODEL IN THE TARGET RANGE" in out
    assert "    Why: the budget." in out and "    What to change: raise search.budget." in out
    assert collect_status(results)["done"]  # nothing else to wait for


def test_watch_stops_when_done_and_quietly_on_ctrl_c(results):
    finish_models(results)
    run_state(results, "done")
    proc = status_text(results, "--watch", "0.2")
    assert proc.returncode == 0 and proc.stdout.count("search in ") == 1, proc.stderr
    assert "every 0.2 s; Ctrl-C to stop" in proc.stdout

    run_state(results, "running", pid=os.getpid())  # never done while "this snakemake" lives
    watch = subprocess.Popen([*LAYERNAS, "status", str(results), "--watch", "0.2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    head = _lines_until(watch, "search in ", count=2)  # on a loaded machine start-up alone can take seconds
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert (head + out).count("search in ") >= 2 and "Traceback" not in err and "KeyboardInterrupt" not in err


def _lines_until(proc: subprocess.Popen, needle: str, count: int = 1) -> str:
    """Read ``proc``'s stdout until ``needle`` has appeared ``count`` times (the process is up
    and drawing), so a signal sent next reaches the watch loop, not the interpreter's start-up."""
    seen = ""
    while seen.count(needle) < count:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    return seen


def test_watch_waits_for_a_run_that_has_not_written_yet(tmp_path):
    watch = subprocess.Popen([*LAYERNAS, "status", str(tmp_path / "results"), "--watch", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = _lines_until(watch, "waiting for a search in")
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0 and "waiting for a search in" in head + out and "Traceback" not in err


def test_a_closed_pipe_ends_quietly(results):
    """`layernas status results | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    proc = subprocess.run(f"{sys.executable} -m layernas.cli.main status {results} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("search in ") and proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    # A reader that is gone before the first write: the write fails for sure.
    p = subprocess.Popen([*LAYERNAS, "status", str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
