# Detection transfer of the final models: SSDLite on each found backbone and on a MAdds-matched
# MobileNetV3-Small, COCO mAP from pycocotools (docs/transfer.md).

TRANSFER = transfer_plan(config)


rule detdata:
    output:
        directory(str(L.transfer_data)),
    log:
        str(L.log("transfer", "detdata")),
    conda:
        "../../envs/layernas.yaml"
    threads: 1
    resources:
        runtime=config["resources"]["transfer"]["runtime"],
        mem_mb=config["resources"]["transfer"]["mem_mb"],
    params:
        gen=TRANSFER["gen"],
    script:
        "../scripts/detdata.py"


rule transfer:
    input:
        final=str(L.final_metrics("{key}")),
        data=TRANSFER["coco_root"] or str(L.transfer_data),
    output:
        metrics=str(L.transfer_metrics("{key}")),
        detections=str(L.transfer_dir("{key}") / DETECTIONS),
    log:
        str(L.log("transfer", "{key}")),
    benchmark:
        str(L.benchmark("transfer", "{key}"))
    conda:
        "../../envs/layernas.yaml"
    threads: config["resources"]["transfer"]["threads"]
    resources:
        runtime=config["resources"]["transfer"]["runtime"],
        mem_mb=config["resources"]["transfer"]["mem_mb"],
        gpus=config["resources"]["transfer"]["gpus"],
    params:
        arch=lambda wc: arch_for_key(L.root, wc.key),
        recipe=TRANSFER["recipe"],
    script:
        "../scripts/transfer.py"
