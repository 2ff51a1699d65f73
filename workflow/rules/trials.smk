# One job per trial, keyed by content: results/trials/{key}/ is reused by any stage, sweep or
# later search that asks for the same (space, arch, training config, seed).
from layernas.workflow import arch_for_key


rule trial:
    output:
        f"{R}/trials/{{key}}/metrics.json",
    log:
        f"{R}/logs/trials/{{key}}.log",
    benchmark:
        f"{R}/benchmarks/trials/{{key}}.tsv"
    params:
        arch=lambda wc: arch_for_key(R, wc.key),
    threads: config["resources"]["trial"]["threads"]
    resources:
        runtime=config["resources"]["trial"]["runtime"],
        mem_mb=config["resources"]["trial"]["mem_mb"],
        gpus=config["resources"]["trial"]["gpus"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/trial.py"


# A table lookup is cheaper than submitting a job for it (resources.trial.local overrides).
_local = config["resources"]["trial"].get("local")
if _local if _local is not None else config["evaluator"] == "tabular":

    localrules:
        trial,
