"""`layernas export`: a found model as TorchScript and/or ONNX plus its card (docs/export.md)."""

from __future__ import annotations

from layernas.cli.output import print_json
from layernas.evaluate.export import FORMAT_CHOICES, export_model


def cmd_export(args) -> int:
    card = export_model(args.results, out=args.out, formats=args.format, rank=args.rank, key=args.key)
    if args.json:
        print_json(card)
        return 0
    where = f"rank {card['rank']} " if card.get("rank") else ""
    print(f"exported {where}{card['key']}: {card['space']['name']} {card['arch']} ({card['options']}), "
          f"{card['cost_text']}, final test accuracy {_acc(card['accuracy']['final_test'])}")
    for fmt, check in card["checks"].items():
        print(f"  {card['dir']}/{card['files'][fmt]}  {fmt}: max |logit difference| vs PyTorch "
              f"{check['max_abs_diff']:.2g} on {check['inputs']} inputs" + (", onnx.checker passed" if fmt == "onnx" else ""))
    print(f"  {card['dir']}/{card['files']['card']}  the card (input: mean {_nums(card['input']['mean'])}, "
          f"std {_nums(card['input']['std'])}, {card['input']['input_channels']}x{card['input']['input_size']}"
          f"x{card['input']['input_size']})")
    print(f"  in {card['export_seconds']:.1f} s")
    return 0


def _acc(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _nums(vs) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in vs) + "]"


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a found model (TorchScript / ONNX) with a model card")
    p.add_argument("results", metavar="RESULTS_DIR", nargs="?", default="results",
                   help="a results directory (default: results), or one final/<key> directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, help="1 = the search's best final model (default), 2 = the next, ...")
    which.add_argument("--key", help="the final model's key (results/final/<key>)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="both", help="default: both")
    p.add_argument("--out", help="output directory (default: RESULTS_DIR/export/<key>)")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_export)
