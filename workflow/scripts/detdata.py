"""Generate the offline COCO-format detection set (cached: same parameters, no rewrite).

Expects (Snakemake ``script:``):
  output[0]      the data set directory (declare it as ``directory(...)``); it will hold
                 annotations/instances_{train,val}.json, train/*.png, val/*.png, meta.json
  log[0]         log file (stderr goes there)
  params.gen     optional dict of `layernas.detdata.GenConfig` fields; when absent,
                 config["transfer"]["data"] is used (its seed defaults to config["seed"])
"""
import sys

from layernas.detdata import GenConfig, generate

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    gen = getattr(sm.params, "gen", None)
    if gen is None:
        gen = dict((sm.config.get("transfer") or {}).get("data") or {})
        gen.setdefault("seed", int(sm.config.get("seed", 0)))
    meta = generate(sm.output[0], GenConfig.from_dict(gen), overwrite=True)
    print(f"detdata {sm.output[0]}: {meta['resolved_source']} objects, counts {meta['counts']}", file=log)
