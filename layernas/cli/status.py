"""`layernas status [RESULTS_DIR]`: where a search stands, read from the files alone (so it
works while Snakemake runs, after a crash, and on a cluster login node). The reading is
``layernas.store.status.collect_status``; this module parses and prints."""

from __future__ import annotations

import shutil

from layernas.cli.output import mb, print_json


def cmd_status(args) -> int:
    from layernas.store.status import collect_status  # pandas: imported here, so the parser stays fast

    st = collect_status(args.results)
    if args.json:
        print_json(st)
        return 0
    t = st["trials"]
    print(f"search in {st['results']}: space {st['space']}, target {st['target']}, "
          f"{'done' if st['done'] else 'running or interrupted'}")
    if st["last_stage"]:
        print(f"  stages: {st['stages_generated']} generated, {st['stages_aggregated']} aggregated; "
              f"last sweep {st['last_stage']['sweep']} layer {st['last_stage']['layer']}")
    print(f"  trials: {t['ok']} ok, {t['failed']} failed, {t['pending']} pending; "
          f"{st['trial_seconds']:.0f} s of trial time")
    b = st["best_in_target"]
    print(f"  best in target: {b['arch']} cost {b['cost']:g} accuracy {b['accuracy']:.4f}" if b else
          "  best in target: none yet")
    for row in st["near_target"][:8]:
        print(f"    layer {row['layer']} bucket {row['bucket']}: {row['arch']} cost {row['cost']:g} acc {row['accuracy']:.4f}")
    for e in st["failed_trials"][:5]:
        print(f"  failed {e['key']} ({e['arch']}): {e['error']}")
    width = shutil.get_terminal_size((100, 20)).columns
    print(f"  disk: {mb(st['disk_bytes'])} (weights {mb(st['disk_bytes_weights'])})"[:width])
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="progress of a search: stages, trials ok/failed/pending, best so far")
    p.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
