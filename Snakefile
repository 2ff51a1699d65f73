# LayerNAS as a Snakemake workflow: one checkpoint per (sweep, layer), one job per trial,
# Parquet bucket tables on disk. See docs/design.md and docs/workflow.md.
from snakemake.utils import min_version

from layernas.workflow.hooks import on_error, on_start, on_success

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/latency.smk"
include: "workflow/rules/supernet.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/trials.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,


# What the run says to the person who started it (layernas/workflow/hooks.py): a warning when
# the budget cannot reach the target, the outcome at the end (exit status 3 when the search found
# no model in the target range), and the exact command that resumes a stopped run.
onstart:
    on_start(CTX, log)


onsuccess:
    on_success(CTX, log)


onerror:
    on_error(CTX, log)
