"""Final retraining of one top model: output[0] = results/final/{key}/metrics.json; params.arch."""
import sys
from pathlib import Path

from layernas.workflow.stages import Context

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    sys.stderr = log
    ctx = Context(sm.config)
    from layernas.evaluate.final import run_final

    m = run_final(
        ctx.space, sm.params.arch, ctx.config["train"], ctx.config["final"], ctx.seed,
        Path(sm.output[0]).parent, threads=sm.threads,
    )
    print(f"final {sm.wildcards.key} arch {sm.params.arch}: {m.get('status')}", file=log)
