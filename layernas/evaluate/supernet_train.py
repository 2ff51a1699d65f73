"""Training a `Supernet`, saving it by content hash, and evaluating many children of it.

Training: uniform single-path sampling with the sandwich rule (BigNAS / slimmable networks):
every step runs the largest child, the smallest child and ``random_children`` children drawn
uniformly (each layer's option independently) on the same batch, accumulates their gradients
(the mean of their losses) and takes one optimizer step. Why the sandwich: the largest and
smallest children bound every other child's shared weights, so training both each step keeps
the ends of the cost range trained as well as its (more often sampled) middle. Optional
in-place distillation (``distill``): the other children learn the largest child's soft labels.
The data pipeline is the proxy trials' (resident uint8 tensors, the fixed validation split of
`layernas.evaluate.data`), the schedule theirs (`train.lr_at`, `train.make_optimizer`), and
everything is seeded: the same seed gives the same weights on CPU.

Evaluating a child (`evaluate_children`): extract the stand-alone child (`extract_child`),
recalibrate its BatchNorm statistics on the first ``recal_samples`` training images with the
trials' own `train.recalibrate_bn` (reset, then a cumulative average in train mode), and
evaluate it on the validation split with `train.evaluate`. The supernet is never modified, so
children can be evaluated in any order, with or without recalibration.

Checkpoints: one file (torch.save of the state_dict and a JSON-able meta), written atomically;
its content hash (sha256 over the meta and every tensor's name, dtype, shape and bytes) is
stored inside and checked on load, so a corrupted or edited checkpoint is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layernas.core.space import Space, format_arch
from layernas.evaluate.data import Dataset, Split
from layernas.evaluate.recipe import SupernetConfig  # torch-free: the config check validates it
from layernas.evaluate.supernet import Supernet, extract_child
from layernas.evaluate.train import (
    TrialFailed,
    evaluate,
    lr_at,
    make_optimizer,
    pick_device,
    recalibrate_bn,
    tune_malloc,
)
from layernas.store.files import atomic_write_bytes

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A supernet checkpoint is unreadable, corrupted, or for another space."""


def input_stats(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a split's images in [0, 1] (as the proxy trainer's)."""
    x = split.images.float() / 255.0
    return x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)


def random_arch(space: Space, rng: np.random.Generator) -> tuple[int, ...]:
    """One child drawn uniformly: every layer's option independently."""
    return tuple(int(rng.integers(n)) for n in space.sizes)


def step_archs(supernet: Supernet, rng: np.random.Generator, cfg: SupernetConfig) -> list[tuple[int, ...]]:
    """The children of one step: [largest, smallest] (sandwich) then the random ones."""
    ends = [supernet.largest(), supernet.smallest()] if cfg.sandwich else []
    return ends + [random_arch(supernet.space, rng) for _ in range(cfg.random_children)]


def train_supernet(space: Space, data: Dataset, cfg: SupernetConfig, seed: int,
                   log: Callable[[str], None] = lambda s: None) -> tuple[Supernet, dict[str, Any]]:
    """A supernet of ``space`` trained on ``data.train``; returns it and the run's info (the
    checkpoint's meta: recipe, seed, data, input normalisation, steps, times)."""
    torch.manual_seed(seed)
    device = pick_device(cfg.device)
    tune_malloc()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    net = Supernet(space, num_classes=data.num_classes, input_size=data.input_size,
                   input_channels=data.input_channels).to(device)
    mean, std = (t.to(device) for t in input_stats(data.train))
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    n = len(data.train)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt = make_optimizer(net, cfg, cfg.lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rng = np.random.default_rng(seed)
    net.train()
    t0 = time.perf_counter()
    step, children, last = 0, 0, float("nan")
    while step < total:
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - bs + 1, bs):
            if step >= total:
                break
            idx = order[i:i + bs]
            x, y = (images[idx].float() / 255.0 - mean) / std, labels[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, cfg.lr)
            opt.zero_grad(set_to_none=True)
            archs = step_archs(net, rng, cfg)
            teacher = None
            for j, arch in enumerate(archs):
                out = net(x, arch)
                if teacher is not None:
                    loss = -(teacher * F.log_softmax(out, 1)).sum(1).mean()
                else:
                    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise TrialFailed(f"supernet loss became {float(loss)} at step {step} (arch {format_arch(arch)})")
                (loss / len(archs)).backward()
                if j == 0 and cfg.distill:
                    teacher = F.softmax(out.detach(), 1)
                    last = float(loss.detach())
                elif j == 0:
                    last = float(loss.detach())
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            children += len(archs)
            if step % cfg.log_every == 0 or step == total:
                log(f"step {step}/{total} loss(first child) {last:.4f} lr {opt.param_groups[0]['lr']:.4g}")
    seconds = time.perf_counter() - t0
    info = {
        "format": CHECKPOINT_FORMAT, "space_id": space.space_id, "seed": int(seed), "recipe": asdict(cfg),
        "context": {"num_classes": data.num_classes, "input_size": data.input_size,
                    "input_channels": data.input_channels},
        "data": {"dataset": data.name, "train_images": n, "val_images": len(data.val)},
        "mean": mean.flatten().tolist(), "std": std.flatten().tolist(),
        "steps": step, "children_trained": children, "train_seconds": seconds, "train_loss": last,
    }
    return net.eval(), info


