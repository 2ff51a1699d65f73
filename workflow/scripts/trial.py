"""A batch of trials: params.trials = [[key, arch], ...]; output[0] = the batch manifest; each
trial recorded under params.store/{key}/ as a one-trial job records it, its one-line log at
params.logs. A failing trial writes status: failed (not an error for Snakemake), so the search
goes on."""
import os
import sys

from layernas.evaluate.trial import run_trial_batch

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    run_trial_batch(sm.config, sm.params.trials, sm.output[0], sm.params.store, sm.params.logs, sm.threads, log=log)
# Every file is written (atomically, fsynced) and the log closed: skip the interpreter's
# teardown, which takes ~1.8 s once torch is loaded (2-core VM), a tenth of a 20 s trial job.
os._exit(0)
