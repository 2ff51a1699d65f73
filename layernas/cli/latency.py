"""`layernas latency`: measure a latency lookup table for a space (`table`), and check how
well it predicts whole models (`check`): random archs built and timed end to end against the
table's sum. Tables and the method: docs/latency.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

from layernas.cli.output import print_json


def _context(args, table: str | None = None):
    from layernas.core.cost import Context
    from layernas.core.space import load_space

    space = load_space(args.space)
    return space, Context.of(space, args.input_size, args.num_classes, args.input_channels, table)


def cmd_table(args) -> int:
    from layernas.evaluate.latency import measure_table, write_table

    space, ctx = _context(args)
    out = Path(args.out)
    if out.suffix != ".parquet":
        raise ValueError(f"--out must name a .parquet file, got {out}")
    t0 = time.time()
    say = None if args.json else (lambda msg: print(msg, flush=True))
    df = measure_table(space, ctx, args.runtime, args.threads, args.warmup, args.repeats, device=args.device,
                       progress=say, stat=args.statistic)
    write_table(df, out)
    summary = {"table": str(out), "segments": len(df) - 1, "seconds": round(time.time() - t0, 1),
               "device": df["device"].iloc[0], "threads": args.threads, "runtime": args.runtime,
               "fixed_ms": float(df.loc[df["segment"] == "fixed", "ms"].iloc[0])}
    if args.json:
        print_json(summary)
    else:
        print(f"{out}: {summary['segments']} segments of {space.name} on {summary['device']}, {args.threads} thread(s), "
              f"{args.runtime}, fixed {summary['fixed_ms']:.3f} ms ({summary['seconds']} s)")
    return 0


def _run_settings(results: Path) -> dict:
    """What a finished run used: its search.json (space, cost inputs, latency table)."""
    from layernas.store.layout import Layout

    path = Layout.of_results(results).search_meta
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{results} is not a layernas results directory (no readable {path})") from None
    return info


def cmd_check(args) -> int:
    from layernas.core.cost import Context
    from layernas.core.latency import check_table, read_table
    from layernas.core.space import load_space
    from layernas.evaluate.latency import check_prediction

    if args.results:
        info = _run_settings(Path(args.results))
        cost = dict(info.get("cost") or {})
        table = args.table or cost.pop("latency_table", None)
        cost.pop("latency_table", None)
        if not table:
            raise ValueError(f"run {args.results} did not search by latency and no --table was given")
        space = load_space(args.space or info.get("space_name") or info.get("space"))
        ctx = Context.of(space, latency_table=table, **cost)
    else:
        if not (args.space and args.table):
            raise ValueError("latency check needs RESULTS_DIR, or --space and --table")
        space, ctx = _context(args, args.table)
    tab = read_table(ctx.latency_table)
    check_table(tab, tab.meta["device"], int(tab.meta["threads"]), str(tab.meta["runtime"]))
    from layernas.core.latency import cpu_device

    if str(tab.meta["device"]).startswith("cpu") and tab.meta["device"] != cpu_device():
        raise ValueError(f"latency table {tab.path} was measured on {tab.meta['device']!r}; this machine is "
                         f"{cpu_device()!r}: check it on the machine it describes")
    out = check_prediction(space, ctx, args.samples, str(tab.meta["runtime"]), int(tab.meta["threads"]),
                           repeats=args.repeats, seed=args.seed, stat=str(tab.meta.get("statistic", "min")))
    out["table"] = tab.path
    if args.json:
        print_json(out)
    else:
        for r in out["rows"]:
            print(f"{r['arch']:>40}  predicted {r['predicted_ms']:8.3f} ms  measured {r['measured_ms']:8.3f} ms  "
                  f"error {100 * r['ape']:5.1f}%  spread {100 * r['spread']:4.1f}%")
        print(f"{out['samples']} archs: mean abs error {100 * out['mape']:.1f}%, max {100 * out['max_ape']:.1f}%, "
              f"median spread of repeats {100 * out['median_spread']:.1f}% ({tab.describe()})")
    return 0


def _space_args(p) -> None:
    p.add_argument("--space", help="built-in space name or .yaml path")
    p.add_argument("--input-size", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-channels", type=int)
    p.add_argument("--json", action="store_true")


def add_parser(sub) -> None:
    lp = sub.add_parser("latency", help="measure a latency table; check its predictions against whole models")
    lsub = lp.add_subparsers(dest="latency_cmd", required=True)
    t = lsub.add_parser("table", help="time every segment of a space once (batch 1) into a Parquet table")
    _space_args(t)
    t.add_argument("--out", required=True, help="the .parquet file to write")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch")
    t.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (runtime torch)")
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--repeats", type=int, default=15)
    t.add_argument("--statistic", choices=["min", "median"], default="min", help="of the repeats (default min: "
                   "steadier under other load)")
    t.set_defaults(func=cmd_table)
    c = lsub.add_parser("check", help="predicted vs measured latency of random archs, end to end")
    c.add_argument("results", nargs="?", help="a results directory of a latency search (or --space and --table)")
    _space_args(c)
    c.add_argument("--table", help="a latency table (default: the run's)")
    c.add_argument("--samples", type=int, default=30)
    c.add_argument("--repeats", type=int, default=15)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_check)
