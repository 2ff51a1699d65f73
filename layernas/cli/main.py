"""The ``layernas`` command. Every subcommand prints human-readable text, or one JSON object
with ``--json`` (its keys are a contract other tooling relies on). Errors in the user's input
end with one ``layernas: error: ...`` line and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from layernas import __version__
from layernas.core.space import SpaceError, list_spaces, load_space, parse_arch

# Subcommands that live in their own modules (each has add_parser(subparsers)); a module
# that is missing (an optional part not installed) is skipped, not fatal.
PLUGIN_MODULES = ("layernas.cli.trial", "layernas.cli.bench", "layernas.cli.status", "layernas.cli.transfer",
                  "layernas.cli.audit")


def _print_json(obj) -> None:
    def clean(o):
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating, float)):
            return None if not math.isfinite(float(o)) else float(o)
        return o

    print(json.dumps(clean(obj), indent=2))


def _si(x: float) -> str:
    return f"{x / 1e6:.2f}M" if abs(x) >= 1e5 else f"{x:g}"


def _progress(msg: str) -> None:
    print(f"[layernas] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- space


def space_stats(space_name: str, buckets: int = 100, replicas: int = 3, **ctx) -> dict:
    from layernas.core.cost import cost_range
    from layernas.core.search import max_trials

    space = load_space(space_name)
    lo, hi = cost_range(space, "madds", **ctx)
    plo, phi = cost_range(space, "params", **ctx)
    return {
        "name": space.name,
        "version": space.version,
        "space_id": space.space_id,
        "backbone": space.backbone,
        "num_layers": space.num_layers,
        "layers": [layer.name for layer in space.layers],
        "options_per_layer": list(space.sizes),
        "num_unique_models": math.prod(space.sizes),
        "buckets": buckets,
        "replicas": replicas,
        "max_trials": max_trials(space, buckets, replicas),
        "min_cost": lo,
        "max_cost": hi,
        "min_params": plo,
        "max_params": phi,
        "input_size": ctx.get("input_size") or space.input_size,
        "num_classes": ctx.get("num_classes") or space.num_classes,
    }


def cmd_space(args) -> int:
    if args.space_cmd == "list":
        rows = [space_stats(n) for n in list_spaces()]
        if args.json:
            _print_json({"spaces": rows})
        else:
            print(f"{'space':<24} {'layers':>6} {'models':>10} {'MAdds min..max':>24}")
            for r in rows:
                print(
                    f"{r['name']:<24} {r['num_layers']:>6} {r['num_unique_models']:>10.3g} "
                    f"{_si(r['min_cost']):>11}..{_si(r['max_cost']):<11}"
                )
        return 0
    st = space_stats(args.space, args.buckets, args.replicas, input_size=args.input_size, num_classes=args.num_classes)
    if args.json:
        _print_json(st)
    else:
        for k, v in st.items():
            print(f"{k:>18}: {v}")
    return 0


# --------------------------------------------------------------------------- cost


def cmd_cost(args) -> int:
    if args.torchvision:
        from layernas.evaluate.counting import torchvision_cost

        out = torchvision_cost(args.torchvision)
    else:
        if not args.space or not args.arch:
            raise ValueError("cost needs --space and --arch (or --torchvision NAME)")
        from layernas.core.cost import cost_of

        space = load_space(args.space)
        arch = parse_arch(args.arch, space)
        c = cost_of(space, [arch], input_size=args.input_size, num_classes=args.num_classes)
        out = {"madds": int(c["madds"][0]), "params": int(c["params"][0])}
        if args.count:
            from layernas.evaluate.counting import count_madds_params
            from layernas.evaluate.models import build_model

            model = build_model(space, arch, num_classes=args.num_classes, input_size=args.input_size)
            counted = count_madds_params(model, args.input_size or space.input_size, space.input_channels)
            out["counted"] = counted
    if args.json:
        _print_json(out)
    else:
        print(f"MAdds {out['madds'] / 1e6:.3f}M  params {out['params'] / 1e6:.3f}M")
    return 0


# --------------------------------------------------------------------------- search


def cmd_search(args) -> int:
    from layernas.core.search import SearchConfig, run_search
    from layernas.core.status import search_summary
    from layernas.evaluate.oracle import load_oracle
    from layernas.evaluate.recipe import train_hash as oracle_train_hash
    from layernas.store.files import atomic_write_json, atomic_write_parquet
    from layernas.store.keys import trial_key
    from layernas.store.layout import Layout

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
    )
    # The same hash the workflow's tabular evaluator uses: same oracle, same trial keys.
    train_hash = oracle_train_hash({"evaluator": "tabular", "oracle": args.oracle})

    def key_fn(arch: str) -> str:
        return trial_key(space.space_id, arch, train_hash, args.seed)

    t0 = time.perf_counter()
    engine = run_search(
        space, oracle, cfg, key_fn=key_fn, progress=None if args.quiet else _progress,
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
        _print_json(summary)
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


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layernas", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"layernas {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("space", help="list search spaces and their statistics")
    ssub = sp.add_subparsers(dest="space_cmd", required=True)
    sl = ssub.add_parser("list", help="the built-in spaces")
    sl.add_argument("--json", action="store_true")
    ss = ssub.add_parser("stats", help="size, cost range and the paper's trial bound of a space")
    ss.add_argument("space", help="built-in space name or path to a .yaml space")
    ss.add_argument("--buckets", "-H", type=int, default=100)
    ss.add_argument("--replicas", "-K", type=int, default=3)
    ss.add_argument("--input-size", type=int)
    ss.add_argument("--num-classes", type=int)
    ss.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_space)

    cp = sub.add_parser("cost", help="analytic MAdds and params of an arch (or a torchvision model)")
    cp.add_argument("--space")
    cp.add_argument("--arch", help="dash-joined option indices, or default / min")
    cp.add_argument("--input-size", type=int)
    cp.add_argument("--num-classes", type=int)
    cp.add_argument("--torchvision", metavar="NAME", help="mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large")
    cp.add_argument("--count", action="store_true", help="also build the model and count with hooks")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_cost)

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
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--input-size", type=int)
    se.add_argument("--num-classes", type=int)
    se.add_argument("--out", help="directory for r{r}/l{l}/buckets.parquet, history.parquet, summary.json")
    se.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)

    for mod_name in PLUGIN_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, SpaceError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"layernas: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layernas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
