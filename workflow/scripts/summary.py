"""Search summary: inputs history (last stage), tables (latest per layer);
outputs summary, history, tables, top."""
from layernas.workflow.progress import emit, stage_job
from layernas.workflow.stages import Context, latest_tables, walk, write_summary

sm = snakemake  # noqa: F821
with stage_job(sm.log[0], "search summary") as log:
    ctx = Context(sm.config)
    stages, stopped = walk(ctx, lambda r, l: ctx.children_path(r, l))
    s = write_summary(ctx, stages, stopped, sm.input.history, latest_tables(ctx, stages), dict(sm.output))
    print(f"search done: {s['trials']} trials, best {s['best']}", file=log)
    print(emit(ctx.layout, f"search done ({s['outcome']}): {s['message']}"), file=log)
