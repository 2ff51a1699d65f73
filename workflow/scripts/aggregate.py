"""Aggregate (r, l): table(r, l) + cumulative history. Inputs: children, history?, prev_table?,
prev_next_children?, trials (metrics.json files); outputs: buckets, history."""
import sys

from layernas.workflow.stages import Context, write_aggregate

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    sys.stderr = log
    ctx = Context(sm.config)
    r, l = int(sm.wildcards.r), int(sm.wildcards.l)
    names = ("children", "history", "prev_table", "prev_next_children")
    inputs = {k: sm.input.get(k) for k in names if sm.input.get(k)}
    write_aggregate(ctx, r, l, inputs, sm.output.buckets, sm.output.history)
    print(f"sweep {r} layer {l}: aggregated {len(sm.input.get('trials', []))} new trials", file=log)
