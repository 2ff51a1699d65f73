# Per-(sweep, layer) stages: children checkpoint -> trial batches -> aggregate bucket table.
# The stage steps take milliseconds: they run inside the controller (run:, in a thread with
# profiles/default's use-threads), not as a Python process each (layernas/workflow/steps.py).


checkpoint children:
    input:
        unpack(stage_inputs_children),
    output:
        str(L.children("{r}", "{l}")),
    log:
        str(L.stage_log("children", "{r}", "{l}")),
    params:
        signature=CTX.signature,
    run:
        children_step(CTX, int(wildcards.r), int(wildcards.l), input, output[0], log[0])


rule aggregate:
    input:
        unpack(stage_inputs_aggregate),
    output:
        buckets=str(L.buckets("{r}", "{l}")),
        history=str(L.history("{r}", "{l}")),
    log:
        str(L.stage_log("aggregate", "{r}", "{l}")),
    params:
        signature=CTX.signature,
    run:
        aggregate_step(CTX, int(wildcards.r), int(wildcards.l), input, *output, log[0])


checkpoint search_summary:
    input:
        unpack(summary_inputs),
    output:
        summary=str(L.summary),
        history=str(L.full_history),
        tables=str(L.tables),
        top=str(L.top),
    log:
        str(L.log("search_summary")),
    params:
        signature=CTX.signature,
        final=config["final"],
    run:
        summary_step(CTX, input.history, dict(output), log[0])


localrules:
    children,
    aggregate,
    search_summary,
