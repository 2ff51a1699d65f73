# The latency table of a latency search (target.metric latency, no latency.table given): every
# segment of the space timed once on the machine that runs this job (docs/latency.md).


rule latency_table:
    output:
        str(L.latency_table),
    log:
        str(L.log("latency_table")),
    conda:
        "../../envs/layernas.yaml"
    threads: config["latency"]["threads"]
    resources:
        runtime=60,
        mem_mb=4000,
    params:
        plan=config["latency"],
    script:
        "../scripts/latency_table.py"
