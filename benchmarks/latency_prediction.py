"""How well a latency table predicts whole models, and how stable it is.

For each space: measure a table (every segment once, batch 1, fixed threads), time 30 random
archs end to end and compare with the table's sum (mean/max absolute percentage error; spread
of the repeated end-to-end measurements); then measure the table again and count how many of the
30 archs land in another Eq. 4 bucket (H = 20, last-layer bounds of each table).

Usage: python benchmarks/latency_prediction.py [--spaces mobilenet-tiny,mobilenetv3-small-60m]
       [--samples 30] [--threads 1] [--runtime torch] [--repeats 15] [--table-repeats 9]
       [--out benchmarks/results/latency_prediction.json]
Run it on a quiet machine: other load shows up as spread and error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from layernas.core.bounds import layer_bounds
from layernas.core.cost import Context, cost_of
from layernas.core.latency import cpu_device
from layernas.core.search import bucket_of
from layernas.core.space import load_space
from layernas.evaluate.latency import check_prediction, measure_table, write_table


def one_space(name: str, args, tmp: Path) -> dict:
    space = load_space(name)
    tables, seconds = [], []
    for i in range(2):
        t0 = time.perf_counter()
        df = measure_table(space, Context.of(space), args.runtime, args.threads, args.warmup, args.table_repeats,
                           stat=args.statistic)
        seconds.append(time.perf_counter() - t0)
        path = tmp / f"{name}-{i}.parquet"
        write_table(df, path)
        tables.append(str(path))
        print(f"{name}: table {i + 1}: {len(df) - 1} segments in {seconds[-1]:.0f} s", flush=True)
    check = check_prediction(space, Context.of(space, latency_table=tables[0]), args.samples, args.runtime,
                             args.threads, args.warmup, args.repeats, seed=args.seed, stat=args.statistic)
    archs = [tuple(int(x) for x in r["arch"].split("-")) for r in check["rows"]]
    buckets = []
    for t in tables:
        pred = cost_of(space, archs, latency_table=t)["latency"]
        lo, hi = layer_bounds(space, "latency", latency_table=t)
        buckets.append(bucket_of(pred, lo[-1], hi[-1], args.buckets))
    moved = float(np.mean(buckets[0] != buckets[1]))
    out = {"space": name, "segments": int(len(df) - 1), "table_seconds": seconds, "mape": check["mape"],
           "max_ape": check["max_ape"], "median_spread": check["median_spread"], "moved_buckets": moved,
           "buckets": args.buckets, "rows": check["rows"]}
    print(f"{name}: {args.samples} archs, mean abs error {100 * check['mape']:.1f}% (max {100 * check['max_ape']:.1f}%), "
          f"median spread {100 * check['median_spread']:.1f}%, re-measured table moves {100 * moved:.0f}% "
          f"to another bucket (H = {args.buckets})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", default="mobilenet-tiny,mobilenetv3-small-60m")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--table-repeats", type=int, default=9)
    ap.add_argument("--buckets", type=int, default=20)
    ap.add_argument("--statistic", default="min", choices=["min", "median"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/latency_prediction.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_space(name, args, Path(tmp)) for name in args.spaces.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpu": cpu_device(), "cpu_count": os.cpu_count(),
                               "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg(),
                               "settings": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
