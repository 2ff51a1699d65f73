# Config checks, wildcard constraints and input functions. The logic lives in
# layernas/workflow/ (tested without Snakemake); this file only adapts it to rules.
import sys

from layernas.store.layout import DETECTIONS
from layernas.workflow.config import (
    ConfigError,
    check_config,
    exports_final,
    latency_table_path,
    transfer_plan,
)
from layernas.workflow.stages import (
    Context,
    arch_for_key,
    final_keys_of,
    latest_tables,
    walk,
)

# The one config check (layernas.workflow.config): one line naming field and value, no traceback.
try:
    check_config(config)
except ConfigError as exc:
    sys.exit(f"layernas: config error: {exc}")

CTX = Context(config)
L = CTX.layout


wildcard_constraints:
    r=r"\d+",
    l=r"\d+",
    key=r"[0-9a-f]{16}",


def children_of(r, l):
    """Path of children(r, l); raises IncompleteCheckpointException until it exists."""
    return checkpoints.children.get(r=r, l=l).output[0]


def stage_inputs_children(wc):
    return CTX.children_inputs(int(wc.r), int(wc.l))


def stage_inputs_aggregate(wc):
    r, l = int(wc.r), int(wc.l)
    inputs = CTX.aggregate_inputs(r, l)
    children_of(r, l)  # IncompleteCheckpointException until children(r, l) has run
    inputs["trials"] = CTX.trial_paths([(r, l)])
    return inputs


def search_walk():
    # Calls checkpoints.children.get() for every layer of every sweep (snakemake #3862).
    return walk(CTX, children_of)


def summary_inputs(wc):
    stages, _ = search_walk()
    last = stages[-1]
    tables = latest_tables(CTX, stages)
    return {
        "history": CTX.history_path(*last),
        "tables": [tables[l] for l in sorted(tables)],
    }


def final_keys():
    if not (config["final"]["activate"] and config["evaluator"] == "train"):
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
    # Every trial the search asks for is a target too, not only an input of its aggregate
    # stage: a trial deleted after its stage was aggregated (or by `layernas audit --fix`) is
    # then redone by the same command, and the stages after it re-run by mtime. Without it,
    # Snakemake leaves a missing intermediate file alone when what follows is up to date.
    stages, _ = search_walk()
    targets = CTX.trial_paths(stages)
    targets.append(str(L.summary))
    targets += final_targets()
    targets += export_targets()
    targets += transfer_targets()
    if config["report"]["activate"]:
        targets.append(str(L.report(".done")))
    return targets
