"""`layernas space list` and `layernas space stats SPACE`: the built-in search spaces, and the
size, cost range and the paper's trial bound of one space."""

from __future__ import annotations

import math

from layernas.cli.output import print_json, si
from layernas.core.bounds import cost_range
from layernas.core.space import list_spaces, load_space


def space_stats(space_name: str, buckets: int = 100, replicas: int = 3, **ctx) -> dict:
    from layernas.core.search import max_trials  # pandas: imported here, so the parser stays fast

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
            print_json({"spaces": rows})
        else:
            print(f"{'space':<24} {'layers':>6} {'models':>10} {'MAdds min..max':>24}")
            for r in rows:
                print(
                    f"{r['name']:<24} {r['num_layers']:>6} {r['num_unique_models']:>10.3g} "
                    f"{si(r['min_cost']):>11}..{si(r['max_cost']):<11}"
                )
        return 0
    st = space_stats(args.space, args.buckets, args.replicas, input_size=args.input_size, num_classes=args.num_classes)
    if args.json:
        print_json(st)
    else:
        for k, v in st.items():
            print(f"{k:>18}: {v}")
    return 0


def add_parser(sub) -> None:
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
