"""Aggregation of a benchmark's runs across seeds: summary statistics, incumbent-curve
bands, the Markdown table and the plot.

Its own module because it only reads the frames a finished `run_bench` returns (one row per
run, a long frame of incumbent curves): it needs no table, strategy or process pool, and the
same functions summarise runs read back from disk.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, target, strategy): best constrained accuracy mean/std and efficiency."""
    def agg(g: pd.DataFrame) -> pd.Series:
        reached = g["trials_to_optimum"].dropna()
        return pd.Series({
            "runs": len(g),
            "with_incumbent": g["best_val"].notna().mean(),
            "val_mean": g["best_val"].mean(),
            "val_std": g["best_val"].std(ddof=0),
            "test_mean": g["best_test"].mean(),
            "test_std": g["best_test"].std(ddof=0),
            "regret_mean": g["regret"].mean(),
            "optimum_val": g["optimum_val"].iloc[0],
            "hit_rate": g["found_optimum"].mean(),
            "evaluated_optimum": len(reached) / len(g),
            "trials_to_optimum_median": reached.median() if len(reached) else math.nan,
            "trials_mean": g["trials"].mean(),
            "cached_mean": g["cached"].mean(),
            "seconds_mean": g["seconds"].mean(),
            "stopped_done": (g["stop"] == "done").mean(),
            "wall_s_mean": g["wall_s"].mean(),
        })

    keys = ["benchmark", "target_fraction", "strategy"]
    order = {k: list(dict.fromkeys(runs[k])) for k in keys}
    out = runs.groupby(keys, sort=False)[list(runs.columns.drop(keys))].apply(agg).reset_index()
    return out.sort_values(keys, key=lambda s: s.map({v: i for i, v in enumerate(order[s.name])})).reset_index(drop=True)


def curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and quartiles over seeds of the incumbent curve (NaN: nothing in target yet,
    left out of the statistics; ``n`` says how many runs had an incumbent)."""
    g = curves.groupby(["benchmark", "target_fraction", "strategy", "x"], sort=False)["best_val"]
    return g.agg(
        mean="mean", std=lambda s: s.std(ddof=0), q25=lambda s: s.quantile(0.25),
        q75=lambda s: s.quantile(0.75), n="count",
    ).reset_index()


def markdown_table(summary: pd.DataFrame) -> str:
    has_test = summary["test_mean"].notna().any()
    head = "| benchmark | target | strategy | best val acc (mean ± std) | " + ("test acc | " if has_test else "")
    head += "regret | optimum reported | optimum evaluated (median trial) | trials | cached |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in summary.iterrows():
        acc = "–" if math.isnan(r["val_mean"]) else f"{r['val_mean']:.2f} ± {r['val_std']:.2f}"
        if r["with_incumbent"] < 1:
            acc += f" ({r['with_incumbent']:.0%} of runs found an in-target arch)"
        target = "none (100%)" if r["target_fraction"] >= 1 else f"{r['target_fraction']:.0%}"
        cells = [r["benchmark"], target, r["strategy"], acc]
        if has_test:
            cells.append(f"{r['test_mean']:.2f} ± {r['test_std']:.2f}")
        ev = f"{r['evaluated_optimum']:.0%}"
        if not math.isnan(r["trials_to_optimum_median"]):
            ev += f" ({r['trials_to_optimum_median']:.0f})"
        cells += [f"{r['regret_mean']:.2f}", f"{r['hit_rate']:.0%}", ev, f"{r['trials_mean']:.0f}", f"{r['cached_mean']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot_curves(cs: pd.DataFrame, path: str | Path, x_unit: str = "trials") -> None:
    """One panel per (target, benchmark): mean incumbent accuracy with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(cs["benchmark"]))
    fracs = list(dict.fromkeys(cs["target_fraction"]))
    fig, axes = plt.subplots(len(fracs), len(benches), figsize=(4.6 * len(benches), 3.4 * len(fracs)), squeeze=False)
    colors = {"layernas": "C3", "random": "C0", "evolution": "C2", "ppo": "C1"}
    for i, f in enumerate(fracs):
        for j, b in enumerate(benches):
            ax = axes[i][j]
            sub = cs[(cs["benchmark"] == b) & (cs["target_fraction"] == f)]
            lows, highs = [], []
            for s in dict.fromkeys(sub["strategy"]):
                d = sub[sub["strategy"] == s]
                ax.plot(d["x"], d["mean"], label=s, color=colors.get(s), lw=1.4)
                ax.fill_between(d["x"], d["mean"] - d["std"], d["mean"] + d["std"], color=colors.get(s), alpha=0.15, lw=0)
                d = d.dropna(subset=["mean"])
                if len(d):
                    lows.append(d["mean"].iloc[len(d) // 10])
                    highs.append(d["mean"].iloc[-1] + d["std"].fillna(0).iloc[-1])
            if lows:
                ax.set_ylim(min(lows) - 0.3, max(highs) + 0.3)
            ax.set_title(f"{b}, target {f:.0%} of max cost", fontsize=9)
            ax.set_xlabel("trials" if x_unit == "trials" else "simulated training seconds")
            ax.set_ylabel("best in-target val acc (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
