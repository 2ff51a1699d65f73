# Plots and tables for `snakemake --report report.html`; captions in workflow/report/.
# front.rst is the report's front page (what was found, with the accuracy-vs-cost figure
# embedded): workflow/report/workflow.rst includes it.


rule report_plots:
    input:
        summary=str(L.summary),
        history=str(L.full_history),
        tables=str(L.tables),
        final=lambda wc: final_targets(),
        transfer=lambda wc: transfer_targets(),
        export=lambda wc: export_targets(),
    output:
        progress=report(
            str(L.report("best_vs_trials.png")),
            caption="../report/best_vs_trials.rst",
            category="Search",
        ),
        scatter=report(
            str(L.report("accuracy_vs_cost.png")),
            caption="../report/accuracy_vs_cost.rst",
            category="Search",
        ),
        heatmaps=report(
            directory(str(L.report("heatmaps"))),
            patterns=["layer{layer}.png"],
            caption="../report/heatmap.rst",
            category="Bucket tables",
        ),
        final=report(
            str(L.report("final_models.csv")),
            caption="../report/final_models.rst",
            category="Final models",
        ),
        transfer=report(
            str(L.report("transfer.csv")),
            caption="../report/transfer.rst",
            category="Detection transfer",
        ),
        failed=report(
            str(L.report("failed_trials.csv")),
            caption="../report/failed_trials.rst",
            category="Search",
        ),
        front=str(L.report("front.rst")),
        done=touch(str(L.report(".done"))),
    log:
        str(L.log("report_plots")),
    conda:
        "../../envs/layernas.yaml"
    script:
        "../scripts/plots.py"


localrules:
    report_plots,
