"""Progress a person can follow: one line when a stage starts (its children and what becomes
of them) and one when it ends (its trials and the best model in the target range so far), with
the running trial count against the budget.

The lines go to the terminal and to ``results/logs/progress.log`` (``Layout.progress_log``).
Rule scripts send ``sys.stderr`` to their job's log, so the terminal line is written to
``sys.__stderr__``: a local job's stderr is the terminal of the Snakemake run (the cheap stage
rules are local rules, also under ``--profile slurm``).
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from layernas.core.describe import arch_label, human_cost
from layernas.core.search import best_in_target
from layernas.core.status import Action, Status
from layernas.store.layout import Layout

PREFIX = "[layernas]"


def emit(layout: Layout, line: str, terminal=None) -> str:
    """Write one progress line to the terminal and append it (time-stamped) to the progress log."""
    text = f"{PREFIX} {line}"
    stream = terminal if terminal is not None else sys.__stderr__
    if stream is not None:
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError):  # no terminal (closed, a broken pipe): the log still has it
            pass
    path = layout.progress_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # one short write in append mode: lines of parallel jobs do not mix
        fh.write(f"{datetime.now().isoformat(timespec='seconds')} {text}\n")
    return text


def trials_done(history: pd.DataFrame | None) -> int:
    """Trials (evaluations, ok or failed) a history holds."""
    return 0 if history is None or history.empty else int(history["status"].isin(Status.EVALUATED).sum())


def _read(path: str | Path | None) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path else None


def stage_start_line(ctx, r: int, l: int, planned: pd.DataFrame, history_path: str | None) -> str:
    """``sweep 0 layer 3: 7 children, 4 to evaluate (2 cached, 1 dropped); trials 12 done / budget 30``."""
    done = trials_done(_read(history_path))
    budget = ctx.budget
    if planned.empty:
        why = "layer 0 is complete after sweep 0" if l == 0 and r > 0 else "no candidate left to expand"
        return f"sweep {r} layer {l}: no children ({why}); trials {done} done / budget {budget}"
    counts = planned["action"].value_counts().to_dict()
    extra = [f"{counts.get(Action.CACHED, 0)} cached", f"{counts.get(Action.DROPPED, 0)} dropped"]
    if counts.get(Action.BUDGET):
        extra.append(f"{counts[Action.BUDGET]} over the budget")
    to_eval = planned.loc[planned["action"] == Action.EVALUATE, "key"]
    stored = sum(ctx.layout.trial_metrics(k).exists() for k in to_eval)
    if stored:  # finished earlier (a resumed run, another search on the same store): no training
        extra.append(f"{stored} already in the trial store")
    line = (f"sweep {r} layer {l}: {len(planned)} children, {len(to_eval)} to evaluate "
            f"({', '.join(extra)}); trials {done} done / budget {budget}")
    if "stopped" in planned and bool(planned["stopped"].iloc[0]):
        line += "; the budget is spent: this is the search's last stage"
    return line


def stage_end_line(ctx, r: int, l: int, children_path: str, history_path: str) -> str:
    """``sweep 0 layer 3 done: 4 trials (0 failed); trials 16 done / budget 30; best in target
    so far 0.8420 3-5-0-0-0-0-0 (f12 k3e48 ...), 3.94M MAdds``."""
    planned = pd.read_parquet(children_path)
    hist = pd.read_parquet(history_path)
    stage = hist[(hist["sweep"] == r) & (hist["layer"] == l)]
    counts = stage["status"].value_counts().to_dict() if len(stage) else {}
    new = int((planned["action"] == Action.EVALUATE).sum()) if len(planned) else 0
    best = best_in_target(hist, ctx.search)
    if best is None:
        best_text = "no model in the target range yet"
    else:
        best_text = (f"best in target so far {best['accuracy']:.4f} {arch_label(ctx.space, best['arch'])}, "
                     f"{human_cost(best['cost'], ctx.search.metric)}")
    return (f"sweep {r} layer {l} done: {new} trial{'' if new == 1 else 's'} "
            f"({int(counts.get(Status.FAILED, 0))} failed); "
            f"trials {trials_done(hist)} done / budget {ctx.budget}; {best_text}")


@contextmanager
def stage_job(log_path: str, what: str):
    """A stage rule script's body: stderr goes to the job's log; an error leaves its traceback in
    that log (not lost with a closed stderr) and one line on the terminal, and fails the job."""
    with open(log_path, "w") as log:
        sys.stderr = log
        try:
            yield log
        except Exception as exc:
            traceback.print_exc(file=log)
            log.flush()
            if sys.__stderr__ is not None:
                print(f"{PREFIX} {what} failed: {exc}\n  traceback: {log_path}", file=sys.__stderr__, flush=True)
            raise SystemExit(1) from None
        finally:
            sys.stderr = sys.__stderr__
