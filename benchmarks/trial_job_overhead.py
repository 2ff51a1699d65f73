"""What a trial job of the train evaluator spends outside training, from a finished run's files.

Runs the default search (config.yaml: 30 proxy trials of ~20 s on Fashion-MNIST, final models,
transfer and report off) through `snakemake --cores 2`, or reads a finished results directory
(--results), and splits each trial job's time (Snakemake's benchmark TSV: the job from its start
to its end) into:

- Python start-up: from the job's process start (/proc) to the batch's start: the interpreter,
  Snakemake's script preamble and the package's imports;
- the runner: the space, the recipe hash and, for training, importing torch;
- trials: the trials' own ``wall_seconds`` (data loading, model, training, evaluation), and what
  the job does between them (locks, records, the manifest);
- outside the process: Snakemake around it (the script file, spawning, the benchmark);

and measures Snakemake's scheduling latency at each stage start: from the children table
written (the stage's checkpoint) to the first trial job's process start.
Writes benchmarks/results/trial_job_overhead.json.

Usage: python benchmarks/trial_job_overhead.py [--results DIR] [--batch 1] [--cores 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(workdir: Path, batch: str, cores: int) -> Path:
    cfg = {"final": {"activate": False}, "transfer": {"activate": False}, "report": {"activate": False}}
    if batch != "default":
        cfg["resources"] = {"trial": {"batch": batch if batch == "all" else int(batch)}}
    path = workdir / "overrides.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(ROOT / "config.yaml"), str(path), "--cores", str(cores)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"search: {time.perf_counter() - t0:.0f} s")
    return workdir / "results"


def split(results: Path) -> dict:
    jobs = []
    latency: dict[str, float] = {}
    for manifest in sorted((results / "search").glob("r*/l*/batch*.json")):
        m = json.loads(manifest.read_text())
        stage = manifest.parent
        name = f"{stage.parent.name}_{stage.name}_c{manifest.stem[5:]}"
        tsv = results / "benchmarks" / "batch" / f"{name}.tsv"
        ran = sum(bool(t.get("ran")) for t in m["trials"])
        if not tsv.exists() or not ran:
            continue
        job = float(next(csv.DictReader(tsv.open(), delimiter="\t"))["s"])
        trials = sum(t.get("wall_seconds") or 0.0 for t in m["trials"] if t.get("ran"))
        parts = {
            "python_start_seconds": m["started_at"] - m["process_started_at"],  # interpreter, preamble, imports
            "runner_seconds": m["trials_started_at"] - m["started_at"],  # space, recipe hash, torch
            "between_trials_seconds": m["finished_at"] - m["trials_started_at"] - trials,
            "outside_process_seconds": job - (m["finished_at"] - m["process_started_at"]),  # Snakemake around it
        }
        jobs.append({"job": name, "trials": ran, "job_seconds": round(job, 3), "trial_seconds": round(trials, 3),
                     **{k: round(v, 3) for k, v in parts.items()},
                     "overhead_share": round((job - trials) / job, 4)})
        ready = (stage / "children.parquet").stat().st_mtime  # the stage's checkpoint wrote it
        latency[str(stage)] = min(latency.get(str(stage), 1e30), m["process_started_at"] - ready)
    per_trial = [j["trial_seconds"] / j["trials"] for j in jobs]
    over = [(j["job_seconds"] - j["trial_seconds"]) / j["trials"] for j in jobs]
    med = statistics.median
    return {
        "jobs": len(jobs), "trials": sum(j["trials"] for j in jobs),
        "trial_seconds_median": round(med(per_trial), 2),
        "job_overhead_seconds_per_trial_median": round(med(over), 2),
        **{f"{k}_median": round(med(j[k] for j in jobs), 2) for k in
           ("python_start_seconds", "runner_seconds", "between_trials_seconds", "outside_process_seconds")},
        "overhead_share_of_job_time": round(sum(j["job_seconds"] - j["trial_seconds"] for j in jobs)
                                            / sum(j["job_seconds"] for j in jobs), 4),
        "overhead_share_of_a_20s_trial": round(med(over) / 20.0, 4),
        "stage_start_latency_seconds_median": round(med(latency.values()), 2),
        "stage_start_latency_seconds_max": round(max(latency.values()), 2),
        "per_job": jobs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", help="a finished results directory (else the default search is run)")
    ap.add_argument("--batch", default="default", help="resources.trial.batch for the run (default: 1 for train)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trial_job_overhead.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="trial-overhead-") as tmp:
        results = Path(args.results) if args.results else run(Path(tmp), args.batch, args.cores)
        res = {"date": date.today().isoformat(), "batch": args.batch, **split(results)}
    for k, v in res.items():
        if k != "per_job":
            print(f"{k:>40}: {v}")
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
