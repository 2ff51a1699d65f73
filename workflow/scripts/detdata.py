"""Generate the offline COCO-format detection set (rule detdata): output[0] is the directory
(annotations/instances_{train,val}.json, train/*.png, val/*.png, meta.json); params.gen holds
`layernas.detect.data.GenConfig` fields (seed filled in by layernas.workflow.config.transfer_plan)."""
import sys

from layernas.detect.data import GenConfig, generate

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    meta = generate(sm.output[0], GenConfig.from_dict(sm.params.gen), overwrite=True)
    print(f"detdata {sm.output[0]}: {meta['resolved_source']} objects, counts {meta['counts']}", file=log)
