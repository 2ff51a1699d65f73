"""`layernas audit [RESULTS_DIR] [--json] [--fix]` and `layernas clean-weights [RESULTS_DIR]
[--dry-run] [--json]` and `layernas retry-failed [RESULTS_DIR] [--dry-run] [--json]`. The logic
is in layernas/store/audit/; this module only parses and prints.

Exit status of audit: 0 no errors (warnings and info may be printed), 1 errors found (also
after --fix removed them: the same snakemake command must still redo them), 2 bad usage or a
directory that holds no search (printed by layernas.cli.main as `layernas: error: ...`)."""

from __future__ import annotations

from layernas.cli.output import mb, plural, print_json

# layernas.store.audit (pandas) is imported in each command, so the parser stays fast.


def cmd_audit(args) -> int:
    from layernas.evaluate.supernet_job import checkpoint_hash  # torch only when a supernet is checked
    from layernas.store.audit import ERROR, INFO, WARNING, audit  # pandas

    report = audit(args.results, do_fix=args.fix, space=args.space, load=checkpoint_hash)
    if args.json:
        print_json(report.to_dict())
        return report.exit_code
    c = report.checked
    print(f"audit of {report.results}: {c['trials']} trials, {c['final']} final, {c['transfer']} transfer, "
          f"{c['tables']} tables ({c['rows']} rows)" + (f", {c['supernet']} supernet" if c.get("supernet") else "")
          + f" in {report.seconds:.2f} s")
    for p in report.problems:
        print(p.line())
    if report.removed:
        for path in report.removed:
            print(f"removed {path}")
        print(f"--fix removed {len(report.removed)} director{'y' if len(report.removed) == 1 else 'ies'}; "
              "the actions above say how to redo them")
    elif any(p.fixable for p in report.problems):
        print("layernas audit --fix deletes the directories marked 'delete it'; tables are never deleted")
    print(f"{plural(report.count(ERROR), 'error')}, {plural(report.count(WARNING), 'warning')}, "
          f"{report.count(INFO)} info" + ("" if report.problems else ": clean"))
    return report.exit_code


def cmd_clean_weights(args) -> int:
    from layernas.store.audit import clean_weights  # pandas

    res = clean_weights(args.results, dry_run=args.dry_run)
    if args.json:
        print_json(res)
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for f in res["removed"]:
        print(f"{verb} {f['path']} ({mb(f['bytes'])})")
    print(f"{verb} {plural(len(res['removed']), 'weights file')}, {mb(res['bytes_freed'])}; "
          f"kept {res['kept']} (trials still selectable: latest bucket tables, top models)")
    return 0


def cmd_retry_failed(args) -> int:
    from layernas.store.audit import retry_failed  # pandas

    res = retry_failed(args.results, dry_run=args.dry_run)
    if args.json:
        print_json(res)
        return 0
    verb = "would move" if args.dry_run else "moved"
    for t in res["moved"]:
        print(f"{verb} {t['key']} ({t['arch']}: {t['error']}) to {t['moved_to']}")
    print(f"{verb} {plural(len(res['moved']), 'failed trial')}")
    if res["moved"] and not args.dry_run:
        print("now run the same snakemake command again: it evaluates exactly these trials again")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("audit", help="check trial records against the Parquet tables; --fix removes broken trials")
    p.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    p.add_argument("--json", action="store_true", help="one JSON object: problems with path, kind, severity, "
                   "message, action")
    p.add_argument("--fix", action="store_true", help="delete partial, corrupted or misnamed trial/final/transfer "
                   "directories (never finished good trials, never tables) so a rerun redoes them")
    p.add_argument("--space", help="space file the run used, when it is not a built-in space (for the cost checks)")
    p.set_defaults(func=cmd_audit)

    c = sub.add_parser("clean-weights", help="delete model.pt of trials no longer selectable by the search")
    c.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_clean_weights)

    r = sub.add_parser("retry-failed", help="set failed trials aside so the next run evaluates them again")
    r.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    r.add_argument("--dry-run", action="store_true", help="list the failed trials, move nothing")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retry_failed)
