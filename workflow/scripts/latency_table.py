"""Rule latency_table: measure the space's latency table into output[0]; params.plan = latency config."""
from layernas.core.cost import Context as CostContext
from layernas.evaluate.latency import measure_table, write_table
from layernas.workflow.progress import stage_job
from layernas.workflow.stages import Context

sm = snakemake  # noqa: F821  (injected by Snakemake)
plan = sm.params.plan
device = "cpu" if str(plan["device"]).startswith("cpu") else str(plan["device"]).split(":")[0]
with stage_job(sm.log[0], "latency table") as log:
    ctx = Context(sm.config)
    kw = {k: v for k, v in ctx.cost_kwargs.items() if k != "latency_table"}
    cctx = CostContext.of(ctx.space, **kw)
    df = measure_table(ctx.space, cctx, plan["runtime"], int(plan["threads"]), int(plan["warmup"]),
                       int(plan["repeats"]), device=device, progress=lambda m: print(m, file=log, flush=True),
                       stat=plan["statistic"])
    write_table(df, sm.output[0])
    print(f"{len(df) - 1} segments on {df['device'].iloc[0]}, fixed "
          f"{df.loc[df['segment'] == 'fixed', 'ms'].iloc[0]:.3f} ms", file=log)
