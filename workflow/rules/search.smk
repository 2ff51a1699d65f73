# Per-(sweep, layer) stages: children checkpoint -> trials -> aggregate bucket table.


checkpoint children:
    input:
        unpack(stage_inputs_children),
    output:
        f"{R}/search/r{{r}}/l{{l}}/children.parquet",
    log:
        f"{R}/logs/children/r{{r}}_l{{l}}.log",
    params:
        signature=CTX.signature,
    conda:
        "../../envs/search.yaml"
    script:
        "../scripts/children.py"


rule aggregate:
    input:
        unpack(stage_inputs_aggregate),
    output:
        buckets=f"{R}/search/r{{r}}/l{{l}}/buckets.parquet",
        history=f"{R}/search/r{{r}}/l{{l}}/history.parquet",
    log:
        f"{R}/logs/aggregate/r{{r}}_l{{l}}.log",
    params:
        signature=CTX.signature,
    conda:
        "../../envs/search.yaml"
    script:
        "../scripts/aggregate.py"


checkpoint search_summary:
    input:
        unpack(summary_inputs),
    output:
        summary=f"{R}/search/summary.json",
        history=f"{R}/search/history.parquet",
        tables=f"{R}/search/tables.parquet",
        top=f"{R}/search/top.parquet",
    log:
        f"{R}/logs/search_summary.log",
    params:
        signature=CTX.signature,
        final=config["final"],
    conda:
        "../../envs/search.yaml"
    script:
        "../scripts/summary.py"


localrules:
    children,
    aggregate,
    search_summary,
