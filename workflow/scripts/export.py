"""Export of one final model: input[0] = results/final/{key}/metrics.json, output[0] = the card
results/export/{key}/model.json (model.pt and model.onnx beside it; layernas.evaluate.export)."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    from layernas.evaluate.export import export_final_dir

    card = export_final_dir(Path(sm.input[0]).parent, Path(sm.output[0]).parent)
    if card["status"] == "ok":  # its latency on this machine (and the table's prediction in a latency search)
        from layernas.evaluate.latency import final_model_latency
        from layernas.store.files import atomic_write_json

        card["latency"] = final_model_latency(Path(sm.input[0]).parent, sm.params.latency, sm.params.table)
        atomic_write_json(sm.output[0], card)
        print(f"latency {card['latency']}", file=log)
    if card["status"] == "ok":
        diffs = ", ".join(f"{f} {c['max_abs_diff']:.2g}" for f, c in card["checks"].items())
        print(f"export {card['key']}: {', '.join(card['files'])} (max |logit difference| {diffs}) "
              f"in {card['export_seconds']:.1f} s", file=log)
    else:
        print(f"export {card['key']}: not exported: {card['error']}", file=log)