def norm_of(meta: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The input normalisation a supernet was trained with (from its meta)."""
    shape = (1, -1, 1, 1)
    return (torch.tensor(meta["mean"], device=device).view(shape), torch.tensor(meta["std"], device=device).view(shape))


# --------------------------------------------------------------------------- checkpoints

_UNHASHED = ("train_seconds",)  # timing: not part of what the weights are


def state_hash(state: dict[str, torch.Tensor], meta: dict) -> str:
    """16 hex digits of sha256 over the meta (without timings) and every tensor."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k not in _UNHASHED}, sort_keys=True,
                                  default=str).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def save_supernet(path: str | Path, supernet: Supernet, meta: dict) -> str:
    """Write the checkpoint atomically; returns its content hash."""
    state = {k: v.detach().cpu().clone() for k, v in supernet.state_dict().items()}
    key = state_hash(state, meta)
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "hash": key, "meta": json.dumps(meta, sort_keys=True, default=str),
                "state": state}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return key


def load_supernet(path: str | Path, space: Space, device: str | torch.device = "cpu") -> tuple[Supernet, dict, str]:
    """(supernet, meta, hash) of a checkpoint; a CheckpointError when it does not load, its
    content does not hash to the stored hash, or it belongs to another space."""
    try:
        blob = torch.load(io.BytesIO(Path(path).read_bytes()), map_location="cpu", weights_only=True)
        meta, state, stored = json.loads(blob["meta"]), blob["state"], blob["hash"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise CheckpointError(f"supernet checkpoint {path} does not load: {exc}") from None
    if state_hash(state, meta) != stored:
        raise CheckpointError(f"supernet checkpoint {path} is corrupted: its content does not hash to {stored}")
    if meta.get("space_id") != space.space_id:
        raise CheckpointError(f"supernet checkpoint {path} is for space {meta.get('space_id')}, not {space.space_id}")
    with torch.random.fork_rng(devices=[]):
        net = Supernet(space, **meta["context"])
    net.load_state_dict(state)
    return net.to(device).eval(), meta, stored


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_children(supernet: Supernet, archs: Sequence, data: Dataset, meta: dict, recal_samples: int = 2000,
                      recal_batch_size: int = 128, eval_batch_size: int = 128,
                      log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Validation accuracy and loss of each child, after BN recalibration on the first
    ``recal_samples`` training images (0: the supernet's shared running statistics, sliced).
    The recalibration batch size is the proxy trainer's (its batch_size), so the statistics
    are those a trial would compute for the same weights."""
    device = next(supernet.parameters()).device
    mean, std = norm_of(meta, device)
    rows = []
    for arch in archs:
        t0 = time.perf_counter()
        arch = supernet.check(arch)
        child = extract_child(supernet, arch)
        n = recalibrate_bn(child, data.train, mean, std, device, recal_samples, recal_batch_size)
        ev = evaluate(child, data.val, mean, std, device, eval_batch_size, amp=False)
        row = {"arch": format_arch(arch), "accuracy": ev["accuracy"], "loss": ev["loss"],
               "bn_calibration_images": n, "seconds": time.perf_counter() - t0}
        if not math.isfinite(ev["loss"]):
            row["error"] = f"validation loss is {ev['loss']}"
        rows.append(row)
        log(f"child {row['arch']}: accuracy {row['accuracy']:.4f} ({row['seconds']:.2f} s)")
    return rows
