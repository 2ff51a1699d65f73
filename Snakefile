# LayerNAS as a Snakemake workflow: one checkpoint per (sweep, layer), one job per trial,
# Parquet bucket tables on disk. See docs/design.md and docs/workflow.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/trials.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,
