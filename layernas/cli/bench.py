"""``layernas bench``: compare search strategies on tabular benchmarks (see layernas/bench/).

Example (the command behind docs/benchmarks.md):

    layernas bench --benchmark nb201-cifar10,nb201-cifar100,nb201-imagenet16-120 \\
        --strategies layernas,random,evolution,ppo --seeds 100 --budget 300 --out results/bench

Writes to ``--out``: runs.parquet (one row per run), curves.parquet (incumbent per seed per
trial or per simulated second), curve_summary.parquet (mean/std/quartiles over seeds),
summary.json, summary.md (the comparison table) and curves.png.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from layernas.cli.output import dumps, print_json
from layernas.cli.output import progress as print_progress
from layernas.core.strategies import resolve_name

# NB201-tuned LayerNAS settings (docs/benchmarks.md, "Why these defaults"): the whole search
# (until no candidate is left) takes 387-677 trials, 2.5-4.3% of the 15,625 cells.
DEFAULT_H, DEFAULT_K, DEFAULT_R = 10, 1, 3
DEFAULT_BUDGET = 300


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _benchmarks(text: str) -> list[str]:
    from layernas.bench.tables import benchmark_names  # pandas: imported here, so the parser stays fast

    out: list[str] = []
    for name in _csv(text):
        out += benchmark_names() if name in ("nb201", "all") else [name]
    if not out:
        raise ValueError("--benchmark needs at least one name")
    return list(dict.fromkeys(out))


def _fractions(text: str) -> list[float]:
    try:
        fr = [float(t) for t in _csv(text)]
    except ValueError:
        raise ValueError(f"--targets must be comma-separated fractions like 0.5,0.25, got {text!r}") from None
    bad = [f for f in fr if not 0 < f <= 1]
    if not fr or bad:
        raise ValueError(f"--targets fractions must be in (0, 1], got {text!r}")
    return fr


def _command(args, benchmarks: list[str], strategies: list[str], budget: int) -> str:
    """The canonical command line that reproduces a run (defaults spelled out)."""
    parts = ["layernas", "bench", "--benchmark", ",".join(args.benchmark.split(",")) if args.space else ",".join(benchmarks)]
    if args.space:
        parts += ["--space", args.space]
    parts += ["--strategies", ",".join(strategies), "--seeds", str(args.seeds)]
    if args.seed_start:
        parts += ["--seed-start", str(args.seed_start)]
    parts += ["--budget-seconds", f"{args.budget_seconds:g}"] if args.budget_seconds else ["--budget", str(budget)]
    parts += ["--targets", args.targets, "--metric", args.metric]
    parts += ["-H", str(args.buckets), "-K", str(args.replicas), "-R", str(args.per_sweep)]
    if args.no_noise:
        parts.append("--no-noise")
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_bench(args) -> int:
    # pandas: imported here, so the parser stays fast
    from layernas.bench.harness import run_bench
    from layernas.bench.summary import curve_summary, markdown_table, plot_curves, summarize
    from layernas.bench.tables import load_table

    if args.budget is not None and args.budget_seconds is not None:
        raise ValueError("give --budget (trials) or --budget-seconds, not both")
    budget = args.budget if args.budget is not None or args.budget_seconds is not None else DEFAULT_BUDGET
    if args.seeds <= 0:
        raise ValueError(f"--seeds must be a positive count, got {args.seeds}")
    strategies = [resolve_name(s) for s in _csv(args.strategies)]
    if not strategies:
        raise ValueError("--strategies needs at least one name")
    fractions = _fractions(args.targets)
    tables = {}
    for name in _benchmarks(args.benchmark):
        t = load_table(name, args.space, args.metric)
        tables[t.name] = t
    spaces = {t.space.space_id for t in tables.values()}
    if len(spaces) > 1:
        raise ValueError("all benchmarks of one bench run must share a search space")
    options = {"layernas": {"buckets": args.buckets, "replicas": args.replicas, "per_sweep": args.per_sweep}}

    def progress(msg: str) -> None:
        if not args.quiet:
            print_progress(msg, "layernas bench")

    seeds = range(args.seed_start, args.seed_start + args.seeds)
    res = run_bench(
        tables, strategies, seeds, fractions, budget=None if args.budget_seconds else budget,
        budget_seconds=args.budget_seconds, metric=args.metric, noise=not args.no_noise, options=options,
        workers=args.workers, progress=progress,
    )
    summary = summarize(res.runs)
    cs = curve_summary(res.curves)
    command = _command(args, list(tables), strategies, budget)
    out = {
        "command": command,
        "benchmarks": list(tables),
        "strategies": strategies,
        "seeds": [seeds.start, seeds.stop - 1],
        "targets": fractions,
        "metric": args.metric,
        "budget": None if args.budget_seconds else budget,
        "budget_seconds": args.budget_seconds,
        "noise": not args.no_noise,
        "layernas": options["layernas"],
        "x_unit": res.x_unit,
        "wall_s": round(res.wall_s, 2),
        "workers": res.workers,
        "runs": len(res.runs),
        "has_test": bool(summary["test_mean"].notna().any()),
        "summary": summary.to_dict(orient="records"),
    }
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        res.runs.to_parquet(d / "runs.parquet", index=False)
        res.curves.to_parquet(d / "curves.parquet", index=False)
        cs.to_parquet(d / "curve_summary.parquet", index=False)
        (d / "summary.json").write_text(dumps(out) + "\n")
        (d / "summary.md").write_text(f"`{out['command']}`\n\n" + markdown_table(summary) + "\n")
        plot_curves(cs, d / "curves.png", res.x_unit)
        out["out"] = str(d)
    if args.json:
        print_json(out)
    else:
        print(markdown_table(summary))
        print(f"\n{len(res.runs)} runs in {res.wall_s:.1f} s on {res.workers} worker(s)"
              + (f"; results in {args.out}" if args.out else ""))
    return 0


def add_parser(subparsers) -> None:
    bp = subparsers.add_parser(
        "bench", help="compare LayerNAS, random search, evolution and PPO on tabular benchmarks",
        description=__doc__.split("\n")[0],
    )
    bp.add_argument("--benchmark", required=True,
                    help="nb201-cifar10, nb201-cifar100, nb201-imagenet16-120 (comma list; 'nb201' = all three), "
                         "or a .csv/.parquet table with columns arch, accuracy (needs --space)")
    bp.add_argument("--space", help="search space of a user table (built-in name or .yaml path)")
    bp.add_argument("--strategies", default="layernas,random,evolution,ppo")
    bp.add_argument("--seeds", type=int, default=100, help="number of seeds per strategy (default 100)")
    bp.add_argument("--seed-start", type=int, default=0)
    bp.add_argument("--budget", type=int, help=f"trials per run (default {DEFAULT_BUDGET})")
    bp.add_argument("--budget-seconds", type=float,
                    help="simulated training seconds per run (sum of the table's train_time of new archs)")
    bp.add_argument("--targets", default="0.5,0.25", help="cost targets as fractions of the largest model's cost")
    bp.add_argument("--metric", choices=["madds", "params"], default="madds")
    bp.add_argument("--buckets", "-H", type=int, default=DEFAULT_H, help=f"LayerNAS H (default {DEFAULT_H})")
    bp.add_argument("--replicas", "-K", type=int, default=DEFAULT_K, help=f"LayerNAS K (default {DEFAULT_K})")
    bp.add_argument("--per-sweep", "-R", type=int, default=DEFAULT_R, help=f"LayerNAS R (default {DEFAULT_R})")
    bp.add_argument("--no-noise", action="store_true", help="answer every query with the mean over seeds")
    bp.add_argument("--workers", type=int, help="processes (default: all CPU cores)")
    bp.add_argument("--out", help="directory for Parquet tables, summary.json/.md and curves.png")
    bp.add_argument("--quiet", action="store_true")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=cmd_bench)
