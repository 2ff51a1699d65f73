"""`layernas detdata` (generate the offline COCO-format detection set) and `layernas transfer`
(a found backbone under SSDLite vs a MAdds-matched MobileNetV3-Small, COCO mAP).

Both print a short summary, or one JSON object with ``--json``; progress goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from layernas.cli.output import print_json
from layernas.core.space import load_space, parse_arch
from layernas.detect.data import GenConfig, generate
from layernas.store.keys import config_hash
from layernas.store.layout import METRICS


def _read_config(path: str | None) -> dict:
    """A YAML or JSON file; either the recipe itself or a workflow config with ``transfer.recipe``."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML/JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: must be a mapping of transfer settings")
    if isinstance(raw.get("transfer"), dict):
        raw = raw["transfer"].get("recipe") or {}
    return raw


def cmd_detdata(args) -> int:
    cfg = GenConfig(seed=args.seed, source=args.source, num_train=args.train, num_val=args.val,
                    canvas=args.canvas, min_objects=args.min_objects, max_objects=args.max_objects,
                    min_size=args.min_size, max_size=args.max_size)
    meta = generate(args.out, cfg, overwrite=args.overwrite)
    meta["out"] = str(args.out)
    if args.json:
        print_json(meta)
    else:
        c = meta["counts"]
        state = "up to date" if meta.get("cached") else "written"
        print(f"{args.out}: {state} ({meta['resolved_source']} objects on {cfg.canvas} px canvases; "
              f"train {c['train']['images']} images / {c['train']['boxes']} boxes, "
              f"val {c['val']['images']} / {c['val']['boxes']})")
    return 0


def cmd_transfer(args) -> int:
    from layernas.detect.transfer import TransferConfig, run_transfer  # torch: only for this command

    space = load_space(args.space)
    arch = parse_arch(args.arch, space)
    raw = _read_config(args.config)
    if args.seed is not None:
        raw["seed"] = args.seed
    cfg = TransferConfig.from_dict(raw)
    m = run_transfer(space, arch, args.weights, args.data, cfg, args.out, log=sys.stderr)
    m["config_hash"] = config_hash(m["config"])
    if args.json:
        print_json(m)
        return 0
    print(f"{'backbone':<28} {'MAdds':>8} {'mAP':>6} {'AP50':>6} {'AP75':>6} {'untrained':>9} {'train s':>8}")
    rows = [(f"found {m['arch']}" + ("" if m["pretrained"] else " (scratch)"), m)]
    if "found_scratch" in m:
        rows.append(("found (scratch)", m["found_scratch"]))
    if "reference" in m:
        rows.append((f"mobilenet_v3_small x{m['reference']['width_mult']}", m["reference"]))
    for name, r in rows:
        print(f"{name:<28} {r['backbone_madds'] / 1e6:>7.2f}M {r['map']:>6.3f} {r['ap50']:>6.3f} "
              f"{r['ap75']:>6.3f} {r['untrained_map']:>9.4f} {r['train_seconds']:>8.1f}")
    print(f"metrics: {Path(args.out) / METRICS} ({m['total_seconds']:.0f} s in all)")
    return 0


def add_parser(subparsers) -> None:
    d = GenConfig()
    dp = subparsers.add_parser(
        "detdata", help="generate the offline COCO-format detection set (objects pasted on canvases)",
        description="Write DIR/annotations/instances_{train,val}.json and DIR/{train,val}/*.png; "
                    "deterministic from --seed; an existing set with the same parameters is kept.",
    )
    dp.add_argument("--out", required=True, help="output directory")
    dp.add_argument("--seed", type=int, default=d.seed)
    dp.add_argument("--source", choices=["auto", "fashion-mnist", "digits"], default=d.source,
                    help="object images (auto: Fashion-MNIST when installed, else sklearn digits)")
    dp.add_argument("--train", type=int, default=d.num_train, help=f"train images (default {d.num_train})")
    dp.add_argument("--val", type=int, default=d.num_val, help=f"val images (default {d.num_val})")
    dp.add_argument("--canvas", type=int, default=d.canvas, help=f"image side in px (default {d.canvas})")
    dp.add_argument("--min-objects", type=int, default=d.min_objects)
    dp.add_argument("--max-objects", type=int, default=d.max_objects)
    dp.add_argument("--min-size", type=int, default=d.min_size, help="smallest pasted object side, px")
    dp.add_argument("--max-size", type=int, default=d.max_size, help="largest pasted object side, px")
    dp.add_argument("--overwrite", action="store_true", help="replace a different existing set")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(func=cmd_detdata)

    tp = subparsers.add_parser(
        "transfer", help="SSDLite detection transfer of a found backbone vs MobileNetV3-Small (COCO mAP)",
        description="Train torchvision SSDLite on the found backbone and on a MobileNetV3-Small of "
                    "similar MAdds; evaluate both with pycocotools COCOeval (bbox).",
    )
    tp.add_argument("--space", required=True, help="built-in space name or .yaml path")
    tp.add_argument("--arch", required=True, help="arch string like 0-3-1-..., or default / min")
    tp.add_argument("--weights", help="state_dict of build_model(space, arch) (omit: train from scratch)")
    tp.add_argument("--data", required=True,
                    help="COCO-layout directory: annotations/instances_<split>.json + <split>/ images")
    tp.add_argument("--config", help="YAML/JSON recipe (transfer settings; a workflow config's "
                                     "transfer.recipe is used when present)")
    tp.add_argument("--seed", type=int, help="override the recipe's seed")
    tp.add_argument("--out", required=True, help=f"output directory for {METRICS} and detections*.json")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=cmd_transfer)
