# Config checks, wildcard constraints and input functions. The logic lives in
# layernas/workflow/ (tested without Snakemake); this file only adapts it to rules.
import sys

from snakemake.exceptions import IncompleteCheckpointException
from snakemake.io import checkpoint_target

from layernas.store.layout import DETECTIONS
from layernas.workflow.config import (
    TRAINED,
    ConfigError,
    check_config,
    exports_final,
    latency_table_path,
    transfer_plan,
)
from layernas.workflow.controller import Controller, inline_trials
from layernas.workflow.steps import (
    aggregate_step,
    children_step,
    summary_step,
    trial_batch_step,
)
from layernas.workflow.stages import (
    Context,
    arch_for_key,
    final_keys_of,
    latest_tables,
)

# The one config check (layernas.workflow.config): one line naming field and value, no traceback.
try:
    check_config(config)
except ConfigError as exc:
    sys.exit(f"layernas: config error: {exc}")

CTX = Context(config)
L = CTX.layout
# What the input functions ask, memoised for this process (layernas/workflow/controller.py).
SEARCH = Controller(CTX)


wildcard_constraints:
    r=r"\d+",
    l=r"\d+",
    key=r"[0-9a-f]{16}",
    skey=r"[0-9a-f]{16}",
    c=r"\d+",
    v=r"\d+",


def children_of(r, l):
    """Path of children(r, l); raises IncompleteCheckpointException until it exists."""
    return checkpoints.children.get(r=r, l=l).output[0]


def stage_inputs_children(wc):
    return CTX.children_inputs(int(wc.r), int(wc.l))


def stage_inputs_aggregate(wc):
    r, l = int(wc.r), int(wc.l)
    children_of(r, l)  # IncompleteCheckpointException until children(r, l) has run
    return SEARCH.aggregate_inputs(r, l)  # + the manifests of the stage's trial batches


def batch_trials(wc):
    """[[key, arch], ...] of batch c of stage (r, l), from its children table."""
    return SEARCH.chunk(int(wc.r), int(wc.l), int(wc.c))


def summary_inputs(wc):
    try:
        # Each stage's checkpoint is asked once per process, not on every DAG re-evaluation.
        stages, _ = SEARCH.walk(children_of)
    except IncompleteCheckpointException:
        # A resumed or finished search: every stage on disk at once, as checkpoint targets.
        chain = SEARCH.chain_on_disk()
        if not chain:
            raise
        return {"stages": [checkpoint_target(path) for path in chain]}
    last = stages[-1]
    tables = latest_tables(CTX, stages)
    return {
        "history": CTX.history_path(*last),
        "tables": [tables[l] for l in sorted(tables)],
    }


def final_keys():
    if not (config["final"]["activate"] and config["evaluator"] in TRAINED):
        return []
    return final_keys_of(checkpoints.search_summary.get().output.top)


def final_targets():
    return [str(L.final_metrics(k)) for k in final_keys()]


def export_targets():
    if not exports_final(config):
        return []
    return [str(L.export_card(k)) for k in final_keys()]


def transfer_targets():
    if not config["transfer"]["activate"]:
        return []
    return [str(L.transfer_metrics(k)) for k in final_keys()]


def all_targets(wc):
    # A trial deleted after its batch ran (by hand, `layernas audit --fix`, `retry-failed`) is
    # redone by the same command: the batch's next run is a target (SEARCH.redo_targets), and the
    # stages after it re-run by mtime. Without it, Snakemake leaves a missing intermediate file
    # alone when what follows is up to date. No trial is listed one by one: the DAG holds one
    # job per batch, and `all` asks no checkpoint, so it is evaluated once per run.
    targets = [str(L.summary)]
    # A deleted supernet (audit --fix) is trained again; the stages after it re-run by mtime.
    if CTX.supernet_key is not None:
        targets.append(str(L.supernet_metrics(CTX.supernet_key)))
    targets += SEARCH.redo_targets()
    targets += final_targets()
    targets += export_targets()
    targets += transfer_targets()
    if config["report"]["activate"]:
        targets.append(str(L.report(".done")))
    return targets
