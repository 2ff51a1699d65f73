# Detection transfer of the final models: SSDLite on each found backbone and on a MAdds-matched
# MobileNetV3-Small, COCO mAP from pycocotools (docs/transfer.md).

TRANSFER = transfer_plan(config)


rule detdata:
    output:
        directory(f"{R}/transfer/data"),
    log:
        f"{R}/logs/transfer/detdata.log",
    params:
        gen=TRANSFER["gen"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/detdata.py"


rule transfer:
    input:
        final=f"{R}/final/{{key}}/metrics.json",
        data=TRANSFER["coco_root"] or f"{R}/transfer/data",
    output:
        metrics=f"{R}/transfer/{{key}}/metrics.json",
        detections=f"{R}/transfer/{{key}}/detections.json",
    log:
        f"{R}/logs/transfer/{{key}}.log",
    benchmark:
        f"{R}/benchmarks/transfer/{{key}}.tsv"
    params:
        arch=lambda wc: arch_for_key(R, wc.key),
        recipe=TRANSFER["recipe"],
    threads: config["resources"]["transfer"]["threads"]
    resources:
        runtime=config["resources"]["transfer"]["runtime"],
        mem_mb=config["resources"]["transfer"]["mem_mb"],
        gpus=config["resources"]["transfer"]["gpus"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/transfer.py"
