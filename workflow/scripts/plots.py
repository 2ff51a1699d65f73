"""Report figures: inputs summary, history, tables, final (metrics.json list);
outputs progress, scatter, heatmaps (dir), final, transfer, failed (csv), front (the front page, rst), done."""
import sys

from layernas.workflow.report import write_report_figures

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    sys.stderr = log
    write_report_figures(
        summary=sm.input.summary, history=sm.input.history, tables=sm.input.tables,
        final=list(sm.input.final), out=dict(sm.output), space_name=sm.config["space"],
        transfer=list(sm.input.transfer), config=sm.config,
    )
