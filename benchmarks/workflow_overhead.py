"""Overhead of the Snakemake driver against the in-process driver, same search, same run.

A tabular search (synthetic separable oracle on mobilenet-tiny, budget N trials) runs
(1) in-process (`layernas.search.run_search`) and (2) through the workflow (`snakemake
--cores C`, one job per trial), then (3) the finished workflow is re-run (nothing to do).
Prints seconds per trial of overhead and writes benchmarks/results/workflow_overhead.json.

Usage: python benchmarks/workflow_overhead.py [--trials 1000] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workflow_overhead.json"))
    args = ap.parse_args()
    cfg = {
        "space": "mobilenet-tiny", "evaluator": "tabular", "oracle": "layernas.examples.toy:separable",
        "target": {"min": 3.0e6, "max": 3.3e6},
        "search": {"buckets": 20, "replicas": 2, "per_sweep": 3, "budget": args.trials},
        "final": {"activate": False}, "report": {"activate": False},
    }
    from layernas.examples.toy import separable
    from layernas.search import SearchConfig, run_search
    from layernas.space import load_space

    t0 = time.perf_counter()
    engine = run_search(
        load_space(cfg["space"]), lambda b: [separable(a) for a in b],
        SearchConfig(target_min=3.0e6, target_max=3.3e6, buckets=20, replicas=2, per_sweep=3, budget=args.trials),
    )
    t_inproc = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", tmp,
               "--configfile", str(cfg_path), "--cores", str(args.cores), "-q"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_wf = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_resume = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "results" / "search" / "summary.json").read_text())
    n = summary["trials"]
    res = {
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "cores": args.cores,
        "trials_workflow": n, "trials_inprocess": engine.trials, "stages": summary["stages"],
        "seconds_inprocess": round(t_inproc, 2), "seconds_workflow": round(t_wf, 2),
        "overhead_per_trial_s": round((t_wf - t_inproc) / max(n, 1), 3),
        "ratio_workflow_over_inprocess": round(t_wf / max(t_inproc, 1e-9), 1),
        "seconds_resume_nothing_to_do": round(t_resume, 2),
        "same_best": summary["best"]["arch"] == engine.best()["arch"],
    }
    for k, v in res.items():
        print(f"{k:>32}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
