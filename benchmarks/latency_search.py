"""A default-sized search under a measured latency target, end to end.

Measures the latency table of the default run's space (mobilenet-tiny, 1 thread), sets the
target to the middle fifth of its latency range, runs the default workflow (config.yaml: 30
proxy trials, 2 final models retrained and exported) with `target.metric: latency`, and checks
the found models' measured latency (rule export, batch 1) against the target.

Usage: python benchmarks/latency_search.py [--workdir /tmp/latency-search] [--cores 2]
       [--out benchmarks/results/latency_search.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/latency-search")
    ap.add_argument("--cores", default="2")
    ap.add_argument("--low", type=float, default=0.4, help="target min as a fraction of the latency range")
    ap.add_argument("--high", type=float, default=0.6)
    ap.add_argument("--out", default="benchmarks/results/latency_search.json")
    args = ap.parse_args()
    from layernas.core.bounds import cost_range
    from layernas.core.space import load_space
    from layernas.evaluate.sources import check_source

    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    table = wd / "table.parquet"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "layernas.cli.main", "latency", "table", "--space", "mobilenet-tiny",
                    "--out", str(table)], check=True)
    table_s = time.time() - t0
    lo, hi = cost_range(load_space("mobilenet-tiny"), "latency", latency_table=table)
    target = {"metric": "latency", "min": lo + args.low * (hi - lo), "max": lo + args.high * (hi - lo)}
    configs = ["config.yaml"]
    try:
        check_source("fashion-mnist", None)
    except ValueError:
        configs.append("config/digits.yaml")
    overlay = wd / "latency.yaml"
    overlay.write_text(yaml.safe_dump({"target": target, "latency": {"table": str(table)},
                                       "results": str(wd / "results"), "transfer": {"activate": False}}))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", args.cores, "--configfile",
                           *[str(ROOT / c) for c in configs], str(overlay)], cwd=ROOT)
    run_s = time.time() - t0
    res = wd / "results"
    cards = [json.loads(p.read_text()) for p in sorted(res.glob("export/*/model.json"))]
    models = [{"arch": c.get("arch"), "key": c.get("key"), **(c.get("latency") or {}),
               "in_target": target["min"] <= (c.get("latency") or {}).get("measured_ms", -1) <= target["max"]}
              for c in cards]
    summary = json.loads((res / "search" / "summary.json").read_text()) if (res / "search" / "summary.json").exists() else {}
    out = {"date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg(), "returncode": proc.returncode,
           "table_seconds": table_s, "run_seconds": run_s, "range_ms": [lo, hi], "target": target,
           "best": summary.get("best"), "trials": summary.get("trials"), "final_models": models}
    Path(args.out).write_text(json.dumps(out, indent=2))
    for m in models:
        print(f"{m['arch']}: predicted {m.get('predicted_ms', float('nan')):.3f} ms, measured "
              f"{m.get('measured_ms', float('nan')):.3f} ms, target [{target['min']:.3f}, {target['max']:.3f}]: "
              f"{'in' if m['in_target'] else 'OUT'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
