"""Figures and tables for the Snakemake report: best accuracy vs trials, accuracy vs cost with
the target band, the Pareto front and the best models, one bucket-table heatmap per layer, the
final models, transfer and failed-trials tables, and the front page (frontpage.py) that
``workflow/report/workflow.rst`` includes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.core.describe import UNITS, human_cost, human_number
from layernas.store.files import atomic_write_text
from layernas.store.layout import Layout
from layernas.store.records import read_metrics
from layernas.workflow.frontpage import front_page, options_of


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
    read from results/transfer/{key}/metrics.json. A per-size AP column with no value in any
    row (the val split has no object of that size: COCOeval's -1, recorded as null) is left out."""
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
    df = pd.DataFrame(rows, columns=["key", *TRANSFER_COLUMNS])
    if len(df):
        df = df.drop(columns=[c for c in ("ap_small", "ap_medium", "ap_large") if df[c].isna().all()])
    return df


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


def final_table(final_paths, summary: dict, space=None) -> pd.DataFrame:
    """One row per final model (results/final/{key}/metrics.json), with the search's view of
    it: ``cost`` in the searched metric as the search costed it and ``val_accuracy``, the proxy
    trial's accuracy (summary.json ``top``, i.e. search/top.parquet). Without final retraining
    (evaluator tabular, ``final.activate: false``) the top models themselves, with a note.
    The ``error`` column is there only when some retraining failed."""
    top = {r["final_key"]: r for r in summary.get("top") or [] if r.get("final_key")}
    rows = []
    for path in final_paths:
        m = json.loads(Path(path).read_text())
        key = Path(path).parent.name
        t = top.get(key, {})
        arch = m.get("arch", t.get("arch"))
        rows.append({"key": key, "arch": arch, "options": options_of(space, str(arch)), "cost": t.get("cost"),
                     "val_accuracy": t.get("accuracy"), "test_accuracy": m.get("test_accuracy"),
                     "status": m.get("status"), "madds": m.get("madds"), "params": m.get("params"),
                     "epochs": m.get("epochs"), "wall_seconds": m.get("wall_seconds"),
                     **latency_columns(Layout(Path(path).parents[2]).export_card(key)),
                     "export": export_files(Layout(Path(path).parents[2]).export_card(key)), "error": m.get("error")})
    if rows:
        df = pd.DataFrame(rows)
        # error only when a retraining failed; latency columns only where something was measured
        empty = [c for c in ("error", "latency_predicted_ms", "latency_measured_ms") if df[c].isna().all()]
        return df.drop(columns=empty)
    cols = ["key", "final_key", "arch", "options", "cost", "val_accuracy", "note"]
    rows = [{"key": r.get("key"), "final_key": r.get("final_key"), "arch": r["arch"],
             "options": options_of(space, str(r["arch"])), "cost": r.get("cost"), "val_accuracy": r.get("accuracy"),
             "note": "final retraining not run (evaluator tabular or final.activate false)"}
            for r in summary.get("top") or []]
    return pd.DataFrame(rows, columns=cols)


def latency_columns(card_path: Path) -> dict:
    """Predicted (a latency search's table) and measured latency of a final model, batch 1, as
    its export card records them (docs/latency.md); empty where it was not exported."""
    try:
        lat = json.loads(Path(card_path).read_text()).get("latency") or {}
    except (OSError, ValueError):
        lat = {}
    return {"latency_predicted_ms": lat.get("predicted_ms"), "latency_measured_ms": lat.get("measured_ms")}


def export_files(card_path: Path) -> str:
    """The exported files of a final model (rule export, docs/export.md), as paths a person
    opens: ``results/export/KEY/model.onnx results/export/KEY/model.pt results/export/KEY/model.json``;
    or why there are none."""
    try:
        card = json.loads(Path(card_path).read_text())
    except (OSError, ValueError):
        return "not exported"
    if card.get("status") != "ok":
        return f"not exported: {card.get('error')}"
    names = card.get("files") or {}
    return " ".join(str(Path(card_path).parent / names[k]) for k in ("torchscript", "onnx", "card") if k in names)


def stage_notes(config: dict | None) -> dict[str, str]:
    """What the front page says where the final or transfer stage did not run."""
    config = config or {}
    tabular = config.get("evaluator") == "tabular"
    if tabular:
        final = "not run (evaluator tabular: accuracies come from a table, there is no model to retrain)"
    elif not config.get("final", {}).get("activate", True):
        final = "not run (``final.activate: false``)"
    else:
        final = "not run"
    if tabular or not config.get("final", {}).get("activate", True):
        transfer = "not run (needs a retrained final model)"
    elif not config.get("transfer", {}).get("activate", False):
        transfer = "not run (``transfer.activate: false``)"
    else:
        transfer = "not run"
    search = ("accuracy from the oracle table" if tabular
              else "validation accuracy as a slice of the supernet" if config.get("evaluator") == "supernet"
              else "validation accuracy after proxy training")
    return {"final_note": final, "transfer_note": transfer, "search_accuracy": search}


