"""What a finished search found, said so a person notices: the ``outcome`` and ``message`` of
summary.json, the warning a run gets before any job when its budget cannot reach the target,
and the block printed at the end of a run (the Snakefile's hooks, ``layernas.workflow.hooks``).

A search whose budget or geometry never reached a model in the target range used to end like a
successful one (exit 0, ``"best": null``, no final retraining, no word); now its summary says
``"outcome": "no-model-in-target"`` with what happened, why and what to change, the run prints
it and exits with status 3 (``EXIT_NO_MODEL``), and ``layernas status`` shows it.
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.describe import arch_label, human_cost
from layernas.core.search import Geometry, stage_children
from layernas.core.status import Action, Status
from layernas.store.layout import LOG, Layout
from layernas.store.status import model_rows

FOUND = "found"
NO_MODEL = "no-model-in-target"
EXIT_NO_MODEL = 3  # the exit status of a run that ends with no model in the target range
WIDTH = 100


def target_text(lo: float, hi: float, metric: str) -> str:
    """``3.50M-4.00M MAdds``, ``8-9 MAdds``."""
    return f"{human_cost(lo, metric).split()[0]}-{human_cost(hi, metric)}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _in_target(frame: pd.DataFrame, lo: float, hi: float) -> pd.Series:
    cost = frame["cost"].astype(float)
    return (cost >= lo) & (cost <= hi)


def explain(history: pd.DataFrame, best: dict | None, stopped: bool, budget: int | None, *, lo: float, hi: float,
            metric: str, settings: dict, results: str | Path = "results", space=None) -> tuple[str, str]:
    """``(outcome, message)`` of a finished search from its history: ``found`` with the best
    model, or ``no-model-in-target`` with what happened, why and what to change."""
    target = target_text(lo, hi, metric)
    counts = history["status"].value_counts().to_dict() if len(history) else {}
    trials = int(counts.get(Status.OK, 0) + counts.get(Status.FAILED, 0))
    failed = int(counts.get(Status.FAILED, 0))
    budget_note = (f" The trial budget ({budget}) stopped the search: a larger search.budget may find a better "
                   "model." if stopped else "")
    if best is not None:
        return FOUND, (f"Best model in the target range {target}: {arch_label(space, best['arch'])}, "
                       f"{human_cost(best['cost'], metric)}, accuracy {best['accuracy']:.4f}, after {plural(trials, 'trial')} "
                       f"({failed} failed).{budget_note}")
    inside = history[_in_target(history, lo, hi)] if len(history) else history
    inside_failed = int((inside["status"] == Status.FAILED).sum()) if len(inside) else 0
    inside_unrun = int((inside["status"] == Action.BUDGET).sum()) if len(inside) else 0
    what = (f"The search ended with no model in the target range {target} after {plural(trials, 'trial')} "
            f"({failed} failed), so there is no best model to report or retrain.")
    why, change = [], []
    if inside_failed:
        why.append(f"every candidate in the target range that was evaluated failed ({plural(inside_failed, 'trial')})")
        change.append(f"fix what made them fail (`layernas status {results}` lists their errors, each trial's "
                      f"log is {Layout.of_results(results).trial_dir('KEY') / LOG}), then `layernas retry-failed {results}` and run again")
    if stopped:
        unrun_after = _trials_before_first(history, lo, hi, Action.BUDGET)
        which = "another" if inside_failed else "a"
        unrun = (f"; {plural(inside_unrun, 'candidate')} in the target range {'was' if inside_unrun == 1 else 'were'} "
                 f"generated but not evaluated ({'the first ' if inside_unrun > 1 else ''}after "
                 f"{plural(unrun_after, 'trial')})"
                 if inside_unrun and unrun_after is not None else "")
        why.append(f"the trial budget ({budget}) was spent before the search evaluated {which} candidate in the "
                   f"target range{unrun}")
        at_least = f"; at least {unrun_after + 1} to evaluate that candidate" if unrun else ""
        change.append(f"raise search.budget (now {budget}{at_least})")
    if not why:
        why.append("the search ran to its end (a sweep generated no new children) without evaluating a candidate "
                   "in the target range: the candidates that lead into it were dropped or pushed out of the "
                   f"bucket tables (H={settings.get('buckets')}, K={settings.get('replicas')}, "
                   f"R={settings.get('per_sweep')})")
        change.append("raise search.buckets (H), search.replicas (K) or search.per_sweep (R)")
    change.append("or widen the target range (target.min / target.max)")
    message = f"{what} Why: {'; and '.join(why)}. What to change: {', '.join(change)}."
    return NO_MODEL, message


def _trials_before_first(history: pd.DataFrame, lo: float, hi: float, status: str) -> int | None:
    """How many trials ran before the first candidate in the target range with ``status``."""
    if history.empty:
        return None
    rows = np.flatnonzero(_in_target(history, lo, hi).to_numpy() & (history["status"] == status).to_numpy())
    if not len(rows):
        return None
    return int(history.iloc[: rows[0]]["status"].isin(Status.EVALUATED).sum())


# --------------------------------------------------------------------------- before any job


def trials_needed(geo: Geometry) -> tuple[int, int, bool]:
    """A lower bound on the trials a search needs before it can evaluate a candidate in the
    target range, from the space alone: ``(needed, layer0_trials, layer0_in_target)``.

    Sweep 0 layer 0 evaluates every feasible option of layer 0 (later layers at their default)
    in option order, before anything else. If one of them is in the target range, the first is
    trial number ``needed``; if none is, every layer-0 trial runs and at least one more trial
    of a later layer is needed (a later layer's cheapest path may cost no new trial, since a
    parent's option-0 child is the parent itself, so no more is claimed)."""
    kids = stage_children(geo, 0, 0, None, lambda arch: "")
    feasible = kids[kids["feasible"].to_numpy(bool)]
    inside = np.flatnonzero(_in_target(feasible, geo.config.target_min, geo.config.target_max).to_numpy())
    if len(inside):
        return int(inside[0]) + 1, len(feasible), True
    return len(feasible) + 1, len(feasible), False


def preflight_warnings(geo: Geometry) -> list[str]:
    """What can be known before any job runs: a budget that ends before the target range."""
    cfg = geo.config
    needed, layer0, inside = trials_needed(geo)
    if geo.budget >= needed:
        return []
    target = target_text(cfg.target_min, cfg.target_max, cfg.metric)
    where = (f"sweep 0 layer 0 evaluates {layer0} candidates first, and the first of them in the target range "
             f"{target} is number {needed}" if inside else
             f"sweep 0 layer 0 evaluates {layer0} candidates, none in the target range {target}, so at least "
             f"{needed} trials are needed")
    return [f"warning: search.budget ({geo.budget}) is too small to reach the target: {where}. This run will end "
            f"with no model in the target range (exit status {EXIT_NO_MODEL}); raise search.budget to at least "
            f"{needed}."]


# --------------------------------------------------------------------------- the end of a run


def wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False) or [indent]


