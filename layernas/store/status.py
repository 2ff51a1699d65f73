"""Where a search stands, read from the files alone (so it works while Snakemake runs, after a
crash, and on a cluster login node): what `layernas status` prints.

Besides the search (stages, trials, best so far) it reads what the workflow writes for a
person: the outcome and message of ``summary.json``, the run's state (``logs/run.json``, written
by the Snakefile's hooks: running, done or stopped, and the command that resumes it), and per
final model its test accuracy, transfer mAP and weights. ``state`` is ``done`` only when the
summary and every final and transfer result its top list implies exist and no run is working
on the directory."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd

from layernas.core.describe import arch_label, human_cost
from layernas.core.status import Action, Status
from layernas.store.audit import disk_usage
from layernas.store.audit.scan import no_search, stage_tables
from layernas.store.layout import METRICS, WEIGHTS, Layout
from layernas.store.supernet import supernet_state

LISTED = 20  # pending keys, failed trials and near-target rows listed at most
FOUND, NO_MODEL = "found", "no-model-in-target"  # summary.json outcomes (layernas.workflow.outcome)
DONE, RUNNING, STOPPED = "done", "running", "stopped"  # states
UNKNOWN = "running or interrupted"  # no run state on disk (an older run, or `layernas search --out`)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def _trials(layout: Layout, keys: set[str]) -> tuple[set[str], dict]:
    """Keys of finished trials, and their counts, trial seconds and errors: every trial in the
    results directory's own store, only ``keys`` (this search's) in a shared one."""
    ok = failed = 0
    seconds = 0.0
    errors = []
    finished = set()
    root = layout.area("trials")
    if layout.shared_store:
        paths = [p for p in (layout.trial_metrics(k) for k in sorted(keys)) if p.exists()]
    else:
        paths = list(root.glob(f"*/{METRICS}")) if root.exists() else []
    for mpath in paths:
        try:
            m = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        finished.add(mpath.parent.name)
        seconds += float(m.get("wall_seconds") or 0)
        if m.get("status") == Status.OK:
            ok += 1
        else:
            failed += 1
            errors.append({"key": mpath.parent.name, "arch": m.get("arch"), "error": m.get("error")})
    return finished, {"ok": ok, "failed": failed, "seconds": seconds, "errors": errors}


def _best(history: pd.DataFrame, target: list[float]) -> tuple[dict | None, list[dict]]:
    """The best evaluated model inside the target range, and the best per (layer, bucket) near it."""
    lo, hi = target
    ev = history[history["status"] == Status.OK]
    inside = ev[(ev["cost"] >= lo) & (ev["cost"] <= hi)]
    best = None
    if len(inside):
        b = inside.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
        best = {"arch": b["arch"], "cost": float(b["cost"]), "accuracy": float(b["accuracy"]), "key": b["key"]}
    width = (hi - lo) or max(abs(hi), 1.0) * 0.05
    band = ev[(ev["cost"] >= lo - width) & (ev["cost"] <= hi + width)]
    near: list[dict] = []
    if len(band):
        top = band.sort_values("accuracy", ascending=False).groupby(["layer", "bucket"]).head(1)
        near = top.sort_values(["layer", "bucket"]).head(LISTED)[["layer", "bucket", "arch", "cost", "accuracy"]].to_dict("records")
    return best, near


def _space(meta: dict, run: dict | None):
    """The run's space, for decoding archs, only if its content id is the recorded one."""
    from layernas.core.space import SpaceError, load_space

    names = []
    if run and run.get("space"):
        p = Path(run["space"])
        names.append(p if p.is_absolute() or not run.get("cwd") else Path(run["cwd"]) / p)
    if meta.get("space_name"):
        names.append(meta["space_name"])
    for name in names:
        try:
            space = load_space(name)
        except (SpaceError, OSError, ValueError):
            continue
        if not meta.get("space") or space.space_id == meta["space"]:
            return space
    return None


