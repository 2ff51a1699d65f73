"""The Snakefile's ``onstart:``, ``onsuccess:`` and ``onerror:`` hooks: what a run says to the
person who started it, and ``results/logs/run.json`` (``Layout.run_state``), the run's state as
``layernas status`` reads it.

- **onstart** (after the DAG is built, before the first job; not on a dry run or when there is
  nothing to do): warns when the budget cannot reach the target range
  (``outcome.preflight_warnings``), records the run (command, pid, host, which later stages it
  will run) and notes SIGINT/SIGTERM, chaining to Snakemake's own handlers.
- **onsuccess**: prints the search's outcome (``outcome.end_block``) and exits with status 3
  (``EXIT_NO_MODEL``) when the search ended with no model in the target range.
- **onerror** (a job failed, or the run was interrupted: Snakemake 9 turns Ctrl-C and SIGTERM
  into a failed schedule and calls it): prints the exact command that resumes the run. If a
  signal arrived and neither hook ran, the same message is printed at interpreter exit.

A run killed with SIGKILL (or by the OOM killer) runs no hook and prints nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import sys
from datetime import datetime
from functools import partial
from pathlib import Path

from layernas.store.files import atomic_write_json
from layernas.workflow import outcome as oc
from layernas.workflow.progress import PREFIX, emit

RUNNING, DONE, STOPPED = "running", "done", "stopped"

_run: dict = {"signal": None, "ended": False, "layout": None, "command": None}


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that started this Snakemake process, shell-quoted, as the person can
    type it again: ``snakemake --cores 2 ...`` (the program as typed, or its name when that is
    what the PATH finds), ``python -m snakemake ...`` for a module run."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]) if argv else Path("snakemake")
    if prog.name == "__main__.py":  # python -m snakemake
        head = [_as_typed(sys.executable), "-m", prog.parent.name or "snakemake"]
    else:
        head = [_as_typed(str(prog))]
    return shlex.join(head + argv[1:])


def _as_typed(program: str) -> str:
    """``program``'s bare name when the PATH finds that same file, else the path itself."""
    name = Path(program).name
    found = shutil.which(name)
    try:
        if found and os.path.samefile(found, program):
            return name
    except OSError:
        pass
    return program


def expected_stages(config: dict) -> dict[str, bool]:
    """Which stages after the search this run produces (as ``workflow/rules/common.smk``
    decides it): final retraining only for trained searches, transfer only of final models."""
    final = bool(config.get("final", {}).get("activate")) and config.get("evaluator") in ("train", "supernet")
    return {"final": final, "transfer": final and bool(config.get("transfer", {}).get("activate")),
            "report": bool(config.get("report", {}).get("activate"))}


def _log_path(log) -> str | None:
    """Snakemake hands the hooks its log file, as a list of paths in Snakemake 9."""
    if isinstance(log, (list, tuple)):
        return ", ".join(map(str, log)) or None
    return str(log) if log else None


def write_state(layout, **fields) -> dict:
    """Update ``run.json`` (atomically; a damaged or missing one starts afresh)."""
    path = layout.run_state
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    state.update(fields)
    atomic_write_json(path, state)
    return state


def _say(lines: list[str], layout=None) -> None:
    """Lines for the person at the terminal (stderr, where Snakemake writes), also in the
    progress log."""
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    if layout is not None:
        try:
            with open(layout.progress_log, "a") as fh:
                fh.writelines(f"{_now()} {line}\n" for line in lines)
        except OSError:
            pass


# --------------------------------------------------------------------------- onstart


