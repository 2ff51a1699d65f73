"""Detection transfer of one final model (rule transfer; docs/transfer.md).

input.final (results/final/{key}/metrics.json; its model.pt, when the retraining saved one, is the
backbone's weights), input.data (COCO-layout directory), params.arch, params.recipe
(TransferConfig fields, seed filled in), output.metrics (detections*.json go next to it).
"""
import sys
from pathlib import Path

from layernas.core.space import parse_arch
from layernas.detect.recipe import TransferConfig
from layernas.detect.transfer import run_transfer
from layernas.workflow.stages import Context

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    recipe = dict(sm.params.recipe)
    recipe.setdefault("threads", int(sm.threads))
    space = Context(sm.config).space
    weights = Path(sm.input.final).with_name("model.pt")
    m = run_transfer(space, parse_arch(sm.params.arch, space), weights if weights.is_file() else None,
                     sm.input.data, TransferConfig.from_dict(recipe), Path(sm.output.metrics).parent, log=log)
    ref = m.get("reference") or {}
    print(f"transfer {sm.params.arch}: mAP {m['map']:.4f} (reference {ref.get('map')}), "
          f"{m['total_seconds']:.0f} s", file=log)
