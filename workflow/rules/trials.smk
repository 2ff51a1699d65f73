# Trials in batches: one job runs batch c of stage (r, l), up to resources.trial.batch trials
# (default: all of the stage's for table lookups, one when training; layernas/workflow/controller.py),
# and writes each trial to results/trials/{key}/ (or {store}/{key}/ with `trials:` set, an
# absolute path) exactly as a one-trial job would: keyed by content, reused by any stage, sweep
# or later search, from any results directory using that store, that asks for the same (space,
# arch, training config, seed). The job's output is the batch's manifest; a trial it finds
# finished is skipped, so a batch killed half-way re-runs only its unfinished trials, and a
# trial deleted later is redone by the batch's next run (v + 1). The records are never a job's
# declared output, so Snakemake never deletes one (two searches may share a store; a per-key
# flock makes a key evaluated once; layernas.evaluate.trial).


if inline_trials(config):

    # Table lookups on the submitting machine: the batch runs inside the controller (a thread,
    # like the search steps), not as a Python process that loads the oracle again.
    rule trial:
        input:
            str(L.children("{r}", "{l}")),
        output:
            str(L.batch("{r}", "{l}", "{c}", "{v}")),
        log:
            str(L.log("batch", "r{r}_l{l}_c{c}.{v}")),
        params:
            trials=batch_trials,
        run:
            trial_batch_step(CTX, params.trials, output[0], log[0])

    localrules:
        trial,

else:

    rule trial:
        input:
            str(L.children("{r}", "{l}")),
        output:
            str(L.batch("{r}", "{l}", "{c}", "{v}")),
        log:
            str(L.log("batch", "r{r}_l{l}_c{c}.{v}")),
        benchmark:
            str(L.benchmark("batch", "r{r}_l{l}_c{c}.{v}"))
        conda:
            "../../envs/layernas.yaml"
        threads: config["resources"]["trial"]["threads"]
        resources:
            runtime=config["resources"]["trial"]["runtime"],
            mem_mb=config["resources"]["trial"]["mem_mb"],
            gpus=config["resources"]["trial"]["gpus"],
        params:
            trials=batch_trials,
            store=str(L.trials_dir),
            logs=lambda wc: str(L.log("trials", "{key}")),
        script:
            "../scripts/trial.py"

    # A table lookup is cheaper than submitting a job for it (resources.trial.local overrides).
    _local = config["resources"]["trial"].get("local")
    if _local if _local is not None else config["evaluator"] == "tabular":

        localrules:
            trial,
