"""`layernas cost`: analytic MAdds and params of an arch of a space (or of a torchvision
model); with --count also the counts of the built model's hooks."""

from __future__ import annotations

from layernas.cli.output import print_json
from layernas.core.cost import cost_of
from layernas.core.space import load_space, parse_arch


def cmd_cost(args) -> int:
    if args.torchvision:
        from layernas.evaluate.counting import torchvision_cost  # torch: only for --torchvision

        out = torchvision_cost(args.torchvision)
    else:
        if not args.space or not args.arch:
            raise ValueError("cost needs --space and --arch (or --torchvision NAME)")
        space = load_space(args.space)
        arch = parse_arch(args.arch, space)
        c = cost_of(space, [arch], input_size=args.input_size, num_classes=args.num_classes)
        out = {"madds": int(c["madds"][0]), "params": int(c["params"][0])}
        if args.count:
            # torch: only for --count
            from layernas.evaluate.counting import count_madds_params
            from layernas.evaluate.models import build_model

            model = build_model(space, arch, num_classes=args.num_classes, input_size=args.input_size)
            counted = count_madds_params(model, args.input_size or space.input_size, space.input_channels)
            out["counted"] = counted
    if args.json:
        print_json(out)
    else:
        print(f"MAdds {out['madds'] / 1e6:.3f}M  params {out['params'] / 1e6:.3f}M")
    return 0


def add_parser(sub) -> None:
    cp = sub.add_parser("cost", help="analytic MAdds and params of an arch (or a torchvision model)")
    cp.add_argument("--space")
    cp.add_argument("--arch", help="dash-joined option indices, or default / min")
    cp.add_argument("--input-size", type=int)
    cp.add_argument("--num-classes", type=int)
    cp.add_argument("--torchvision", metavar="NAME", help="mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large")
    cp.add_argument("--count", action="store_true", help="also build the model and count with hooks")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_cost)
