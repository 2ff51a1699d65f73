"""The search stages' steps as the rules run them: inside the Snakemake controller (``run:``
rules, in a thread with ``use-threads`` from the profiles), not as a Python process per step.

A stage step takes milliseconds; a Python process that imports pandas takes about a second on a
2-core machine, and a search runs its stages one after the other, so three such processes per
stage were most of a tabular search's time (docs/benchmarks.md). The controller has the
libraries loaded, and the ``Context`` (space, bounds, memoised tables) too.

A step writes its lines to its job's log and never touches ``sys.stderr`` (shared by every
thread of the controller); an error leaves its traceback in that log, one line on the terminal,
and goes on to Snakemake, which fails the job.
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from layernas.evaluate.trial import TrialRunner, run_trial_batch
from layernas.workflow.progress import PREFIX, emit, stage_end_line, stage_start_line
from layernas.workflow.stages import (
    Context,
    latest_tables,
    walk,
    write_aggregate,
    write_children,
    write_summary,
)

AGGREGATE_INPUTS = ("children", "history", "prev_table", "prev_next_children")


@contextmanager
def step_log(log_path: str, what: str):
    """The job's log, open for the step's lines; an error is logged with its traceback, named on
    the terminal, and re-raised."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        try:
            yield log
        except Exception as exc:
            traceback.print_exc(file=log)
            log.flush()
            if sys.__stderr__ is not None:
                print(f"{PREFIX} {what} failed: {exc}\n  traceback: {log_path}", file=sys.__stderr__, flush=True)
            raise


def _get(io, name: str) -> str | None:
    """A named input of a Snakemake job (absent names are None), or of a plain dict in tests."""
    value = io.get(name) if hasattr(io, "get") else None
    return str(value) if value else None


def children_step(ctx: Context, r: int, l: int, inputs, output: str, log_path: str) -> None:
    """Checkpoint children(r, l): the stage's children and their actions, and its start line."""
    with step_log(log_path, f"children of sweep {r} layer {l}") as log:
        history = _get(inputs, "history")
        kids = write_children(ctx, r, l, history, _get(inputs, "parents_table"), output)
        counts = kids["action"].value_counts().to_dict() if len(kids) else {}
        print(f"sweep {r} layer {l}: {len(kids)} children {counts}", file=log)
        print(emit(ctx.layout, stage_start_line(ctx, r, l, kids, history)), file=log)


def aggregate_step(ctx: Context, r: int, l: int, inputs, buckets: str, history: str, log_path: str) -> None:
    """Aggregate (r, l): the stage's bucket table and the history after it, and its end line."""
    with step_log(log_path, f"aggregate of sweep {r} layer {l}") as log:
        named = {k: _get(inputs, k) for k in AGGREGATE_INPUTS if _get(inputs, k)}
        write_aggregate(ctx, r, l, named, buckets, history)
        batches = inputs.get("batches", []) if hasattr(inputs, "get") else []
        print(f"sweep {r} layer {l}: aggregated {len(batches)} trial batch(es)", file=log)
        print(emit(ctx.layout, stage_end_line(ctx, r, l, named["children"], history)), file=log)


def summary_step(ctx: Context, history: str, outputs: dict[str, str], log_path: str) -> None:
    """The search summary, history, final tables and top-N after the last stage."""
    with step_log(log_path, "search summary") as log:
        stages, stopped = walk(ctx, lambda r, l: ctx.children_path(r, l))
        s = write_summary(ctx, stages, stopped, history, latest_tables(ctx, stages), outputs)
        print(f"search done: {s['trials']} trials, best {s['best']}", file=log)
        print(emit(ctx.layout, f"search done ({s['outcome']}): {s['message']}"), file=log)


@lru_cache(maxsize=4)
def _runner(ctx: Context) -> TrialRunner:
    """One trial runner per controller: the space and the oracle are loaded once."""
    return TrialRunner(ctx.config)


def trial_batch_step(ctx: Context, items: list, manifest: str, log_path: str) -> None:
    """A batch of table lookups inside the controller (``controller.inline_trials``): the same
    records, logs and manifest as the trial rule's job writes."""
    with step_log(log_path, f"trial batch {Path(manifest).parent.parent.name}/{Path(manifest).parent.name}/"
                            f"{Path(manifest).name}") as log:
        run_trial_batch(ctx.config, items, manifest, ctx.layout.trials_dir, str(ctx.layout.log("trials", "{key}")),
                        log=log, runner=_runner(ctx))