def _alive(run: dict) -> bool | None:
    """Whether the recorded Snakemake process still runs (None: another host, cannot tell)."""
    if run.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(run["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return None
    return True


def model_rows(layout: Layout, summary: dict | None, expects: dict, space, metric: str) -> tuple[list[dict], list[str]]:
    """Per top model: search result, final retraining, transfer, weights, exports; and the
    result files the summary's top list implies that do not exist yet."""
    rows, missing = [], []
    export_dir = layout.root / "export"
    for row in (summary or {}).get("top") or []:
        fkey = row.get("final_key")
        final = _read_json(layout.final_metrics(fkey)) if fkey else None
        transfer = _read_json(layout.transfer_metrics(fkey)) if fkey else None
        # Expected: what this run said it produces, else whatever was started (its directory exists).
        want_final = expects.get("final", layout.final_dir(fkey).exists()) if fkey else False
        want_transfer = expects.get("transfer", layout.transfer_dir(fkey).exists()) if fkey else False
        if want_final and final is None:
            missing.append(str(layout.final_metrics(fkey)))
        if want_transfer and transfer is None:
            missing.append(str(layout.transfer_metrics(fkey)))
        weights = layout.final_dir(fkey) / WEIGHTS if fkey else None
        ref = (transfer or {}).get("reference")
        exports = sorted(str(p) for p in export_dir.rglob(f"*{fkey}*")) if fkey and export_dir.is_dir() else []
        rows.append({
            "arch": row.get("arch"), "label": arch_label(space, str(row.get("arch"))),
            "cost": row.get("cost"), "cost_text": human_cost(row.get("cost"), metric),
            "accuracy": row.get("accuracy"), "key": row.get("key"), "final_key": fkey,
            "final": None if final is None else {
                "status": final.get("status"), "test_accuracy": final.get("test_accuracy"),
                "weights": str(weights) if weights is not None and weights.exists() else None},
            "transfer": None if transfer is None else {
                "status": transfer.get("status"), "map": transfer.get("map"),
                "reference_map": ref.get("map") if isinstance(ref, dict) else None},
            "export": exports,
        })
    return rows, missing


def _state(summary: dict | None, missing: list[str], run: dict | None) -> tuple[str, bool | None]:
    alive = _alive(run) if run else None
    if run and run.get("state") == RUNNING and alive is not False:
        return RUNNING, alive
    if summary is not None and not missing:
        return DONE, alive
    if run:  # the last run ended (a hook said so) or died (SIGKILL, power loss) before the end
        return STOPPED, alive
    return UNKNOWN, alive


def collect_status(results: str | Path) -> dict:
    """The state of the search in ``results`` (the ``layernas status --json`` contract)."""
    layout = Layout.of_results(results)  # with the trial store the run recorded (`trials:`)
    if not layout.search_dir.exists() and not layout.supernet_root.is_dir():  # a supernet search trains first
        raise no_search(layout, "; run snakemake or layernas search --out first")
    summary = _read_json(layout.summary)
    # search.json (the workflow's); a `layernas search --out` directory has only the summary.
    meta = _read_json(layout.search_meta) or {}
    for field, fallback in (("target", "target"), ("space_name", "space"), ("space", "space_id"), ("metric", "metric")):
        if meta.get(field) is None and (summary or {}).get(fallback) is not None:
            meta[field] = summary[fallback]
    sn = supernet_state(layout, (meta.get("supernet") or {}).get("key"))
    if sn and not meta.get("space_name"):
        meta["space_name"] = sn.get("space")
    files = stage_tables(layout)
    generated = [(r, l) for r, l, kind, _ in files if kind == "children"]
    aggregated = [(r, l) for r, l, kind, _ in files if kind == "buckets"]
    requested: set[str] = set()
    for r, l in generated:
        kids = pd.read_parquet(layout.children(r, l))
        if "action" in kids:
            requested |= set(kids.loc[kids["action"] == Action.EVALUATE, "key"])
    finished, trials = _trials(layout, requested)
    pending = sorted(requested - finished)
    last_hist = layout.history(*aggregated[-1]) if aggregated else None
    if layout.full_history.exists():
        last_hist = layout.full_history
    best, near = None, []
    if last_hist is not None and last_hist.exists() and meta.get("target"):
        best, near = _best(pd.read_parquet(last_hist), meta["target"])
    run = _read_json(layout.run_state)
    space = _space(meta, run)
    metric = meta.get("metric") or (summary or {}).get("metric") or "madds"
    models, missing = model_rows(layout, summary, (run or {}).get("expects") or {}, space, metric)
    # A requested trial that is gone (deleted, or removed by audit --fix) keeps the run from
    # being done: the same command redoes it.
    state, alive = _state(summary, missing + [str(layout.trial_metrics(k)) for k in pending], run)
    outcome = message = None
    if summary is not None:
        outcome = summary.get("outcome") or (FOUND if summary.get("best") else NO_MODEL)
        message = summary.get("message")
    for b in [best, *near]:
        if b:
            b["label"] = arch_label(space, str(b["arch"]))
            b["cost_text"] = human_cost(b["cost"], metric)
    du = disk_usage(layout.root)
    export_dir = layout.root / "export"
    return {
        "results": str(layout.root),
        "trials_store": str(layout.trials_dir) if layout.shared_store else None,
        "supernet": sn,
        "space": meta.get("space_name"),
        "target": meta.get("target"),
        "metric": metric,
        "budget": meta.get("budget"),
        "done": state == DONE,
        "state": state,
        "outcome": outcome,
        "message": message,
        "run": None if run is None else {
            "state": run.get("state"), "command": run.get("command"), "started_at": run.get("started_at"),
            "ended_at": run.get("ended_at"), "signal": run.get("signal"), "pid": run.get("pid"),
            "host": run.get("host"), "alive": alive},
        "missing": missing,
        "stages_generated": len(generated),
        "stages_aggregated": len(aggregated),
        "last_stage": {"sweep": generated[-1][0], "layer": generated[-1][1]} if generated else None,
        "trials": {"ok": trials["ok"], "failed": trials["failed"], "pending": len(pending)},
        "pending_keys": pending[:LISTED],
        "failed_trials": trials["errors"][:LISTED],
        "best_in_target": best,
        "near_target": near,
        "final_models": models,
        "export": str(export_dir) if export_dir.is_dir() else None,
        "trial_seconds": round(trials["seconds"], 1),
        "disk_bytes": du["total"],
        "disk_bytes_weights": du["trials_weights"],
        "disk": du,
    }
