"""Overhead of the Snakemake driver against the in-process driver, same search, same run.

A tabular search (synthetic separable oracle on mobilenet-tiny, budget N trials) runs
(1) in-process (`layernas.core.driver.run_search`) and (2) through the workflow (`snakemake
--cores C`, one job per trial), then (3) the finished workflow is re-run (nothing to do). With --slurm, (4) the same search
through `snakemake --profile slurm` with every trial a SLURM job, with sacct's elapsed time
per trial job: on the cluster that answers `sinfo`, or else on the local single-node cluster
that scripts/slurm_cluster.sh starts for the run and stops afterwards (root, Debian).
Prints seconds per trial of overhead and writes benchmarks/results/workflow_overhead.json.

Usage: python benchmarks/workflow_overhead.py [--trials 1000] [--cores 2] [--slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# H = 50: the search then spends a 1,000-trial budget (with H = 20 it runs out of candidates at 636).
BUCKETS = 50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--slurm", action="store_true",
                    help="also run through --profile slurm (no cluster answering: starts and stops "
                         "the local one with scripts/slurm_cluster.sh)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workflow_overhead.json"))
    args = ap.parse_args()
    cfg = {
        "space": "mobilenet-tiny", "evaluator": "tabular", "oracle": "layernas.examples.toy:separable",
        "target": {"min": 3.0e6, "max": 3.3e6},
        "search": {"buckets": BUCKETS, "replicas": 2, "per_sweep": 3, "budget": args.trials},
        "final": {"activate": False}, "report": {"activate": False},
    }
    from layernas.core.driver import run_search
    from layernas.core.search import SearchConfig
    from layernas.core.space import load_space
    from layernas.examples.toy import separable

    t0 = time.perf_counter()
    engine = run_search(
        load_space(cfg["space"]), lambda b: [separable(a) for a in b],
        SearchConfig(target_min=cfg["target"]["min"], target_max=cfg["target"]["max"], **cfg["search"]),
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
        slurm = run_slurm(cfg, Path(tmp)) if args.slurm else {}
    n = summary["trials"]
    res = {
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "cores": args.cores,
        "trials_workflow": n, "trials_inprocess": engine.trials, "stages": summary["stages"],
        "seconds_inprocess": round(t_inproc, 2), "seconds_workflow": round(t_wf, 2),
        "overhead_per_trial_s": round((t_wf - t_inproc) / max(n, 1), 3),
        "ratio_workflow_over_inprocess": round(t_wf / max(t_inproc, 1e-9), 1),
        "seconds_resume_nothing_to_do": round(t_resume, 2),
        "same_best": (summary["best"] or {}).get("arch") == (engine.best() or {}).get("arch"),
        **slurm,
    }
    for k, v in res.items():
        print(f"{k:>32}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


SLURM_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"


@contextlib.contextmanager
def slurm_cluster():
    """A SLURM cluster for the run: one whose controller already answers is used as it is;
    otherwise scripts/slurm_cluster.sh starts the local single-node cluster and stops it after."""
    try:
        answering = bool(shutil.which("sinfo")) and subprocess.run(["sinfo", "-h"], capture_output=True,
                                                                      timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        answering = False
    if answering:
        yield
        return
    up = subprocess.run(["bash", str(SLURM_SCRIPT), "up"], capture_output=True, text=True)
    if up.returncode:
        subprocess.run(["bash", str(SLURM_SCRIPT), "down"], capture_output=True)
        raise SystemExit(f"{SLURM_SCRIPT} up failed:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(SLURM_SCRIPT), "down"], capture_output=True)


def run_slurm(cfg: dict, tmp: Path) -> dict:
    """The same search with `snakemake --profile slurm` at the project root, trials as jobs."""
    with slurm_cluster():
        return _run_slurm(cfg, tmp)


def _run_slurm(cfg: dict, tmp: Path) -> dict:
    import re

    cfg = {**cfg, "results": str(tmp / "slurm-results"),
           "resources": {"trial": {"local": False, "runtime": 5, "mem_mb": 500}}}
    path = tmp / "slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--configfile", str(path),
           "--slurm-init-seconds-before-status-checks", "2"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"slurm run failed:\n{proc.stderr[-3000:]}")
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stderr + proc.stdout).group(1)
    time.sleep(3)  # slurmdbd records end times a moment later
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "--name", run_id, "-o", "ElapsedRaw"],
                         capture_output=True, text=True, check=True).stdout.split()
    elapsed = [int(x) for x in out]
    n = json.loads((tmp / "slurm-results" / "search" / "summary.json").read_text())["trials"]
    return {"slurm_jobs": len(elapsed), "slurm_trials": n, "seconds_slurm": round(wall, 2),
            "slurm_seconds_per_trial": round(wall / max(n, 1), 2),
            "slurm_job_elapsed_mean_s": round(sum(elapsed) / max(len(elapsed), 1), 2)}


if __name__ == "__main__":
    main()
