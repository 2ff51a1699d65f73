"""Aggregate (r, l): table(r, l) + cumulative history. Inputs: children, history?, prev_table?,
prev_next_children?, trials (metrics.json files); outputs: buckets, history."""
from layernas.workflow.progress import emit, stage_end_line, stage_job
from layernas.workflow.stages import Context, write_aggregate

sm = snakemake  # noqa: F821
r, l = int(sm.wildcards.r), int(sm.wildcards.l)
with stage_job(sm.log[0], f"aggregate of sweep {r} layer {l}") as log:
    ctx = Context(sm.config)
    names = ("children", "history", "prev_table", "prev_next_children")
    inputs = {k: sm.input.get(k) for k in names if sm.input.get(k)}
    write_aggregate(ctx, r, l, inputs, sm.output.buckets, sm.output.history)
    print(f"sweep {r} layer {l}: aggregated {len(sm.input.get('trials', []))} new trials", file=log)
    # One line for the person at the terminal (sys.__stderr__) and in results/logs/progress.log.
    print(emit(ctx.layout, stage_end_line(ctx, r, l, inputs["children"], sm.output.history)), file=log)
