"""Checkpoint children(r, l): snakemake.input.{history, parents_table} (optional), output[0]."""
from layernas.workflow.progress import emit, stage_job, stage_start_line
from layernas.workflow.stages import Context, write_children

sm = snakemake  # noqa: F821  (injected by Snakemake)
r, l = int(sm.wildcards.r), int(sm.wildcards.l)
with stage_job(sm.log[0], f"children of sweep {r} layer {l}") as log:
    ctx = Context(sm.config)
    kids = write_children(
        ctx, r, l, sm.input.get("history"), sm.input.get("parents_table"), sm.output[0]
    )
    counts = kids["action"].value_counts().to_dict() if len(kids) else {}
    print(f"sweep {r} layer {l}: {len(kids)} children {counts}", file=log)
    # One line for the person at the terminal (sys.__stderr__) and in results/logs/progress.log.
    print(emit(ctx.layout, stage_start_line(ctx, r, l, kids, sm.input.get("history"))), file=log)
