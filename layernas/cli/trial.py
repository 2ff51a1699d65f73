"""`layernas trial`: train and evaluate one arch outside the workflow (same code path)."""

from __future__ import annotations

from pathlib import Path

import yaml

from layernas.cli.output import print_json
from layernas.core.space import format_arch, load_space, parse_arch
from layernas.core.status import Status
from layernas.evaluate.recipe import TrainConfig
from layernas.evaluate.trial import run_trial
from layernas.store.keys import train_hash, trial_key


def cmd_trial(args) -> int:
    space = load_space(args.space)
    arch = parse_arch(args.arch, space)
    raw = yaml.safe_load(Path(args.train_config).read_text()) if args.train_config else {}
    if not isinstance(raw, dict):
        raise ValueError(f"{args.train_config}: a training config must be a mapping")
    raw = raw.get("train", raw)  # accept a whole workflow config too
    TrainConfig.from_dict(raw)
    key = trial_key(space.space_id, format_arch(arch), train_hash({"evaluator": "train", "train": raw}), args.seed)
    out = Path(args.out) / key if args.out_is_root else Path(args.out)
    m = run_trial(space, format_arch(arch), raw, args.seed, out)
    m["key"] = key
    m["dir"] = str(out)
    if args.json:
        print_json(m)
    else:
        acc = m.get("accuracy")
        print(f"{m['status']}: {format_arch(arch)} val accuracy {acc if acc is None else round(acc, 4)} "
              f"in {m['wall_seconds']:.1f} s -> {out}" + (f" ({m['error']})" if m.get("error") else ""))
    return 0 if m["status"] == Status.OK else 1


def add_parser(sub) -> None:
    p = sub.add_parser("trial", help="train and evaluate one arch, writing a trial directory")
    p.add_argument("--space", required=True)
    p.add_argument("--arch", required=True, help="dash-joined option indices, or default / min")
    p.add_argument("--train-config", help="YAML/JSON training config (the `train:` block of config.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="trial directory (or, with --out-is-root, where <key>/ goes)")
    p.add_argument("--out-is-root", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trial)