def shown_path(path: Path) -> str:
    """A path as the person who started the run can use it: relative when the run works in
    the directory it was started from, absolute after ``-d DIR``."""
    import os

    path = Path(path)
    if path.is_absolute():
        return str(path)
    started = os.environ.get("PWD")
    try:
        same = started is not None and os.path.samefile(started, os.getcwd())
    except OSError:
        same = False
    return str(path) if same else str(path.resolve())


def _num(x) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "nan"


def final_lines(layout: Layout, summary: dict, space) -> list[str]:
    """Per final model that has metrics: test accuracy and transfer mAP, then its weights on a
    line of their own (a path to copy). The rows are `layernas status`'s (store.status)."""
    lines = []
    for row in model_rows(layout, summary, {}, space, summary.get("metric", "madds"))[0]:
        final, transfer = row["final"], row["transfer"]
        if final is None:
            continue
        acc = final["test_accuracy"]
        line = (f"{row['label']}: test accuracy {acc:.4f}" if isinstance(acc, (int, float))
                else f"{row['label']}: final retraining {final['status']}")
        if transfer is not None:
            line += f", transfer mAP {_num(transfer['map'])}"
            if transfer["reference_map"] is not None:
                line += f" (reference {_num(transfer['reference_map'])})"
        lines += wrap(line, "    ")
        if final["weights"]:
            lines.append(f"      weights {shown_path(Path(final['weights']))}")
    return lines


def end_block(summary: dict, layout: Layout, space=None) -> list[str]:
    """The lines printed at the end of a run whose search summary exists."""
    metric = summary.get("metric", "madds")
    results = shown_path(layout.root)
    outcome = summary.get("outcome") or (FOUND if summary.get("best") else NO_MODEL)
    head = "[layernas] "
    if outcome == NO_MODEL:
        lines = [f"{head}NO MODEL IN THE TARGET RANGE (exit status {EXIT_NO_MODEL})"]
        message = summary.get("message") or "The search ended with no model in the target range."
        for part in message.replace(" Why: ", "\nWhy: ").replace(" What to change: ", "\nWhat to change: ").split("\n"):
            lines += wrap(part)
    else:
        best = summary["best"]
        lines = [f"{head}search done: {summary.get('trials')} trials ({summary.get('failed')} failed), "
                 f"{summary.get('sweeps')} sweeps, {summary.get('stages')} stages"]
        lines += wrap(f"best model: {arch_label(space, best['arch'])}, {human_cost(best['cost'], metric)}, "
                      f"accuracy {best['accuracy']:.4f}")
        if summary.get("stopped_by_budget"):
            lines += wrap(f"the trial budget ({summary.get('budget')}) stopped the search; a larger search.budget "
                          "may find a better model")
        finals = final_lines(layout, summary, space)
        if finals:
            lines.append("  final models:")
            lines += finals
    lines.append(f"  results: {results} (summary: {shown_path(layout.summary)})")
    lines.append(f"  status: layernas status {shlex.quote(results)}")
    return lines
