"""`layernas status [RESULTS_DIR]`: where a search stands, read from the files alone (so it
works while Snakemake runs, after a crash, and on a cluster login node)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


def collect_status(results: str | Path) -> dict:
    results = Path(results)
    search = results / "search"
    if not search.exists():
        raise ValueError(f"{results} holds no search (no {search}); run snakemake or layernas search --out first")
    meta = json.loads((search / "search.json").read_text()) if (search / "search.json").exists() else {}
    stages = []
    for p in search.glob("r*/l*"):
        m = re.fullmatch(r"r(\d+)", p.parent.name), re.fullmatch(r"l(\d+)", p.name)
        if m[0] and m[1]:
            stages.append((int(m[0].group(1)), int(m[1].group(1)), p))
    stages.sort()
    generated = [(r, l) for r, l, p in stages if (p / "children.parquet").exists()]
    aggregated = [(r, l) for r, l, p in stages if (p / "buckets.parquet").exists()]
    requested: set[str] = set()
    for _r, _l, p in stages:
        if (p / "children.parquet").exists():
            kids = pd.read_parquet(p / "children.parquet", columns=None)
            if "action" in kids:
                requested |= set(kids.loc[kids["action"] == "evaluate", "key"])
    ok = failed = 0
    seconds = 0.0
    errors = []
    trials_dir = results / "trials"
    finished = set()
    for mpath in trials_dir.glob("*/metrics.json") if trials_dir.exists() else []:
        try:
            m = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        finished.add(mpath.parent.name)
        seconds += float(m.get("wall_seconds") or 0)
        if m.get("status") == "ok":
            ok += 1
        else:
            failed += 1
            errors.append({"key": mpath.parent.name, "arch": m.get("arch"), "error": m.get("error")})
    pending = sorted(requested - finished)
    best = None
    near = []
    last_hist = None
    if aggregated:
        r, l = aggregated[-1]
        last_hist = search / f"r{r}" / f"l{l}" / "history.parquet"
    if (search / "history.parquet").exists():
        last_hist = search / "history.parquet"
    if last_hist is not None and last_hist.exists() and meta.get("target"):
        h = pd.read_parquet(last_hist)
        lo, hi = meta["target"]
        ev = h[h["status"] == "ok"]
        inside = ev[(ev["cost"] >= lo) & (ev["cost"] <= hi)]
        if len(inside):
            b = inside.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
            best = {"arch": b["arch"], "cost": float(b["cost"]), "accuracy": float(b["accuracy"]), "key": b["key"]}
        # best per bucket of the last layer near the target range
        width = (hi - lo) or max(abs(hi), 1.0) * 0.05
        band = ev[(ev["cost"] >= lo - width) & (ev["cost"] <= hi + width)]
        if len(band):
            top = band.sort_values("accuracy", ascending=False).groupby(["layer", "bucket"]).head(1)
            near = top.sort_values(["layer", "bucket"]).head(20)[["layer", "bucket", "arch", "cost", "accuracy"]].to_dict("records")
    summary = json.loads((search / "summary.json").read_text()) if (search / "summary.json").exists() else None
    from layernas.store.audit import disk_usage

    du = disk_usage(results)
    return {
        "results": str(results),
        "space": meta.get("space_name"),
        "target": meta.get("target"),
        "done": summary is not None,
        "stages_generated": len(generated),
        "stages_aggregated": len(aggregated),
        "last_stage": {"sweep": generated[-1][0], "layer": generated[-1][1]} if generated else None,
        "trials": {"ok": ok, "failed": failed, "pending": len(pending)},
        "pending_keys": pending[:20],
        "failed_trials": errors[:20],
        "best_in_target": best,
        "near_target": near,
        "trial_seconds": round(seconds, 1),
        "disk_bytes": du["total"],
        "disk_bytes_weights": du["trials_weights"],
        "disk": du,
    }


def cmd_status(args) -> int:
    st = collect_status(args.results)
    if args.json:
        print(json.dumps(st, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
        return 0
    t = st["trials"]
    print(f"search in {st['results']}: space {st['space']}, target {st['target']}, "
          f"{'done' if st['done'] else 'running or interrupted'}")
    if st["last_stage"]:
        print(f"  stages: {st['stages_generated']} generated, {st['stages_aggregated']} aggregated; "
              f"last sweep {st['last_stage']['sweep']} layer {st['last_stage']['layer']}")
    print(f"  trials: {t['ok']} ok, {t['failed']} failed, {t['pending']} pending; "
          f"{st['trial_seconds']:.0f} s of trial time")
    b = st["best_in_target"]
    print(f"  best in target: {b['arch']} cost {b['cost']:g} accuracy {b['accuracy']:.4f}" if b else
          "  best in target: none yet")
    for row in st["near_target"][:8]:
        print(f"    layer {row['layer']} bucket {row['bucket']}: {row['arch']} cost {row['cost']:g} acc {row['accuracy']:.4f}")
    for e in st["failed_trials"][:5]:
        print(f"  failed {e['key']} ({e['arch']}): {e['error']}")
    width = shutil.get_terminal_size((100, 20)).columns
    print(f"  disk: {st['disk_bytes'] / 1e6:.1f} MB (weights {st['disk_bytes_weights'] / 1e6:.1f} MB)"[:width])
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="progress of a search: stages, trials ok/failed/pending, best so far")
    p.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
