# One job per trial, keyed by content: results/trials/{key}/ (or {store}/{key}/ with `trials:`
# set, an absolute path) is reused by any stage, sweep or later search, from any results
# directory using that store, that asks for the same (space, arch, training config, seed).
# Two searches may run the same key at once: every file is written atomically, and a job that
# finds the key finished by the other keeps it (not evaluated again). update(): Snakemake does not
# delete metrics.json before running the job, as it otherwise does with an output that exists by
# then (another search sharing the store finished that key after this run's DAG was built, or a
# kill landed after the write): no reader, of this search or another, sees it vanish meanwhile,
# and the job finds it finished (layernas.evaluate.trial; finished.json covers a deleted copy).


rule trial:
    output:
        update(str(L.trial_metrics("{key}"))),
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
