"""How well a weight-sharing supernet ranks children against stand-alone proxy training.

Picks archs of a mobilenet space (default mobilenet-tiny): ``--archs`` spread over its whole
MAdds range (one per equal-width cost bin) plus ``--in-target`` more inside the config's
target range (config.yaml: 3.5M-4.0M MAdds). Each is proxy-trained stand-alone with the
config's ``train:`` recipe and seed (`layernas.evaluate.trial.run_trial`, the trials' own
code; records are kept by trial key under ``--work``/trials, so a rerun trains nothing
twice). One supernet per variant is trained (`layernas.evaluate.supernet_train`, checkpoint
kept under ``--work`` by the hash of its settings) and every arch is evaluated through it with
and without BN recalibration. Kendall tau and Spearman rho (scipy.stats) between supernet and
stand-alone accuracy are reported over all archs and within the target range; with
``--noise-seed S`` (default 1) the in-target archs are trained again with seed S, and tau/rho between the
two stand-alone runs give the proxy's own reproducibility (the ceiling a supernet can reach).

Usage: python benchmarks/supernet_ranking.py [--archs 30] [--in-target 16] [--supernet-seeds 0,1,2]
       [--epochs 2] [--recal-samples 2000] [--variant NAME:key=value,...] [--noise-seed 1]
       [--arch-seed 0] [--device cpu] [--out benchmarks/results/supernet_ranking.json]
Each supernet is scored twice per child: its validation accuracy and minus its validation loss.
Stand-alone trainings take 5-30 s each on the 2-core VM (load-dependent); run it in the background.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from layernas.core.cost import cost_of
from layernas.core.space import format_arch, load_space, parse_arch
from layernas.evaluate.data import load_dataset
from layernas.evaluate.sources import DataError, check_source
from layernas.evaluate.trial import run_trial
from layernas.store.keys import train_hash, trial_key
from layernas.store.layout import METRICS


def pick_archs(space, n_spread: int, n_target: int, lo: float, hi: float, seed: int) -> list[tuple[int, ...]]:
    """``n_spread`` archs, one per equal-width MAdds bin over [min, max] (the nearest free one
    where a bin is empty), then ``n_target`` more drawn inside [lo, hi]."""
    rng = np.random.default_rng(seed)
    pool = {parse_arch("min", space), parse_arch("max", space)}
    pool |= {tuple(int(x) for x in row) for row in np.stack([rng.integers(0, n, 20000) for n in space.sizes], 1)}
    pool = sorted(pool)
    cost = cost_of(space, pool)["madds"]
    edges = np.linspace(cost.min(), cost.max(), n_spread + 1)
    chosen: list[int] = []
    for i in range(n_spread):
        inside = [j for j in np.flatnonzero((cost >= edges[i]) & (cost <= edges[i + 1])) if j not in chosen]
        if inside:
            chosen.append(int(rng.choice(inside)))
        else:
            centre = (edges[i] + edges[i + 1]) / 2
            chosen.append(next(int(j) for j in np.argsort(np.abs(cost - centre)) if j not in chosen))
    free = [j for j in np.flatnonzero((cost >= lo) & (cost <= hi)) if j not in chosen]
    chosen += [int(j) for j in rng.choice(free, size=min(n_target, len(free)), replace=False)]
    return [pool[j] for j in chosen]


def standalone(space, archs, train_cfg: dict, seed: int, work: Path, log) -> list[dict]:
    recipe = train_hash({"evaluator": "train", "train": train_cfg})
    rows = []
    for i, arch in enumerate(archs):
        a = format_arch(arch)
        out = work / "trials" / trial_key(space.space_id, a, recipe, seed)
        if (out / METRICS).exists():
            m = json.loads((out / METRICS).read_text())
        else:
            m = run_trial(space, a, train_cfg, seed, out, threads=1)
        log(f"stand-alone {i + 1}/{len(archs)} {a} (seed {seed}): {m.get('accuracy')} in {m.get('wall_seconds', 0):.1f} s")
        rows.append(m)
    return rows


def ranking(x, y) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return {"n": int(len(x)), "kendall_tau": None, "spearman_rho": None}
    tau, p_tau = stats.kendalltau(x, y)
    rho, p_rho = stats.spearmanr(x, y)
    return {"n": int(len(x)), "kendall_tau": float(tau), "kendall_p": float(p_tau),
            "spearman_rho": float(rho), "spearman_p": float(p_rho)}


def rank_blocks(score, acc, in_target, mean2) -> dict:
    """tau/rho of a supernet score against stand-alone accuracy: all archs, in the target range,
    and in the target range against the mean of two stand-alone seeds (when there are two)."""
    score, acc, mask = np.asarray(score, float), np.asarray(acc, float), np.asarray(in_target)
    out = {"all": ranking(score, acc), "in_target": ranking(score[mask], acc[mask])}
    if mean2 is not None:
        out["in_target_vs_seed_mean"] = ranking(score[mask], mean2)
    return out


SCORES = ("accuracy", "neg_loss")  # a child's supernet validation accuracy, or minus its validation loss


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    out = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        out[k] = yaml.safe_load(v)
    return name, out


def supernet_for(space, name: str, overrides: dict, seed: int, args, train_cfg, log):
    """(supernet, meta, hash, data, recal samples): trained, or loaded from ``--work`` when a
    checkpoint of the same settings exists."""
    from layernas.evaluate.supernet_train import SupernetConfig, load_supernet, save_supernet, train_supernet

    overrides = dict(overrides)
    train_samples = overrides.pop("train_samples", args.supernet_train_samples)
    recal = int(overrides.pop("recal", args.recal_samples))
    if "epochs" in overrides:
        overrides["epochs"] = float(overrides["epochs"])
    cfg = SupernetConfig.from_dict({"epochs": float(args.epochs), "threads": args.threads, "device": args.device,
                                    **overrides})
    data = load_dataset(train_cfg["dataset"], train_cfg.get("data_dir"), float(train_cfg.get("val_fraction", 0.1)),
                        train_samples)
    settings = {"space": space.space_id, "cfg": cfg.__dict__, "data": [data.name, len(data.train)], "seed": seed}
    path = args.work / f"supernet-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}.pt"
    if path.exists():
        net, meta, key = load_supernet(path, space, device=args.device)
        log(f"[{name} seed {seed}] reusing {path} ({meta['train_seconds']:.0f} s of training when made)")
    else:
        log(f"[{name} seed {seed}] training supernet: {cfg} on {len(data.train)} images")
        net, meta = train_supernet(space, data, cfg, seed, log=lambda s: log(f"[{name} seed {seed}] {s}"))
        key = save_supernet(path, net, meta)
    return net, meta, key, data, recal


def run_variant(space, name, overrides, seed, args, train_cfg, archs, in_target, acc, mean2, log) -> dict:
    import torch

    from layernas.evaluate.supernet_train import evaluate_children

    net, meta, key, data, recal = supernet_for(space, name, overrides, seed, args, train_cfg, log)
    torch.set_num_threads(args.threads)
    out = {"name": name, "seed": seed, "recipe": meta["recipe"], "train_images": meta["data"]["train_images"],
           "hash": key, "steps": meta["steps"], "children_trained": meta["children_trained"],
           "supernet_train_seconds": meta["train_seconds"], "recal_samples": recal}
    for mode, samples in (("recal", recal), ("no_recal", 0)):
        if mode not in args.modes.split(","):
            continue
        rows = evaluate_children(net, archs, data, meta, recal_samples=samples,
                                 recal_batch_size=int(train_cfg.get("batch_size", 128)),
                                 eval_batch_size=int(train_cfg.get("eval_batch_size", 128)))
        m = out[mode] = {"accuracy": [r["accuracy"] for r in rows], "loss": [r["loss"] for r in rows],
                         "seconds_per_child": float(np.mean([r["seconds"] for r in rows]))}
        for score in SCORES:
            m[score] = m.get(score) if score == "accuracy" else [-x for x in m["loss"]]
            m[f"rank_{score}"] = rank_blocks(m[score], acc, in_target, mean2)
        r = m["rank_accuracy"]
        log(f"[{name} seed {seed}] {mode}: accuracy: all tau {r['all']['kendall_tau']:.3f}, in target tau "
            f"{r['in_target']['kendall_tau']:.3f}; minus loss: in target tau "
            f"{m['rank_neg_loss']['in_target']['kendall_tau']:.3f} | {m['seconds_per_child']:.2f} s/child")
    return out


def summarize(results: list[dict], acc, in_target, mean2) -> dict:
    """Per variant, mode and score: mean and sd of tau/rho over the supernet seeds, and the
    ranking of the seeds' mean score (an ensemble of the supernets)."""
    out: dict = {}
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name]
        for mode in ("recal", "no_recal"):
            if mode not in runs[0]:
                continue
            for score in SCORES:
                blocks = [r[mode][f"rank_{score}"] for r in runs]
                entry = {"seeds": [r["seed"] for r in runs]}
                for where in blocks[0]:
                    for stat in ("kendall_tau", "spearman_rho"):
                        v = [b[where][stat] for b in blocks]
                        entry[f"{where}_{stat}_mean"] = float(np.mean(v))
                        entry[f"{where}_{stat}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                ens = np.mean([r[mode][score] for r in runs], axis=0)
                entry["ensemble"] = rank_blocks(ens, acc, in_target, mean2)
                out[f"{name}/{mode}/{score}"] = entry
    return out


def print_table(results, summary, noise) -> None:
    head = f"{'variant':<14} {'seed':>4} {'mode':<8} {'score':<9} {'tau all':>7} {'rho all':>7} {'tau tgt':>7} " \
           f"{'rho tgt':>7} {'tau tgt2':>8} {'train s':>7} {'s/child':>7}"
    print("\n" + head)

    def fmt(b, where, stat):
        v = b.get(where, {}).get(stat)
        return f"{v:7.3f}" if v is not None else f"{'':>7}"

    for r in results:
        for mode in ("recal", "no_recal"):
            for score in SCORES if mode in r else ():
                b = r[mode][f"rank_{score}"]
                print(f"{r['name']:<14} {r['seed']:>4} {mode:<8} {score:<9} {fmt(b, 'all', 'kendall_tau')} "
                      f"{fmt(b, 'all', 'spearman_rho')} {fmt(b, 'in_target', 'kendall_tau')} "
                      f"{fmt(b, 'in_target', 'spearman_rho')} {fmt(b, 'in_target_vs_seed_mean', 'kendall_tau'):>8} "
                      f"{r['supernet_train_seconds']:7.0f} {r[mode]['seconds_per_child']:7.2f}")
    for key, e in summary.items():
        if len(e["seeds"]) < 2:
            continue
        name, mode, score = key.split("/")
        tgt2 = e.get("in_target_vs_seed_mean_kendall_tau_mean")
        print(f"{name:<14} {'mean':>4} {mode:<8} {score:<9} {e['all_kendall_tau_mean']:7.3f} "
              f"{e['all_spearman_rho_mean']:7.3f} {e['in_target_kendall_tau_mean']:7.3f} "
              f"{e['in_target_spearman_rho_mean']:7.3f} {tgt2 if tgt2 is None else f'{tgt2:8.3f}'}   "
              f"(sd of tau in target {e['in_target_kendall_tau_sd']:.3f})")
        b = e["ensemble"]
        print(f"{name:<14} {'ens':>4} {mode:<8} {score:<9} {fmt(b, 'all', 'kendall_tau')} "
              f"{fmt(b, 'all', 'spearman_rho')} {fmt(b, 'in_target', 'kendall_tau')} "
              f"{fmt(b, 'in_target', 'spearman_rho')} {fmt(b, 'in_target_vs_seed_mean', 'kendall_tau'):>8}")
    if noise:
        print(f"{'proxy seeds':<14} {'':>4} {'':<8} {'':<9} {'':>7} {'':>7} "
              f"{noise['in_target']['kendall_tau']:7.3f} {noise['in_target']['spearman_rho']:7.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="mobilenet-tiny")
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--archs", type=int, default=30)
    ap.add_argument("--in-target", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="the stand-alone trainings' seed")
    ap.add_argument("--arch-seed", type=int, default=0, help="which archs are picked")
    ap.add_argument("--supernet-seeds", default="0", help="comma list: one supernet per seed and variant")
    ap.add_argument("--epochs", type=float, default=2.0, help="supernet epochs (over its training images)")
    ap.add_argument("--supernet-train-samples", type=int, default=None,
                    help="supernet training images (default: the config's max_train_samples)")
    ap.add_argument("--recal-samples", type=int, default=2000, help="BN recalibration images per child")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value,... supernet recipe overrides (and train_samples, recal)")
    ap.add_argument("--noise-seed", type=int, default=1, help="retrain the in-target archs with this seed (-1: no)")
    ap.add_argument("--modes", default="recal,no_recal", help="evaluations per supernet: recal, no_recal")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: stand-alone trainings and supernets")
    ap.add_argument("--standalone-only", action="store_true", help="fill the trial records and stop")
    ap.add_argument("--supernet-only", action="store_true", help="train (or load) the supernets and stop")
    ap.add_argument("--work", type=Path, default=Path("results-supernet-bench"))
    ap.add_argument("--out", default="benchmarks/results/supernet_ranking.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    train_cfg = dict(config["train"], device=args.device)
    try:
        check_source(train_cfg["dataset"], train_cfg.get("data_dir"))
    except DataError as exc:
        print(f"{exc}: using digits", flush=True)
        train_cfg["dataset"] = "digits"
    if args.supernet_train_samples is None:
        args.supernet_train_samples = train_cfg.get("max_train_samples")
    lo, hi = float(config["target"]["min"]), float(config["target"]["max"])
    space = load_space(args.space)
    archs = pick_archs(space, args.archs, args.in_target, lo, hi, args.arch_seed)
    madds = cost_of(space, archs)["madds"]
    in_target = [bool(lo <= m <= hi) for m in madds]
    args.work.mkdir(parents=True, exist_ok=True)
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    seeds = [int(s) for s in args.supernet_seeds.split(",")]

    def log(s: str) -> None:
        print(f"{time.perf_counter() - t_start:7.0f}s {s}", flush=True)

    if args.supernet_only:
        for n, o in variants:
            for seed in seeds:
                supernet_for(space, n, o, seed, args, train_cfg, log)
        return
    log(f"{len(archs)} archs, {sum(in_target)} in the target range {lo / 1e6:g}M-{hi / 1e6:g}M MAdds")
    alone = standalone(space, archs, train_cfg, args.seed, args.work, log)
    acc = [m["accuracy"] for m in alone]
    noise, mean2 = None, None
    if args.noise_seed >= 0:
        tgt = [a for a, t in zip(archs, in_target) if t]
        again = [m["accuracy"] for m in standalone(space, tgt, train_cfg, args.noise_seed, args.work, log)]
        first = [a for a, t in zip(acc, in_target) if t]
        noise = {"seed": args.noise_seed, "accuracy": again, "in_target": ranking(again, first),
                 "madds_in_target": ranking(np.asarray(madds)[np.asarray(in_target)], first)}
        mean2 = (np.asarray(first) + np.asarray(again)) / 2
        log(f"stand-alone seed {args.seed} vs {args.noise_seed}, in target: tau {noise['in_target']['kendall_tau']:.3f}")
    if args.standalone_only:
        return
    results = [run_variant(space, n, o, seed, args, train_cfg, archs, in_target, acc, mean2, log)
               for n, o in variants for seed in seeds]
    summary = summarize(results, acc, in_target, mean2)
    print_table(results, summary, noise)
    rows = [{"arch": format_arch(a), "madds": int(m), "in_target": t, "standalone_accuracy": s["accuracy"],
             "standalone_seconds": s.get("wall_seconds")} for a, m, t, s in zip(archs, madds, in_target, alone)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(), "settings": {k: str(v) for k, v in vars(args).items()},
        "space": space.space_id, "dataset": train_cfg["dataset"], "target": [lo, hi], "train": train_cfg,
        "madds_vs_standalone": rank_blocks(madds, acc, in_target, mean2),
        "standalone_mean_seconds": float(np.mean([s.get("wall_seconds") or 0 for s in alone])),
        "noise": noise, "summary": summary, "variants": results, "archs": rows,
        "wall_seconds": time.perf_counter() - t_start,
    }, indent=2))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
