# Config checks, wildcard constraints and input functions. The logic lives in
# layernas/workflow.py (tested without Snakemake); this file only adapts it to rules.
import sys

from layernas.workflow import ConfigError, Context, transfer_plan, validate as validate_semantics, walk, latest_tables

try:
    validate_semantics(config)
except ConfigError as exc:
    sys.exit(f"layernas: config error: {exc}")

CTX = Context(config)
R = str(CTX.results)


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
    import pandas as pd

    kids = pd.read_parquet(children_of(r, l))
    inputs["trials"] = [CTX.trial_path(k) for k in kids.loc[kids["action"] == "evaluate", "key"]]
    return inputs


def search_walk():
    # Calls checkpoints.children.get() for every layer of every sweep (snakemake #3862).
    return walk(CTX, children_of)


def summary_inputs(wc):
    stages, _ = search_walk()
    last = stages[-1]
    tables = latest_tables(CTX, stages)
    return {"history": CTX.history_path(*last), "tables": [tables[l] for l in sorted(tables)]}


def final_keys():
    if not (config["final"]["activate"] and config["evaluator"] == "train"):
        return []
    import pandas as pd

    return list(pd.read_parquet(checkpoints.search_summary.get().output.top)["final_key"])


def final_targets():
    return expand(f"{R}/final/{{key}}/metrics.json", key=final_keys())


def transfer_targets():
    if not config["transfer"]["activate"]:
        return []
    return expand(f"{R}/transfer/{{key}}/metrics.json", key=final_keys())


def all_targets(wc):
    targets = [f"{R}/search/summary.json"]
    targets += final_targets()
    targets += transfer_targets()
    if config["report"]["activate"]:
        targets.append(f"{R}/report/.done")
    return targets
