"""`layernas search`: the in-process LayerNAS search with an accuracy oracle (a table or a
function), optionally writing the same stage tables and summary as the workflow (--out)."""

from __future__ import annotations

import time
from pathlib import Path

from layernas.cli.output import print_json, progress
from layernas.core.space import load_space, parse_arch
from layernas.core.status import search_summary
from layernas.evaluate.oracle import load_oracle
from layernas.store.files import atomic_write_json, atomic_write_parquet
from layernas.store.keys import train_hash as oracle_train_hash
from layernas.store.keys import trial_key
from layernas.store.layout import Layout


def cmd_search(args) -> int:
    # pandas: imported here, so the parser (and `space`, `cost`) stay fast
    from layernas.core.driver import run_search
    from layernas.core.search import SearchConfig

    space = load_space(args.space)
    oracle = load_oracle(args.oracle, space)
    cfg = SearchConfig(
        target_min=args.target_min,
        target_max=args.target_max,
        buckets=args.buckets,
        replicas=args.replicas,
        per_sweep=args.per_sweep,
        budget=args.budget,
        metric=args.metric,
        select=args.select,
        child_order=args.child_order,
        seed=args.seed,
    )
    # The same hash the workflow's tabular evaluator uses: same oracle, same trial keys.
    train_hash = oracle_train_hash({"evaluator": "tabular", "oracle": args.oracle})

    def key_fn(arch: str) -> str:
        return trial_key(space.space_id, arch, train_hash, args.seed)

    t0 = time.perf_counter()
    engine = run_search(
        space, oracle, cfg, key_fn=key_fn, progress=None if args.quiet else progress,
        input_size=args.input_size, num_classes=args.num_classes,
    )
    elapsed = time.perf_counter() - t0
    history = engine.history_frame()
    out = Path(args.out) if args.out else None
    if out is not None:
        layout = Layout(out, search_dir=out)
        for (r, l), table in sorted(engine.tables.items()):
            atomic_write_parquet(layout.buckets(r, l), table)
        for (r, l), kids in sorted(engine.children.items()):
            atomic_write_parquet(layout.children(r, l), kids)
        atomic_write_parquet(layout.full_history, history)
    summary = search_summary(space, cfg, history, engine.best(), engine.stopped_by_budget, engine.geo.budget,
                             oracle=oracle.spec, seconds=round(elapsed, 3), out=str(out) if out else None)
    if out is not None:
        atomic_write_json(layout.summary, summary)
    if args.json:
        print_json(summary)
    else:
        b = summary["best"]
        if b is None:
            print(f"no model in the target range was evaluated ({engine.trials} trials)")
        else:
            print(
                f"best {b['arch']} ({' '.join(space.describe(parse_arch(b['arch'])))}) "
                f"cost {b['cost']:g} accuracy {b['accuracy']:.4f}"
            )
            print(f"{engine.trials} trials, {summary['dropped']} dropped, {summary['sweeps']} sweeps, {elapsed:.2f} s")
    return 0


def add_parser(sub) -> None:
    se = sub.add_parser("search", help="in-process LayerNAS search with an accuracy oracle")
    se.add_argument("--space", required=True)
    se.add_argument("--oracle", required=True, help="CSV/Parquet with columns arch, accuracy; or module:function")
    se.add_argument("--target-min", type=float, required=True)
    se.add_argument("--target-max", type=float, required=True)
    se.add_argument("--metric", choices=["madds", "params"], default="madds")
    se.add_argument("--buckets", "-H", type=int, default=100)
    se.add_argument("--replicas", "-K", type=int, default=3)
    se.add_argument("--per-sweep", "-R", type=int, default=3)
    se.add_argument("--budget", type=int, help="max new evaluations (default: H*K*sum|S_i|)")
    se.add_argument("--select", choices=["best", "dearest", "random"], default="best",
                    help="which candidates become parents (docs/algorithm.md)")
    se.add_argument("--child-order", choices=["parent", "interleave"], default="parent",
                    help="order of a stage's children, where a budget cuts it")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--input-size", type=int)
    se.add_argument("--num-classes", type=int)
    se.add_argument("--out", help="directory for r{r}/l{l}/buckets.parquet, history.parquet, summary.json")
    se.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)
