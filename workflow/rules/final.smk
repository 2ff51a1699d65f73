# Long retraining of the top-N distinct models in the target range (the paper's final recipe).


rule final:
    output:
        f"{R}/final/{{key}}/metrics.json",
    log:
        f"{R}/logs/final/{{key}}.log",
    benchmark:
        f"{R}/benchmarks/final/{{key}}.tsv"
    params:
        arch=lambda wc: arch_for_key(R, wc.key),
    threads: config["resources"]["final"]["threads"]
    resources:
        runtime=config["resources"]["final"]["runtime"],
        mem_mb=config["resources"]["final"]["mem_mb"],
        gpus=config["resources"]["final"]["gpus"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/final.py"
