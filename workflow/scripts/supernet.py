"""Train the run's supernet: output[0] = results/supernet/{skey}/metrics.json (written last;
layernas/evaluate/supernet_job.py). Its progress lines go to the terminal and logs/progress.log;
a failure leaves its traceback in the job's log and one line on the terminal."""

import os
from pathlib import Path

from layernas.evaluate.supernet_job import run_supernet_job
from layernas.store.layout import Layout
from layernas.workflow.progress import emit, stage_job

sm = snakemake  # noqa: F821  (injected by Snakemake)
layout = Layout(sm.config.get("results", "results"))
with stage_job(sm.log[0], "supernet training") as log:
    run_supernet_job(
        sm.config, Path(sm.output[0]).parent, sm.threads, log=log, progress=lambda line: emit(layout, line)
    )
# Every file is written (atomically, fsynced) and the log closed: skip the interpreter's
# teardown with torch loaded (~1.8 s on the 2-core VM).
os._exit(0)