def _human_axis(ax, metric: str) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_number(x)))
    ax.set_xlabel(UNITS.get(metric, metric))


def plot_accuracy_vs_cost(hist: pd.DataFrame, summary: dict, path, space_name: str, ylabel: str) -> None:
    """Every trained model, the target band, the Pareto front and the top models (stars)."""
    import matplotlib.pyplot as plt

    lo, hi = summary["target"]
    metric = summary.get("metric", "madds")
    ev = hist[hist["status"] == "ok"]
    ev = ev[pd.to_numeric(ev["accuracy"], errors="coerce").notna()]
    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    ax.axvspan(lo, hi, color="tab:green", alpha=0.18, label=f"target {human_number(lo)}-{human_cost(hi, metric)}")
    ax.scatter(ev["cost"], ev["accuracy"].astype(float), s=14, alpha=0.6, label="trained models")
    if len(ev):
        idx = pareto_front(ev["cost"].to_numpy(float), ev["accuracy"].to_numpy(float))
        pf = ev.iloc[idx]
        ax.plot(pf["cost"], pf["accuracy"], color="tab:red", drawstyle="steps-post", label="Pareto front")
    top = pd.DataFrame(summary.get("top") or [])
    if len(top):
        ax.scatter(top["cost"], top["accuracy"], marker="*", s=170, color="gold", edgecolor="black",
                   linewidth=0.8, zorder=5, label="best in target")
        b = top.iloc[0]
        ax.annotate(str(b["arch"]), (b["cost"], b["accuracy"]), textcoords="offset points", xytext=(8, -12),
                    fontsize=8, annotation_clip=True)
    costs = ev["cost"].to_numpy(float)
    left, right = min([lo, *costs]), max([hi, *costs])
    pad = 0.08 * ((right - left) or abs(right) or 1.0)
    ax.set_xlim(left - pad, right + pad)
    _human_axis(ax, metric)
    ax.set_ylabel(ylabel)
    found = f"best {top.iloc[0]['arch']}" if len(top) else "no model in the target range"
    ax.set_title(f"{space_name}: {found}", fontsize=10)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report_figures(summary, history, tables, final, out, space_name, transfer=(), config=None) -> None:
    """Everything rule report_plots writes (see workflow/rules/report.smk): the figures, the
    tables and, with ``out["front"]``, the front page (layernas/workflow/frontpage.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = json.loads(Path(summary).read_text())
    lo, hi = s["target"]
    metric = s.get("metric", "madds")
    hist = pd.read_parquet(history)
    tab = pd.read_parquet(tables)
    space = _space(config)
    notes = stage_notes(config)

    curve = best_so_far(hist, lo, hi)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["trial"], curve["best"], drawstyle="steps-post")
    ax.set_xlabel("trials")
    ax.set_ylabel("best accuracy in target range")
    ax.set_title(f"{space_name}: best in {human_number(lo)}-{human_cost(hi, metric)}")
    fig.tight_layout()
    fig.savefig(out["progress"], dpi=110)
    plt.close(fig)

    plot_accuracy_vs_cost(hist, s, out["scatter"], space_name,
                          "accuracy (oracle table)" if config and config.get("evaluator") == "tabular"
                          else "validation accuracy (supernet slice)" if config and config.get("evaluator") == "supernet"
                          else "validation accuracy (proxy training)")

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

    final_table(final, s, space).to_csv(out["final"], index=False)
    if "transfer" in out:
        transfer_table(transfer).to_csv(out["transfer"], index=False)
    if "failed" in out:
        failed_table(hist, Layout.of_results(Path(history).parents[1]).trials_dir).to_csv(out["failed"], index=False)
    if "front" in out:
        finals = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in final}
        transfers = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in transfer}
        results = str(Path(history).parents[1])
        text = front_page(s, space=space, cost_kwargs=_cost_kwargs(config), history=hist, finals=finals,
                          transfers=transfers, figure=out["scatter"], results=results, **notes)
        atomic_write_text(out["front"], text)


def _space(config: dict | None):
    if not config or not config.get("space"):
        return None
    from layernas.core.space import SpaceError, load_space

    try:
        return load_space(config["space"])
    except (SpaceError, OSError, ValueError):
        return None


def _cost_kwargs(config: dict | None) -> dict:
    if not config:
        return {}
    from layernas.workflow.config import cost_kwargs

    return cost_kwargs(config)
