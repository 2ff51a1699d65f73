"""One trial: output[0] = results/trials/{key}/metrics.json; params.arch; threads.
A failing trial writes status: failed (not an error for Snakemake), so the search goes on."""
import sys
from pathlib import Path

from layernas.evaluate.trial import run_trial_job

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    m = run_trial_job(sm.config, sm.params.arch, sm.wildcards.key, Path(sm.output[0]).parent, sm.threads)
    print(f"trial {sm.wildcards.key} arch {sm.params.arch}: {m.get('status')} {m.get('error') or ''}", file=log)
