"""``layernas bench``: compare search strategies on tabular benchmarks (see layernas/bench/).

Examples (the commands behind docs/benchmarks.md):

    layernas bench --benchmark nb201 --strategies layernas,random,evolution,ppo --seeds 100 \\
        --budget 300 --targets 0.5,0.25 --out results/bench
    layernas bench --protocol table3 --out results/table3   # the paper's Table 3 protocol

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

# LayerNAS settings of the bench, chosen on NB201 CIFAR-10/100 and confirmed on ImageNet16-120
# (docs/benchmarks.md, "Choosing LayerNAS's NB201 settings"): the no-op default space, parents
# from the dearest bucket first, children interleaved across parents, H = 10, K = 3, R = 3.
NB201_SPACE = "nb201-topology-noop"  # the space of the NB201 tables unless --space says otherwise
DEFAULT_H, DEFAULT_K, DEFAULT_R = 10, 3, 3
DEFAULT_SELECT, DEFAULT_CHILD_ORDER = "dearest", "interleave"
DEFAULT_BUDGET = 300
DEFAULT_TARGETS = "0.5,0.25"
# Presets; an explicit flag wins. table3: the paper's topology search (Table 3): no cost
# constraint, 1e5 simulated training seconds, each trial charged 12/200 of NB201's 200-epoch
# train_time (NATS-Bench's 12-epoch search setting; docs/benchmarks.md, "Table 3 protocol").
PROTOCOLS = {
    "table3": {"benchmark": "nb201", "targets": "1.0", "budget_seconds": 1e5, "time_scale": 12 / 200},
}


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


def _command(args, benchmarks: list[str], strategies: list[str], budget: int, space: str | None) -> str:
    """The canonical command line that reproduces a run (defaults spelled out)."""
    parts = ["layernas", "bench", "--benchmark", ",".join(benchmarks) if not args.space else args.benchmark]
    if space:
        parts += ["--space", space]
    parts += ["--strategies", ",".join(strategies), "--seeds", str(args.seeds)]
    if args.seed_start:
        parts += ["--seed-start", str(args.seed_start)]
    parts += ["--budget-seconds", f"{args.budget_seconds:g}"] if args.budget_seconds else ["--budget", str(budget)]
    if args.time_scale != 1:
        parts += ["--time-scale", f"{args.time_scale:g}"]
    parts += ["--targets", args.targets, "--metric", args.metric]
    parts += ["-H", str(args.buckets), "-K", str(args.replicas), "-R", str(args.per_sweep)]
    parts += ["--select", args.select, "--child-order", args.child_order]
    if args.no_noise:
        parts.append("--no-noise")
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def _apply_protocol(args) -> None:
    """Fill what the user left unset from ``--protocol`` and ``--unconstrained``, then the
    plain defaults; explicit flags always win."""
    if args.unconstrained:
        if args.targets is not None and _fractions(args.targets) != [1.0]:
            raise ValueError("give --targets or --unconstrained, not both")
        args.targets = "1.0"
    preset = PROTOCOLS.get(args.protocol, {}) if args.protocol else {}
    if args.protocol and not preset:
        raise ValueError(f"unknown --protocol {args.protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if args.benchmark is None:
        args.benchmark = preset.get("benchmark")
        if args.benchmark is None:
            raise ValueError("--benchmark is required (or --protocol table3)")
    if args.targets is None:
        args.targets = preset.get("targets", DEFAULT_TARGETS)
    if args.budget is None and args.budget_seconds is None:
        args.budget_seconds = preset.get("budget_seconds")
    if args.time_scale is None:
        args.time_scale = preset.get("time_scale", 1.0)
    if not args.time_scale > 0:
        raise ValueError(f"--time-scale must be positive, got {args.time_scale:g}")


def cmd_bench(args) -> int:
    # pandas: imported here, so the parser stays fast
    from layernas.bench.harness import run_bench
    from layernas.bench.summary import curve_summary, markdown_table, plot_curves, summarize
    from layernas.bench.tables import benchmark_names, load_table

    if args.budget is not None and args.budget_seconds is not None:
        raise ValueError("give --budget (trials) or --budget-seconds, not both")
    _apply_protocol(args)
    budget = args.budget if args.budget is not None or args.budget_seconds is not None else DEFAULT_BUDGET
    if args.seeds <= 0:
        raise ValueError(f"--seeds must be a positive count, got {args.seeds}")
    strategies = [resolve_name(s) for s in _csv(args.strategies)]
    if not strategies:
        raise ValueError("--strategies needs at least one name")
    fractions = _fractions(args.targets)
    names = _benchmarks(args.benchmark)
    nb201 = set(names) & set(benchmark_names())
    space = args.space or (NB201_SPACE if nb201 else None)
    tables = {}
    for name in names:
        t = load_table(name, space if name in nb201 else args.space, args.metric)
        tables[t.name] = t
    spaces = {t.space.space_id for t in tables.values()}
    if len(spaces) > 1:
        raise ValueError("all benchmarks of one bench run must share a search space")
    options = {"layernas": {
        "buckets": args.buckets, "replicas": args.replicas, "per_sweep": args.per_sweep,
        "select": args.select, "child_order": args.child_order,
    }}

    def progress(msg: str) -> None:
        if not args.quiet:
            print_progress(msg, "layernas bench")

    seeds = range(args.seed_start, args.seed_start + args.seeds)
    res = run_bench(
        tables, strategies, seeds, fractions, budget=None if args.budget_seconds else budget,
        budget_seconds=args.budget_seconds, metric=args.metric, noise=not args.no_noise, options=options,
        workers=args.workers, progress=progress, time_scale=args.time_scale,
    )
    summary = summarize(res.runs)
    cs = curve_summary(res.curves)
    command = _command(args, list(tables), strategies, budget, space)
    out = {
        "command": command,
        "protocol": args.protocol,
        "benchmarks": list(tables),
        "space": next(iter(tables.values())).space.name,
        "strategies": strategies,
        "seeds": [seeds.start, seeds.stop - 1],
        "targets": fractions,
        "metric": args.metric,
        "budget": None if args.budget_seconds else budget,
        "budget_seconds": args.budget_seconds,
        "time_scale": args.time_scale,
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
    bp.add_argument("--benchmark",
                    help="nb201-cifar10, nb201-cifar100, nb201-imagenet16-120 (comma list; 'nb201' = all three), "
                         "or a .csv/.parquet table with columns arch, accuracy (needs --space)")
    bp.add_argument("--space", help="search space: needed for a user table (built-in name or .yaml path); "
                                    f"for the NB201 tables any NB201 topology space (default {NB201_SPACE})")
    bp.add_argument("--protocol", choices=sorted(PROTOCOLS),
                    help="preset: table3 = the paper's Table 3 (nb201, --unconstrained, --budget-seconds 1e5, "
                         "--time-scale 0.06); explicit flags win")
    bp.add_argument("--strategies", default="layernas,random,evolution,ppo")
    bp.add_argument("--seeds", type=int, default=100, help="number of seeds per strategy (default 100)")
    bp.add_argument("--seed-start", type=int, default=0)
    bp.add_argument("--budget", type=int, help=f"trials per run (default {DEFAULT_BUDGET})")
    bp.add_argument("--budget-seconds", type=float,
                    help="simulated training seconds per run (sum of the table's train_time of new archs, "
                         "times --time-scale)")
    bp.add_argument("--time-scale", type=float,
                    help="multiplier of the table's train_time (default 1; 0.06 = 12 of NB201's 200 epochs)")
    bp.add_argument("--targets", help=f"cost targets as fractions of the largest model's cost (default {DEFAULT_TARGETS}); "
                                      "1.0 = the whole cost range, i.e. unconstrained")
    bp.add_argument("--unconstrained", action="store_true", help="no cost constraint: the same as --targets 1.0")
    bp.add_argument("--metric", choices=["madds", "params"], default="madds")
    bp.add_argument("--buckets", "-H", type=int, default=DEFAULT_H, help=f"LayerNAS H (default {DEFAULT_H})")
    bp.add_argument("--replicas", "-K", type=int, default=DEFAULT_K, help=f"LayerNAS K (default {DEFAULT_K})")
    bp.add_argument("--per-sweep", "-R", type=int, default=DEFAULT_R, help=f"LayerNAS R (default {DEFAULT_R})")
    bp.add_argument("--select", choices=["best", "dearest", "random"], default=DEFAULT_SELECT,
                    help=f"LayerNAS parent order (default {DEFAULT_SELECT})")
    bp.add_argument("--child-order", choices=["parent", "interleave"], default=DEFAULT_CHILD_ORDER,
                    help=f"LayerNAS order of a stage's children (default {DEFAULT_CHILD_ORDER})")
    bp.add_argument("--no-noise", action="store_true", help="answer every query with the mean over seeds")
    bp.add_argument("--workers", type=int, help="processes (default: all CPU cores)")
    bp.add_argument("--out", help="directory for Parquet tables, summary.json/.md and curves.png")
    bp.add_argument("--quiet", action="store_true")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=cmd_bench)
