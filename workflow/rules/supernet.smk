# evaluator supernet: the weight-sharing supernet, trained once per supernet key (space id, the
# trials' data, the supernet recipe, seed) into results/supernet/{skey}/ (supernet.pt, then
# metrics.json last with the checkpoint's content hash; layernas/evaluate/supernet_job.py).
# Every children checkpoint waits for its metrics.json (Context.children_inputs): the trial
# keys hold that hash, and the trial batches evaluate the children as slices of this supernet.


rule supernet:
    output:
        str(L.supernet_metrics("{skey}")),
    log:
        str(L.log("supernet", "{skey}")),
    benchmark:
        str(L.benchmark("supernet", "{skey}"))
    conda:
        "../../envs/layernas.yaml"
    threads: config["resources"]["supernet"]["threads"]
    resources:
        runtime=config["resources"]["supernet"]["runtime"],
        mem_mb=config["resources"]["supernet"]["mem_mb"],
        gpus=config["resources"]["supernet"]["gpus"],
    script:
        "../scripts/supernet.py"
