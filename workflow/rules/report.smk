# Plots and tables for `snakemake --report report.html`; captions in workflow/report/.


rule report_plots:
    input:
        summary=f"{R}/search/summary.json",
        history=f"{R}/search/history.parquet",
        tables=f"{R}/search/tables.parquet",
        final=lambda wc: final_targets(),
        transfer=lambda wc: transfer_targets(),
    output:
        progress=report(f"{R}/report/best_vs_trials.png", caption="../report/best_vs_trials.rst", category="Search"),
        scatter=report(f"{R}/report/accuracy_vs_cost.png", caption="../report/accuracy_vs_cost.rst", category="Search"),
        heatmaps=report(
            directory(f"{R}/report/heatmaps"),
            patterns=["layer{layer}.png"],
            caption="../report/heatmap.rst",
            category="Bucket tables",
        ),
        final=report(f"{R}/report/final_models.csv", caption="../report/final_models.rst", category="Final models"),
        transfer=report(f"{R}/report/transfer.csv", caption="../report/transfer.rst", category="Detection transfer"),
        failed=report(f"{R}/report/failed_trials.csv", caption="../report/failed_trials.rst", category="Search"),
        done=touch(f"{R}/report/.done"),
    log:
        f"{R}/logs/report_plots.log",
    conda:
        "../../envs/search.yaml"
    script:
        "../scripts/plots.py"


localrules:
    report_plots,
