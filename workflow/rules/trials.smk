# One job per trial, keyed by content: results/trials/{key}/ is reused by any stage, sweep or
# later search that asks for the same (space, arch, training config, seed).


rule trial:
    output:
        str(L.trial_metrics("{key}")),
    log:
        str(L.log("trials", "{key}")),
    benchmark:
        str(L.benchmark("trials", "{key}"))
    conda:
        "../../envs/layernas.yaml"
    threads: config["resources"]["trial"]["threads"]
    resources:
        runtime=config["resources"]["trial"]["runtime"],
        mem_mb=config["resources"]["trial"]["mem_mb"],
        gpus=config["resources"]["trial"]["gpus"],
    params:
        arch=lambda wc: arch_for_key(L.root, wc.key),
    script:
        "../scripts/trial.py"


# A table lookup is cheaper than submitting a job for it (resources.trial.local overrides).
_local = config["resources"]["trial"].get("local")
if _local if _local is not None else config["evaluator"] == "tabular":

    localrules:
        trial,
