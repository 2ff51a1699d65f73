"""Where a search stands, read from the files alone (so it works while Snakemake runs, after a
crash, and on a cluster login node): what `layernas status` prints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from layernas.core.status import Action, Status
from layernas.store.audit import disk_usage
from layernas.store.audit.scan import no_search, stage_tables
from layernas.store.layout import METRICS, Layout

LISTED = 20  # pending keys, failed trials and near-target rows listed at most


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _trials(layout: Layout) -> tuple[set[str], dict]:
    """Keys of finished trials, and their counts, trial seconds and errors."""
    ok = failed = 0
    seconds = 0.0
    errors = []
    finished = set()
    root = layout.area("trials")
    for mpath in root.glob(f"*/{METRICS}") if root.exists() else []:
        try:
            m = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        finished.add(mpath.parent.name)
        seconds += float(m.get("wall_seconds") or 0)
        if m.get("status") == Status.OK:
            ok += 1
        else:
            failed += 1
            errors.append({"key": mpath.parent.name, "arch": m.get("arch"), "error": m.get("error")})
    return finished, {"ok": ok, "failed": failed, "seconds": seconds, "errors": errors}


def _best(history: pd.DataFrame, target: list[float]) -> tuple[dict | None, list[dict]]:
    """The best evaluated model inside the target range, and the best per (layer, bucket) near it."""
    lo, hi = target
    ev = history[history["status"] == Status.OK]
    inside = ev[(ev["cost"] >= lo) & (ev["cost"] <= hi)]
    best = None
    if len(inside):
        b = inside.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
        best = {"arch": b["arch"], "cost": float(b["cost"]), "accuracy": float(b["accuracy"]), "key": b["key"]}
    width = (hi - lo) or max(abs(hi), 1.0) * 0.05
    band = ev[(ev["cost"] >= lo - width) & (ev["cost"] <= hi + width)]
    near: list[dict] = []
    if len(band):
        top = band.sort_values("accuracy", ascending=False).groupby(["layer", "bucket"]).head(1)
        near = top.sort_values(["layer", "bucket"]).head(LISTED)[["layer", "bucket", "arch", "cost", "accuracy"]].to_dict("records")
    return best, near


def collect_status(results: str | Path) -> dict:
    """The state of the search in ``results`` (the ``layernas status --json`` contract)."""
    layout = Layout(results)
    if not layout.search_dir.exists():
        raise no_search(layout, "; run snakemake or layernas search --out first")
    meta = _read_json(layout.search_meta) or {}
    files = stage_tables(layout)
    generated = [(r, l) for r, l, kind, _ in files if kind == "children"]
    aggregated = [(r, l) for r, l, kind, _ in files if kind == "buckets"]
    requested: set[str] = set()
    for r, l in generated:
        kids = pd.read_parquet(layout.children(r, l))
        if "action" in kids:
            requested |= set(kids.loc[kids["action"] == Action.EVALUATE, "key"])
    finished, trials = _trials(layout)
    pending = sorted(requested - finished)
    last_hist = layout.history(*aggregated[-1]) if aggregated else None
    if layout.full_history.exists():
        last_hist = layout.full_history
    best, near = None, []
    if last_hist is not None and last_hist.exists() and meta.get("target"):
        best, near = _best(pd.read_parquet(last_hist), meta["target"])
    summary = _read_json(layout.summary)
    du = disk_usage(layout.root)
    return {
        "results": str(layout.root),
        "space": meta.get("space_name"),
        "target": meta.get("target"),
        "done": summary is not None,
        "stages_generated": len(generated),
        "stages_aggregated": len(aggregated),
        "last_stage": {"sweep": generated[-1][0], "layer": generated[-1][1]} if generated else None,
        "trials": {"ok": trials["ok"], "failed": trials["failed"], "pending": len(pending)},
        "pending_keys": pending[:LISTED],
        "failed_trials": trials["errors"][:LISTED],
        "best_in_target": best,
        "near_target": near,
        "trial_seconds": round(trials["seconds"], 1),
        "disk_bytes": du["total"],
        "disk_bytes_weights": du["trials_weights"],
        "disk": du,
    }