def on_start(ctx, log: str | None = None) -> None:
    layout = ctx.layout
    _run.update(layout=layout, command=resume_command(), ended=False, signal=None)
    write_state(layout, state=RUNNING, command=_run["command"], argv=list(sys.argv), cwd=os.getcwd(),
                pid=os.getpid(), host=socket.gethostname(), started_at=_now(), ended_at=None, signal=None,
                space=str(ctx.config["space"]), expects=expected_stages(ctx.config), snakemake_log=_log_path(log),
                outcome=None)
    _note_signals()
    atexit.register(_at_exit)
    emit(layout, f"run started: {_run['command']}", terminal=sys.stderr)
    # A latency search whose table a job has yet to measure has no bounds yet: no preflight.
    warnings = [] if ctx.latency_input and not os.path.exists(ctx.latency_input) else oc.preflight_warnings(ctx.geo)
    for warning in warnings:
        _say([f"{PREFIX} {line}" if i == 0 else line for i, line in enumerate(oc.wrap(warning, ""))], layout)


def _note_signals() -> None:
    """Note SIGINT/SIGTERM (for the message), then hand them to the handler that was there."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, partial(_noted, signal.getsignal(sig)))
        except (ValueError, OSError, TypeError):  # not the main thread: no note, Snakemake's handling stays
            pass


def _noted(previous, signum, frame):
    if _run["signal"] is None:
        _run["signal"] = signal.Signals(signum).name
    if callable(previous):
        return previous(signum, frame)
    if previous == signal.SIG_IGN:
        return None
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return None


# --------------------------------------------------------------------------- onsuccess


def on_success(ctx, log: str | None = None) -> None:
    """Print the outcome; exit with status 3 when the search found no model in the target range."""
    layout = ctx.layout
    _run["ended"] = True
    summary = None
    if layout.summary.exists():
        summary = json.loads(layout.summary.read_text())
    outcome = None
    if summary is not None:
        outcome = summary.get("outcome") or (oc.FOUND if summary.get("best") else oc.NO_MODEL)
        lines = oc.end_block(summary, layout, ctx.space)
    else:
        lines = [f"{PREFIX} run done (no search summary yet: the targets asked for did not include it)"]
    if _log_path(log):
        lines.append(f"  Snakemake log: {_log_path(log)}")
    write_state(layout, state=DONE, ended_at=_now(), outcome=outcome)
    _say(lines, layout)
    if outcome == oc.NO_MODEL:
        sys.exit(oc.EXIT_NO_MODEL)


# --------------------------------------------------------------------------- onerror


def stopped_lines(layout, command: str, signal_name: str | None) -> list[str]:
    results = shlex.quote(oc.shown_path(layout.root))
    cause = (f"it was interrupted ({signal_name})" if signal_name else
             "a job failed: its error and log are named above; fix the cause first")
    return [
        f"{PREFIX} the run stopped before the end: {cause}.",
        "layernas: the run stopped before the end. Run the same command again to resume:",
        f"    {command}",
        *oc.wrap("Nothing that finished will be redone: finished trials, final models and transfers are kept "
                 f"under their keys ({_stores(layout, results)}). If a file may be damaged (a crash, a full disk), "
                 f"`layernas audit {results} --fix` removes broken records first; `layernas status {results}` "
                 "shows where the search stands.", "  "),
    ]


def _stores(layout, results: str) -> str:
    """Where finished records are: the results directory, and the trial store when shared."""
    if getattr(layout, "shared_store", False):
        return f"trials in the store {shlex.quote(oc.shown_path(layout.trials_dir))}, the rest in {results}"
    return f"in {results}"


def on_error(ctx, log: str | None = None) -> None:
    layout = ctx.layout
    _run["ended"] = True
    command = _run["command"] or resume_command()
    write_state(layout, state=STOPPED, ended_at=_now(), signal=_run["signal"])
    lines = stopped_lines(layout, command, _run["signal"])
    if _log_path(log):
        lines.append(f"  Snakemake log: {_log_path(log)}")
    _say(lines, layout)


def _at_exit() -> None:
    """A signal arrived, and the process ends without either hook having run."""
    layout = _run["layout"]
    if _run["ended"] or _run["signal"] is None or layout is None:
        return
    try:
        write_state(layout, state=STOPPED, ended_at=_now(), signal=_run["signal"])
        _say(stopped_lines(layout, _run["command"], _run["signal"]), layout)
    except Exception:  # noqa: BLE001 - at exit, never a traceback over the real error
        pass
