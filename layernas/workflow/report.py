"""Figures and tables for the Snakemake report and `layernas status`: best accuracy vs
trials, accuracy vs cost with the target band and the Pareto front, one bucket-table heatmap
per layer, and the final models table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.store.records import read_metrics


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of models no other model beats on both cost (lower) and accuracy (higher)."""
    order = np.lexsort((-acc, cost))
    best = -np.inf
    keep = []
    for i in order:
        if acc[i] > best:
            keep.append(i)
            best = acc[i]
    return np.asarray(keep, dtype=np.int64)


def best_so_far(history: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    """Best in-target accuracy after each new evaluation (trial index starts at 1)."""
    ev = history[history["status"].isin(["ok", "failed"])].reset_index(drop=True)
    acc = ev["accuracy"].astype(float).to_numpy()
    inside = (ev["cost"] >= lo) & (ev["cost"] <= hi) & np.isfinite(acc)
    vals = np.where(inside, acc, -np.inf)
    run = np.maximum.accumulate(vals) if len(vals) else vals
    return pd.DataFrame({"trial": np.arange(1, len(ev) + 1), "best": np.where(np.isfinite(run), run, np.nan)})


TRANSFER_COLUMNS = ("arch", "backbone", "pretrained", "backbone_madds", "detector_madds", "map", "ap50",
                    "ap75", "ap_small", "ap_medium", "ap_large", "untrained_map", "train_seconds")


def transfer_table(paths) -> pd.DataFrame:
    """Found-vs-reference detection rows (the paper's transfer table), one pair per final model,
    read from results/transfer/{key}/metrics.json."""
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        runs = [(f"found {m['arch']}", m)]
        if "found_scratch" in m:
            runs.append(("found, from scratch", m["found_scratch"] | {"pretrained": False}))
        if "reference" in m:
            ref = m["reference"]
            runs.append((f"{ref['name']} x{ref['width_mult']}", ref))
        for name, r in runs:
            rows.append({"key": Path(path).parent.name} | {c: r.get(c) for c in TRANSFER_COLUMNS}
                        | {"arch": m["arch"], "backbone": name})
    return pd.DataFrame(rows, columns=["key", *TRANSFER_COLUMNS])


def failed_table(history: pd.DataFrame, trials_dir: str | Path) -> pd.DataFrame:
    """One row per failed trial with its recorded error (from its metrics.json), so the report
    shows what failed and why next to what succeeded; `layernas retry-failed` redoes them."""
    cols = ["key", "sweep", "layer", "arch", "cost", "error"]
    failed = history[history["status"] == "failed"].drop_duplicates("key")
    rows = []
    for row in failed.itertuples(index=False):
        try:
            error = read_metrics(Path(trials_dir) / row.key).get("error")
        except (OSError, ValueError) as exc:
            error = f"metrics.json unreadable: {exc}"
        rows.append({"key": row.key, "sweep": row.sweep, "layer": row.layer, "arch": row.arch,
                     "cost": row.cost, "error": error})
    return pd.DataFrame(rows, columns=cols)


def write_report_figures(summary, history, tables, final, out, space_name, transfer=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = json.loads(Path(summary).read_text())
    lo, hi = s["target"]
    hist = pd.read_parquet(history)
    tab = pd.read_parquet(tables)

    curve = best_so_far(hist, lo, hi)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["trial"], curve["best"], drawstyle="steps-post")
    ax.set_xlabel("trials")
    ax.set_ylabel("best accuracy in target range")
    ax.set_title(f"{space_name}: best in [{lo:g}, {hi:g}]")
    fig.tight_layout()
    fig.savefig(out["progress"], dpi=110)
    plt.close(fig)

    ev = hist[hist["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label="target range")
    ax.scatter(ev["cost"], ev["accuracy"], s=10, alpha=0.6, label="trials")
    if len(ev):
        idx = pareto_front(ev["cost"].to_numpy(float), ev["accuracy"].to_numpy(float))
        pf = ev.iloc[idx]
        ax.plot(pf["cost"], pf["accuracy"], color="tab:red", drawstyle="steps-post", label="Pareto front")
    ax.set_xlabel(s["metric"])
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out["scatter"], dpi=110)
    plt.close(fig)

    hdir = Path(out["heatmaps"])
    hdir.mkdir(parents=True, exist_ok=True)
    layers = sorted(tab["layer"].unique()) if len(tab) else []
    for layer in layers:
        t = tab[tab["layer"] == layer]
        grid = np.full((int(t["rank"].max()) + 1, s["buckets"]), np.nan)
        for row in t.itertuples(index=False):
            grid[int(row.rank), int(row.bucket)] = row.accuracy
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * grid.shape[0]))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xlabel("cost bucket (Eq. 4)")
        ax.set_ylabel("rank")
        ax.set_title(f"layer {layer}: memorial table M_{layer}")
        fig.colorbar(im, ax=ax, label="accuracy")
        fig.tight_layout()
        fig.savefig(hdir / f"layer{layer}.png", dpi=100)
        plt.close(fig)

    rows = []
    for path in final:
        m = json.loads(Path(path).read_text())
        rows.append({"key": Path(path).parent.name} | {k: m.get(k) for k in ("arch", "status", "madds", "params", "test_accuracy",
                                            "val_accuracy", "epochs", "wall_seconds", "error")})
    top = pd.DataFrame(s.get("top", []))
    if rows:
        final_df = pd.DataFrame(rows)
    else:
        final_df = top.assign(note="final retraining not run (evaluator tabular or final.activate false)")
    final_df.to_csv(out["final"], index=False)
    if "transfer" in out:
        transfer_table(transfer).to_csv(out["transfer"], index=False)
    if "failed" in out:
        failed_table(hist, Path(history).parents[1] / "trials").to_csv(out["failed"], index=False)
