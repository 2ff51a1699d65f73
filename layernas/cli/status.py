"""`layernas status [RESULTS_DIR] [--watch [SECONDS]]`: where a search stands, read from the
files alone (so it works while Snakemake runs, after a crash, and on a cluster login node). The
reading is ``layernas.store.status.collect_status``; this module parses and prints.

``--watch`` redraws every SECONDS (default 5) until the run is done; Ctrl-C ends it quietly."""

from __future__ import annotations

import shutil
import sys
import textwrap
import time

from layernas.cli.output import dumps, mb, print_json
from layernas.core.describe import human_cost

WATCH_SECONDS = 5.0
STATE_TEXT = {"done": "done", "running": "running", "running or interrupted": "running or interrupted"}


def _acc(x) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


def _wrap(text: str, indent: str) -> list[str]:
    width = max(60, min(shutil.get_terminal_size((100, 20)).columns, 120))
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False) or [indent]


def _state_text(st: dict) -> str:
    state, run = st["state"], st.get("run") or {}
    if state == "running":
        where = "" if run.get("alive") else f" on {run.get('host')} (not checked from here)"
        return f"running since {run.get('started_at')}{where}" if run else "running"
    if state != "stopped":
        return STATE_TEXT.get(state, state)
    if run.get("state") == "stopped":
        cause = f"interrupted by {run['signal']}" if run.get("signal") else "a job failed"
        return f"stopped before the end at {run.get('ended_at')} ({cause})"
    if run.get("state") == "running":
        return f"not running: the run started {run.get('started_at')} (pid {run.get('pid')}) ended without a word (killed?)"
    return f"not finished: the last run ended at {run.get('ended_at')} without every result"


def render(st: dict) -> list[str]:
    """The human-readable status, one string per line."""
    t = st["trials"]
    target = st["target"]
    metric = st.get("metric") or "madds"
    target_text = f"{human_cost(target[0], metric).split()[0]}-{human_cost(target[1], metric)}" if target else "?"
    lines = [f"search in {st['results']}: space {st['space']}, target {target_text}: {_state_text(st)}"]
    if st.get("outcome") == "no-model-in-target":
        lines.append("  outcome: NO MODEL IN THE TARGET RANGE")
        message = st.get("message") or "the search ended with no model in the target range"
        for part in message.replace(" Why: ", "\nWhy: ").replace(" What to change: ", "\nWhat to change: ").split("\n"):
            lines += _wrap(part, "    ")
    elif st.get("outcome"):
        lines.append(f"  outcome: {st['outcome']}" + (" (a model in the target range)" if st["outcome"] == "found" else ""))
    run = st.get("run") or {}
    if st["state"] == "stopped" and run.get("command"):
        lines.append("  resume with the same command (nothing finished is redone):")
        lines.append(f"    {run['command']}")
    sn = st.get("supernet")
    if sn and sn["state"] == "trained":
        lines.append(f"  supernet: trained ({sn.get('steps')} steps in {sn.get('train_seconds') or 0:.0f} s on "
                     f"{sn.get('device')}), content hash {sn.get('hash')}")
        lines.append(f"    {sn['checkpoint']}")
    elif sn:
        lines.append(f"  supernet: training, or killed while training (its directory changed "
                     f"{time.strftime('%H:%M:%S', time.localtime(sn['since']))}; no metrics.json yet)")
        lines.append(f"    {sn['path']}")
    if st["last_stage"]:
        lines.append(f"  stages: {st['stages_generated']} generated, {st['stages_aggregated']} aggregated; "
                     f"last sweep {st['last_stage']['sweep']} layer {st['last_stage']['layer']}")
    budget = f"; budget {st['budget']}" if st.get("budget") is not None else ""
    lines.append(f"  trials: {t['ok']} ok, {t['failed']} failed, {t['pending']} pending{budget}; "
                 f"{st['trial_seconds']:.0f} s of trial time")
    b = st["best_in_target"]
    lines.append(f"  best in target: {b['label']}, {b['cost_text']}, accuracy {b['accuracy']:.4f}" if b else
                 "  best in target: none yet" if st["state"] != "done" else "  best in target: none")
    for row in st["near_target"][:8]:
        lines.append(f"    layer {row['layer']} bucket {row['bucket']}: {row['label']}, {row['cost_text']}, "
                     f"acc {row['accuracy']:.4f}")
    if st.get("final_models"):
        retrained = any(m.get("final") for m in st["final_models"]) or st.get("missing")
        lines.append("  final models:" if retrained else "  top models (no final retraining in this run):")
        for m in st["final_models"]:
            lines.append(f"    {m['label']}, {m['cost_text']}, search accuracy {_acc(m['accuracy'])}")
            f, tr = m.get("final"), m.get("transfer")
            parts = []
            if f is not None:
                parts.append(f"test accuracy {_acc(f.get('test_accuracy'))}" if f.get("status") == "ok"
                             else f"final retraining {f.get('status')}")
            if tr is not None:
                ref = f" (reference {_acc(tr['reference_map'])})" if tr.get("reference_map") is not None else ""
                parts.append(f"transfer mAP {_acc(tr.get('map'))}{ref}")
            if parts:
                lines += _wrap("; ".join(parts), "      ")
            # paths on lines of their own, never wrapped, so they can be copied
            if f is not None and f.get("weights"):
                lines.append(f"      weights {f['weights']}")
            lines += [f"      export {p}" for p in m.get("export") or []]
    for path in st.get("missing", [])[:6]:
        lines.append(f"  not yet: {path}")
    if st.get("export"):
        lines.append(f"  export: {st['export']}")
    for e in st["failed_trials"][:5]:
        lines.append(f"  failed {e['key']} ({e['arch']}): {e['error']}")
    width = shutil.get_terminal_size((100, 20)).columns
    lines.append(f"  disk: {mb(st['disk_bytes'])} (weights {mb(st['disk_bytes_weights'])})"[:width])
    return lines


def _watch(args, seconds: float) -> int:
    """Redraw every ``seconds`` until done; Ctrl-C ends it with status 0 and no traceback."""
    from layernas.store.status import collect_status

    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while True:
            try:
                st = collect_status(args.results)
                body = dumps(st) if args.json else "\n".join(render(st))
            except ValueError as exc:  # no search yet: the run is starting
                st, body = None, f"waiting for a search in {args.results}: {exc}"
            stamp = time.strftime("%H:%M:%S")
            head = "" if args.json else f"[{stamp}, every {seconds:g} s; Ctrl-C to stop]\n"
            sys.stdout.write(f"{clear}{head}{body}\n")
            sys.stdout.flush()
            if st is not None and st["done"]:
                return 0
            time.sleep(seconds)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


def cmd_status(args) -> int:
    from layernas.store.status import collect_status  # pandas: imported here, so the parser stays fast

    if args.watch is not None:
        if args.watch <= 0:
            raise ValueError(f"--watch: seconds must be > 0, got {args.watch:g}")
        return _watch(args, args.watch)
    st = collect_status(args.results)
    if args.json:
        print_json(st)
        return 0
    print("\n".join(render(st)))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="progress of a search: state, outcome, stages, trials, best so far, "
                                      "final models")
    p.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", type=float, const=WATCH_SECONDS, default=None, metavar="SECONDS",
                   help=f"redraw every SECONDS (default {WATCH_SECONDS:g}) until the run is done; Ctrl-C stops")
    p.set_defaults(func=cmd_status)
