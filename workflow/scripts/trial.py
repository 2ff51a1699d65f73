"""One trial: output[0] = results/trials/{key}/metrics.json; params.arch; config evaluator.
A failing trial writes status: failed (it is not an error for Snakemake), so the search goes on."""
import sys
from pathlib import Path

from layernas.workflow import Context, evaluate_tabular

sm = snakemake  # noqa: F821
key = sm.wildcards.key
out_dir = Path(sm.output[0]).parent
with open(sm.log[0], "w") as log:
    sys.stderr = log
    ctx = Context(sm.config)
    if ctx.key(sm.params.arch) != key:
        raise SystemExit(f"trial key {key} does not match arch {sm.params.arch} under this config")
    if ctx.config["evaluator"] == "tabular":
        m = evaluate_tabular(ctx, sm.params.arch, key, out_dir)
    else:
        from layernas.store import run_trial

        m = run_trial(
            ctx.space, sm.params.arch, ctx.config["train"], ctx.seed, out_dir, threads=sm.threads,
        )
    print(f"trial {key} arch {sm.params.arch}: {m.get('status')} {m.get('error') or ''}", file=log)
