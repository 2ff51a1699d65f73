"""A paper-sized tabular search through `snakemake --profile slurm`, uninterrupted and under chaos.

The search of `workflow_overhead.py` (mobilenetv3-small-60m, target 55-60M MAdds, H = 100,
K = 3, R = 3, synthetic separable oracle) with a budget of --trials (default 2,000), trial
batches as SLURM jobs (`resources.trial.local: false`, the default batch: a stage per job):

1. locally (`snakemake --cores 2`): the reference tables and time;
2. through `--profile slurm`, uninterrupted: wall time, overhead per trial against the
   in-process driver, SLURM jobs (sacct, by the run's name), tables equal to the local run;
3. through `--profile slurm` under chaos: the controller is SIGKILLed --kills times, each a
   seeded random 5-60 s after that attempt's first finished trial, and every trial job seen
   running is `scancel`ed with probability --cancel (0.2); each time the documented recipe
   resumes (`snakemake --unlock`, then the same command). The tables must equal the local
   run's, and no trial that had finished before a kill may be evaluated again (its
   `finished_at` unchanged).

Runs on the cluster that answers `sinfo`, or on the local single-node cluster that
scripts/slurm_cluster.sh starts (root, Debian). Writes benchmarks/results/slurm_scale.json.

Usage: python benchmarks/slurm_scale.py [--trials 2000] [--kills 3] [--cancel 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_overhead import RESULTS, ROOT, config_for, in_process, same_tables, slurm_cluster  # noqa: E402


def finished_at(results: Path) -> dict[str, float]:
    """Each finished trial's `finished_at`: a trial evaluated again gets a new one."""
    out = {}
    for p in (results / "trials").glob("*/metrics.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["finished_at"]
        except (OSError, ValueError, KeyError):
            pass  # being written
    return out


def slurm_jobs(run_ids: set[str]) -> list[dict]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "-o", "JobID,JobName,State,ElapsedRaw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.strip().splitlines() if line]
    return [
        {"id": r[0], "run": r[1], "state": r[2].split()[0], "elapsed": int(r[3] or 0)}
        for r in rows
        if r[1] in run_ids
    ]


def command(cfg_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        "--configfile",
        str(cfg_path),
    ]


def run_ids_of(log: Path) -> set[str]:
    return set(re.findall(r"SLURM run ID: (\S+)", log.read_text(errors="replace")))


class Canceller(threading.Thread):
    """Polls squeue and scancels each running job of this user seen for the first time with
    probability ``p`` (seeded), until stopped."""

    def __init__(self, p: float, rng: random.Random):
        super().__init__(daemon=True)
        self.p, self.rng, self.seen, self.cancelled = p, rng, set(), []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            q = subprocess.run(
                ["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True
            ).stdout.split()
            for job in q:
                if job not in self.seen:
                    self.seen.add(job)
                    if self.rng.random() < self.p:
                        subprocess.run(["scancel", job], capture_output=True)
                        self.cancelled.append(job)
            time.sleep(1.0)


def chaos(cfg: dict, tmp: Path, kills: int, cancel: float, seed: int, log) -> dict:
    rng = random.Random(seed)
    results = tmp / "chaos-results"
    path = tmp / "chaos.yaml"
    path.write_text(yaml.safe_dump({**cfg, "results": str(results)}))
    cmd = command(path)
    logfile = tmp / "chaos.log"
    canceller = Canceller(cancel, rng)
    canceller.start()
    seen: dict[str, float] = {}
    attempts, killed, t0 = [], 0, time.perf_counter()
    while len(attempts) < kills + 10:
        since = time.time()
        with open(logfile, "a") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        kill_at = None
        while proc.poll() is None:
            done = finished_at(results)
            if kill_at is None and killed < kills and any(t > since for t in done.values()):
                kill_at = time.time() + rng.uniform(5.0, 60.0)
            if kill_at is not None and time.time() >= kill_at:
                for k, t in finished_at(results).items():
                    if seen.setdefault(k, t) != t:
                        raise SystemExit(f"finished trial {k} was evaluated again")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed += 1
                break
            time.sleep(0.5)
        rc = proc.wait()
        attempts.append({"rc": rc, "seconds": round(time.time() - since, 1), "killed": kill_at is not None})
        log(
            f"chaos attempt {len(attempts)}: rc {rc}, {attempts[-1]['seconds']} s, "
            f"{len(finished_at(results))} trials finished, {len(canceller.cancelled)} jobs cancelled so far"
        )
        if rc == 0:  # done (if before every kill landed, `controller_kills` says so)
            break
        subprocess.run([*cmd, "--unlock"], cwd=ROOT, capture_output=True, check=True)
    canceller.stop.set()
    wall = time.perf_counter() - t0
    after = finished_at(results)
    rerun = sorted(k for k, t in seen.items() if after.get(k) != t)
    time.sleep(3)  # slurmdbd records end times a moment later
    jobs = slurm_jobs(run_ids_of(logfile))
    return {
        "seconds": round(wall, 1),
        "attempts": attempts,
        "controller_kills": killed,
        "jobs_seen_running": len(canceller.seen),
        "jobs_cancelled": len(canceller.cancelled),
        "slurm_jobs": len(jobs),
        "slurm_job_states": {
            s: sum(j["state"] == s for j in jobs) for s in sorted({j["state"] for j in jobs})
        },
        "finished_before_a_kill": len(seen),
        "finished_trials_evaluated_again": rerun,
        "trials": len(after),
        "results": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--cancel", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "slurm_scale.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()

    def log(s: str) -> None:
        print(f"{time.perf_counter() - t_start:7.0f}s {s}", flush=True)

    base = config_for("mobilenetv3-small-60m", args.trials, "default")
    base["resources"] = {"trial": {"local": False, "runtime": 10, "mem_mb": 500}}
    t_in, engine = in_process(base)
    with tempfile.TemporaryDirectory(prefix="slurm-scale-") as tmp_name, slurm_cluster():
        tmp = Path(tmp_name)
        local_cfg = tmp / "local.yaml"
        local_cfg.write_text(yaml.safe_dump({**base, "results": str(tmp / "local-results")}))
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(ROOT / "Snakefile"),
                "-d",
                str(tmp),
                "--configfile",
                str(local_cfg),
                "--cores",
                "2",
                "-q",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        t_local = time.perf_counter() - t0
        log(f"local: {t_local:.0f} s")

        path = tmp / "slurm.yaml"
        path.write_text(yaml.safe_dump({**base, "results": str(tmp / "slurm-results")}))
        t0 = time.perf_counter()
        with open(tmp / "slurm.log", "w") as out:
            rc = subprocess.run(command(path), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
        t_slurm = time.perf_counter() - t0
        if rc not in (0, 3):
            raise SystemExit(f"slurm run failed ({rc}): {(tmp / 'slurm.log').read_text()[-3000:]}")
        time.sleep(3)
        jobs = slurm_jobs(run_ids_of(tmp / "slurm.log"))
        summary = json.loads((tmp / "slurm-results" / "search" / "summary.json").read_text())
        n = summary["trials"]
        uninterrupted = {
            "seconds": round(t_slurm, 1),
            "trials": n,
            "stages": summary["stages"],
            "slurm_jobs": len(jobs),
            "trials_per_slurm_job": round(n / max(len(jobs), 1), 1),
            "overhead_per_trial_s": round((t_slurm - t_in) / max(n, 1), 3),
            "slurm_job_elapsed_mean_s": round(sum(j["elapsed"] for j in jobs) / max(len(jobs), 1), 2),
            "tables_equal_local": same_tables(tmp / "local-results", tmp / "slurm-results"),
            "same_best_as_driver": (summary["best"] or {}).get("arch") == (engine.best() or {}).get("arch"),
        }
        log(f"slurm uninterrupted: {uninterrupted}")
        ch = chaos(base, tmp, args.kills, args.cancel, args.seed, log)
        ch["tables_equal_local"] = same_tables(tmp / "local-results", ch.pop("results"))
        log(f"slurm chaos: {ch}")
    res = {
        "date": date.today().isoformat(),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_end": os.getloadavg(),
        "space": base["space"],
        "search": base["search"],
        "target": base["target"],
        "trials": args.trials,
        "seconds_inprocess": round(t_in, 2),
        "seconds_local": round(t_local, 1),
        "uninterrupted": uninterrupted,
        "chaos": ch,
        "goals": {
            "slurm_jobs_at_most_trials_over_8": uninterrupted["slurm_jobs"] <= n / 8,
            "overhead_per_trial_at_most_0.5s": uninterrupted["overhead_per_trial_s"] <= 0.5,
            "tables_equal_local": uninterrupted["tables_equal_local"],
            "chaos_tables_equal": ch["tables_equal_local"],
            "chaos_no_finished_trial_rerun": not ch["finished_trials_evaluated_again"],
        },
    }
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["goals"], indent=2))


if __name__ == "__main__":
    main()
