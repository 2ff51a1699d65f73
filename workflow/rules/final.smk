# Long retraining of the top-N distinct models in the target range (the paper's final recipe).


rule final:
    output:
        str(L.final_metrics("{key}")),
    log:
        str(L.log("final", "{key}")),
    benchmark:
        str(L.benchmark("final", "{key}"))
    conda:
        "../../envs/layernas.yaml"
    threads: config["resources"]["final"]["threads"]
    resources:
        runtime=config["resources"]["final"]["runtime"],
        mem_mb=config["resources"]["final"]["mem_mb"],
        gpus=config["resources"]["final"]["gpus"],
    params:
        arch=lambda wc: arch_for_key(L.root, wc.key),
    script:
        "../scripts/final.py"
