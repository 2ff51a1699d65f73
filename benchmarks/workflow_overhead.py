"""Cost of the Snakemake workflow per trial, against the in-process driver, as the search grows.

For each size N in --trials, the same tabular search (synthetic separable oracle, budget N
trials) runs (1) in-process (`layernas.core.driver.run_search`), (2) through the workflow
(`snakemake --cores C`) once per trial-batch setting in --batch (`default`: the config's default,
every trial of a stage in one job for table lookups; `1`: one job per trial, inside the
controller as lookups are; `1p`: one job per trial, each a Python process, as before batches),
then (3) the finished
workflow again (nothing to do). Each Snakemake run is timed, and the controller's peak resident
memory is polled (psutil, every 0.2 s; the snakemake process alone, and with its jobs).
One table, one JSON (benchmarks/results/workflow_overhead.json) and a plot of seconds per
trial and nothing-to-do time against trials (benchmarks/results/workflow_overhead.png).

With --slurm, the same search at the first size through `snakemake --profile slurm` (trials
as SLURM jobs, in batches), with sacct's count and elapsed time of its jobs: on the cluster that
answers `sinfo`, or else on the local single-node cluster that scripts/slurm_cluster.sh starts
for the run and stops afterwards (root, Debian); benchmarks/results/workflow_overhead_slurm.json.

Usage: python benchmarks/workflow_overhead.py [--space mobilenetv3-small-60m]
           [--trials 1000,3000,10000] [--batch default,1,1p] [--process-max 3000] [--cores 2] [--slurm]
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
import threading
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Search settings per space: mobilenet-tiny as measured before (H = 50 spends a 1,000-trial
# budget; it runs out of candidates at 1,052), and the paper's 60M space with the issue's
# H = 100, K = 3, R = 3 (~22 trials per stage), which reaches 10,000 trials.
SEARCHES = {
    "mobilenet-tiny": {"target": {"min": 3.0e6, "max": 3.3e6},
                       "search": {"buckets": 50, "replicas": 2, "per_sweep": 3}},
    "mobilenetv3-small-60m": {"target": {"min": 55e6, "max": 60e6},
                              "search": {"buckets": 100, "replicas": 3, "per_sweep": 3}},
}


def config_for(space: str, trials: int, batch: str) -> dict:
    s = SEARCHES[space]
    cfg = {"space": space, "evaluator": "tabular", "oracle": "layernas.examples.toy:separable",
           "target": dict(s["target"]), "search": {**s["search"], "budget": trials},
           "final": {"activate": False}, "report": {"activate": False}}
    if batch != "default":
        trial = {"batch": batch if batch == "all" else int(batch.rstrip("p"))}
        if batch.endswith("p"):  # a Python process per job, as a non-local trial rule runs
            trial["local"] = False
        cfg["resources"] = {"trial": trial}
    return cfg


def in_process(cfg: dict) -> tuple[float, object]:
    from layernas.core.driver import run_search
    from layernas.core.search import SearchConfig
    from layernas.core.space import load_space
    from layernas.examples.toy import separable

    t0 = time.perf_counter()
    engine = run_search(load_space(cfg["space"]), lambda b: [separable(a) for a in b],
                        SearchConfig(target_min=cfg["target"]["min"], target_max=cfg["target"]["max"], **cfg["search"]))
    return time.perf_counter() - t0, engine


def timed(cmd: list[str], cwd: Path | None = None, log: Path | None = None, ok=(0, 3), stderr: bool = True) -> dict:
    """Run ``cmd``; its wall time and the peak RSS of the process alone and with its children.
    Exit statuses in ``ok`` are fine (snakemake: 3 is a finished search with no model in the
    target range; audit: 1 reports problems)."""
    import psutil

    out = open(log, "w") if log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT if log and stderr else subprocess.DEVNULL)
    peak = {"rss": 0, "tree": 0}

    def poll() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    rss = p.memory_info().rss
                    tree = rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                except psutil.Error:
                    rss = tree = 0
                peak["rss"], peak["tree"] = max(peak["rss"], rss), max(peak["tree"], tree)
                time.sleep(0.2)
        except psutil.Error:
            pass

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    watcher.join()
    if log:
        out.close()
    if rc not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); log: {log}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(peak["rss"] / 2**20), "peak_tree_mb": round(peak["tree"] / 2**20)}


def run_one(cfg: dict, cores: int, tmp: Path, name: str) -> dict:
    wd = tmp / name
    wd.mkdir(parents=True)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(path),
           "--cores", str(cores), "-q"]
    full = timed(cmd, log=wd / "full.log")
    again = timed(cmd, log=wd / "again.log")
    summary = json.loads((wd / "results" / "search" / "summary.json").read_text())
    batches = len(list((wd / "results" / "search").glob("r*/l*/batch*.json")))
    audit = timed([sys.executable, "-m", "layernas.cli.main", "audit", str(wd / "results"), "--json"],
                  log=wd / "audit.json", ok=(0, 1), stderr=False)
    report = json.loads((wd / "audit.json").read_text())
    shutil.rmtree(wd / "results" / "trials", ignore_errors=True)  # keep /tmp small between sizes
    return {"full": full, "again": again, "summary": summary, "jobs_trial": batches, "results": wd / "results",
            "audit": {"seconds": audit["seconds"], "seconds_inside": report["seconds"], "errors": report["errors"],
                      "checked_trials": report["checked"]["trials"]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="mobilenetv3-small-60m", choices=sorted(SEARCHES))
    ap.add_argument("--trials", default="1000,3000,10000", help="comma-separated trial budgets")
    ap.add_argument("--batch", default="default,1,1p",
                    help="comma-separated resources.trial.batch settings: default, all, or an integer; with a "
                         "'p' (1p) each job is a Python process (local: false), as before batches")
    ap.add_argument("--process-max", type=int, default=3000,
                    help="skip the 'p' settings above this many trials (a process per trial: ~1 h at 10,000)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--slurm", action="store_true",
                    help="also run the first size through --profile slurm (no cluster answering: starts and stops "
                         "the local one with scripts/slurm_cluster.sh)")
    ap.add_argument("--out", default=str(RESULTS / "workflow_overhead.json"))
    args = ap.parse_args()
    sizes = [int(x) for x in args.trials.split(",")]
    modes = args.batch.split(",")
    probe = quiet_slurm_probe() if not args.slurm else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="wf-overhead-") as tmp:
        for n in sizes:
            t_in, engine = in_process(config_for(args.space, n, "default"))
            for mode in modes:
                if mode.endswith("p") and n > args.process_max:
                    continue
                cfg = config_for(args.space, n, mode)
                print(f"{args.space}, {n} trials, batch {mode} ...", flush=True)
                r = run_one(cfg, args.cores, Path(tmp), f"{n}-{mode}")
                s, trials = r["summary"], r["summary"]["trials"]
                row = {
                    "trials_budget": n, "batch": mode, "trials": trials, "stages": s["stages"],
                    "trial_jobs": r["jobs_trial"], "seconds_inprocess": round(t_in, 2),
                    "seconds_workflow": r["full"]["seconds"],
                    "seconds_per_trial": round(r["full"]["seconds"] / max(trials, 1), 4),
                    "overhead_per_trial_s": round((r["full"]["seconds"] - t_in) / max(trials, 1), 4),
                    "seconds_per_stage": round(r["full"]["seconds"] / max(s["stages"], 1), 3),
                    "seconds_nothing_to_do": r["again"]["seconds"],
                    "controller_peak_rss_mb": r["full"]["peak_rss_mb"],
                    "controller_peak_rss_mb_nothing_to_do": r["again"]["peak_rss_mb"],
                    "tree_peak_rss_mb": r["full"]["peak_tree_mb"],
                    "seconds_audit": r["audit"]["seconds"], "audit_errors": r["audit"]["errors"],
                    "same_best": (s["best"] or {}).get("arch") == (engine.best() or {}).get("arch"),
                    "same_trials": trials == engine.trials,
                }
                rows.append(row)
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
                if args.slurm and n == sizes[0] and mode == modes[0]:
                    slurm = run_slurm(cfg, Path(tmp), r)
                    (RESULTS / "workflow_overhead_slurm.json").write_text(json.dumps(slurm, indent=2) + "\n")
    res = {"date": date.today().isoformat(), "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "cores": args.cores, "space": args.space, "search": SEARCHES[args.space],
           "slurm_probe": "answered by a 1-s-timeout slurm.conf (as tests/conftest.py)" if probe else "as installed",
           "runs": rows, "goals": goals(rows)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(rows))
    print(json.dumps(res["goals"], indent=2))
    plot(rows, Path(args.out).with_suffix(".png"), args.space)


def quiet_slurm_probe() -> str | None:
    """Where SLURM's commands are installed but no controller answers, the SLURM plugin's
    `scontrol show config` at every Snakemake start waits ~9 s (docs/workflow.md): the runs
    get the 1-second-timeout slurm.conf tests/conftest.py uses, so they measure the workflow."""
    if "SLURM_CONF" in os.environ or not shutil.which("scontrol"):
        return None
    path = Path(tempfile.mkdtemp(prefix="layernas-slurm-probe-")) / "slurm.conf"
    path.write_text("ClusterName=none\nSlurmctldHost=localhost\nMessageTimeout=1\nTCPTimeout=1\n")
    os.environ["SLURM_CONF"] = str(path)
    return str(path)


def goals(rows: list[dict]) -> dict:
    """The issue's goals, as ratios of this run's numbers (not timed tests)."""
    out: dict = {}
    for mode in sorted({r["batch"] for r in rows}):
        rs = sorted((r for r in rows if r["batch"] == mode), key=lambda r: r["trials_budget"])
        if len(rs) >= 2:
            out[f"batch_{mode}_per_trial_ratio_largest_over_smallest"] = round(
                rs[-1]["seconds_per_trial"] / rs[0]["seconds_per_trial"], 2)
        out[f"batch_{mode}_max_seconds_per_trial"] = max(r["seconds_per_trial"] for r in rs)
        out[f"batch_{mode}_max_nothing_to_do_s"] = max(r["seconds_nothing_to_do"] for r in rs)
        out[f"batch_{mode}_max_controller_rss_mb"] = max(r["controller_peak_rss_mb"] for r in rs)
    return out


def table(rows: list[dict]) -> str:
    head = ("| trials | batch | stages | trial jobs | through Snakemake | per trial | in-process | "
            "nothing-to-do re-run | controller peak RSS | audit |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['trials']:,} | {r['batch']} | {r['stages']} | {r['trial_jobs']:,} | {r['seconds_workflow']:.0f} s | "
                     f"{r['seconds_per_trial']:.3f} s | {r['seconds_inprocess']:.1f} s | "
                     f"{r['seconds_nothing_to_do']:.1f} s | {r['controller_peak_rss_mb']} MB | {r['seconds_audit']:.1f} s |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, space: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({r["batch"] for r in rows}):
        rs = sorted((r for r in rows if r["batch"] == mode), key=lambda r: r["trials"])
        label = {"default": "batched (default: a stage per job)", "1": "one trial per job",
                 "1p": "one trial per job, a process each"}.get(mode, f"batch = {mode}")
        a.plot([r["trials"] for r in rs], [r["seconds_per_trial"] for r in rs], "o-", label=label)
        b.plot([r["trials"] for r in rs], [r["seconds_nothing_to_do"] for r in rs], "o-", label=label)
    a.axhline(0.05, color="grey", ls="--", lw=0.8, label="goal 0.05 s")
    b.axhline(30, color="grey", ls="--", lw=0.8, label="goal 30 s")
    for ax, title in ((a, "seconds per trial (whole run)"), (b, "nothing-to-do re-run (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("trials")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Snakemake workflow, tabular search on {space}, --cores 2 ({date.today().isoformat()})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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


def run_slurm(cfg: dict, tmp: Path, local: dict) -> dict:
    """The same search with `snakemake --profile slurm` at the project root, trial batches as jobs."""
    with slurm_cluster():
        return _run_slurm(cfg, tmp, local)


def _run_slurm(cfg: dict, tmp: Path, local: dict) -> dict:
    import re

    trial = {**(cfg.get("resources") or {}).get("trial", {}), "local": False, "runtime": 5, "mem_mb": 500}
    cfg = {**cfg, "results": str(tmp / "slurm-results"), "resources": {"trial": trial}}
    path = tmp / "slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--configfile", str(path),
           "--slurm-init-seconds-before-status-checks", "2"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise SystemExit(f"slurm run failed:\n{proc.stderr[-3000:]}")
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stderr + proc.stdout).group(1)
    time.sleep(3)  # slurmdbd records end times a moment later
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "--name", run_id, "-o", "ElapsedRaw"],
                         capture_output=True, text=True, check=True).stdout.split()
    elapsed = [int(x) for x in out]
    n = json.loads((tmp / "slurm-results" / "search" / "summary.json").read_text())["trials"]
    return {"date": date.today().isoformat(), "trials": n, "slurm_jobs": len(elapsed), "seconds_slurm": round(wall, 2),
            "slurm_seconds_per_trial": round(wall / max(n, 1), 3),
            "slurm_job_elapsed_mean_s": round(sum(elapsed) / max(len(elapsed), 1), 2),
            "seconds_local": local["full"]["seconds"],
            "tables_equal_local": same_tables(local["results"], tmp / "slurm-results"), "config": cfg}


def same_tables(a: Path, b: Path) -> bool:
    """Whether two results directories hold the same bucket tables."""
    import pandas as pd

    ta, tb = (sorted(p.relative_to(d) for p in (d / "search").glob("r*/l*/buckets.parquet")) for d in (a, b))
    return ta == tb and all(pd.read_parquet(a / p).equals(pd.read_parquet(b / p)) for p in ta)


if __name__ == "__main__":
    main()
