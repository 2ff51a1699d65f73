"""Checkpoint children(r, l): snakemake.input.{history, parents_table} (optional), output[0]."""
import sys

from layernas.workflow.stages import Context, write_children

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    ctx = Context(sm.config)
    r, l = int(sm.wildcards.r), int(sm.wildcards.l)
    kids = write_children(
        ctx, r, l, sm.input.get("history"), sm.input.get("parents_table"), sm.output[0]
    )
    counts = kids["action"].value_counts().to_dict() if len(kids) else {}
    print(f"sweep {r} layer {l}: {len(kids)} children {counts}", file=log)
