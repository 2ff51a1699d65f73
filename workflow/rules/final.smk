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


# Each final model exported (final.export, on by default): TorchScript, ONNX (checked with
# onnx.checker and ONNX Runtime against PyTorch) and the model card, results/export/{key}/
# (layernas/evaluate/export.py; docs/export.md). A separate rule, so switching it off or on
# never retrains a final model. Seconds per model, so it runs on the submitting machine.


rule export:
    input:
        str(L.final_metrics("{key}")),
    output:
        report(
            str(L.export_card("{key}")),
            caption="../report/export.rst",
            category="Final models",
            labels={"model": "{key}", "file": "model card"},
        ),
    log:
        str(L.log("export", "{key}")),
    conda:
        "../../envs/layernas.yaml"
    threads: 1
    params:
        latency=config["latency"],
        table=latency_table_path(config),
    script:
        "../scripts/export.py"


localrules:
    export,
