# Per-(sweep, layer) stages: children checkpoint -> trials -> aggregate bucket table.


checkpoint children:
    input:
        unpack(stage_inputs_children),
    output:
        str(L.children("{r}", "{l}")),
    log:
        str(L.stage_log("children", "{r}", "{l}")),
    conda:
        "../../envs/layernas.yaml"
    params:
        signature=CTX.signature,
    script:
        "../scripts/children.py"


rule aggregate:
    input:
        unpack(stage_inputs_aggregate),
    output:
        buckets=str(L.buckets("{r}", "{l}")),
        history=str(L.history("{r}", "{l}")),
    log:
        str(L.stage_log("aggregate", "{r}", "{l}")),
    conda:
        "../../envs/layernas.yaml"
    params:
        signature=CTX.signature,
    script:
        "../scripts/aggregate.py"


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
    conda:
        "../../envs/layernas.yaml"
    params:
        signature=CTX.signature,
        final=config["final"],
    script:
        "../scripts/summary.py"


localrules:
    children,
    aggregate,
    search_summary,
