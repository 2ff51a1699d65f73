"""Deterministic proxy training of one built model on a resident data set.

Why a hand-rolled loop: a proxy trial is seconds long, so per-step Python overhead and data
loading decide throughput (benchmarks/trial_throughput.py compares this loop with a minimal
plain-PyTorch loop). Batches are slices of uint8 tensors already in memory (on the GPU when
there is one), normalised on the fly; the shuffle uses a torch.Generator seeded by the trial
seed, so the same seed gives the same metrics on CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from layernas.evaluate.data import Dataset, Split
from layernas.evaluate.recipe import TrainConfig


class TrialFailed(RuntimeError):
    """Training could not produce a usable model (NaN loss, ...): a failed trial, not a bug."""


def tune_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the OS after every step.

    Why: glibc serves PyTorch's large CPU buffers with mmap and unmaps them on free, so each
    training step page-faults its activations in again. Measured on a default-recipe trial
    (2 cores): 22.6 s -> 18.1 s wall, system time 4.7 s -> 1.4 s, evaluation 4.2 s -> 2.2 s.
    Same effect as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_, but set in
    the process, so it applies to local, script and SLURM jobs alike. No-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30) and mallopt(m_top_pad, 1 << 28)
    return bool(ok)


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device: cuda requested but no GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


def _stats(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    x = split.images.float() / 255.0
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return mean, std


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 0 (per step)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, t)))


class Ema:
    """Exponential moving average of weights, with the usual warm-up of the decay
    (min(decay, (1 + step) / (10 + step))) so short runs are not dominated by the random
    init, and BN running statistics copied from the live model (they are not parameters)."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split: Split, mean, std, device, samples: int, batch_size: int) -> int:
    """Recompute BatchNorm running statistics as a plain average over ``samples`` training
    images with the final weights (BN calibration, as in once-for-all / BigNAS). Why: a proxy
    run is a few dozen steps at a high learning rate, so the running averages mix activations
    of weights that no longer exist. Measured on the default recipe (Fashion-MNIST, 31 steps):
    validation accuracy 0.15 in eval mode against 0.70 with batch statistics; calibration
    closes the gap. Returns the number of images used (0: no BN layer or disabled)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    n = min(samples, len(split))
    if not bns or n <= 0:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was = model.training
    model.train()
    try:
        for i in range(0, n, batch_size):
            x = (split.images[i : min(i + batch_size, n)].to(device).float() / 255.0 - mean) / std
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was)
    return n


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, mean, std, device, batch_size: int, amp: bool) -> dict:
    model.eval()
    correct, loss_sum, n = 0, 0.0, len(split)
    for i in range(0, n, batch_size):
        x = (split.images[i : i + batch_size].to(device, non_blocking=True).float() / 255.0 - mean) / std
        y = split.labels[i : i + batch_size].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp):
            out = model(x)
        loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1)}


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, alpha=0.9, eps=0.0316)


def train_model(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    seed: int,
    log: Callable[[str], None] = lambda s: None,
    lr: float | None = None,
    warmup_epochs: float | None = None,
    ema_decay: float | None = None,
    eval_split: str = "val",
    on_final: Callable[[nn.Module, torch.Tensor, torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place and return metrics on ``eval_split`` (val or test).
    ``on_final(model, mean, std)`` receives the model that was evaluated (the EMA copy when
    ``ema_decay`` is set, after BN calibration) and the input normalisation it was evaluated
    with, so a caller saves exactly what the metrics describe."""
    torch.manual_seed(seed)
    device = pick_device(cfg.device)
    tune_malloc()
    amp = device.type == "cuda"
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    train = data.train
    mean, std = (t.to(device) for t in _stats(train))
    images, labels = train.images.to(device), train.labels.to(device)  # resident
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    n = len(train)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    base_lr = cfg.lr if lr is None else lr
    warmup = int(round((cfg.warmup_epochs if warmup_epochs is None else warmup_epochs) * steps_per_epoch))
    opt = make_optimizer(model, cfg, base_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    ema = Ema(model, ema_decay) if ema_decay else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    step, seen, last_loss = 0, 0, float("nan")
    while step < total:
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            if step >= total:
                break
            idx = order[i : i + cfg.batch_size]
            x = (images[idx].float() / 255.0 - mean) / std
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, base_lr)
            with torch.autocast(device.type, enabled=amp):
                out = model(x)
                loss = F.cross_entropy(out, labels[idx], label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {float(loss)} at step {step}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model, step)
            step += 1
            seen += len(idx)
            if step % cfg.log_every == 0 or step == total:
                last_loss = float(loss.detach())
                log(f"step {step}/{total} loss {last_loss:.4f} lr {opt.param_groups[0]['lr']:.4g}")
    train_seconds = time.perf_counter() - t0
    final_model = ema.module if ema is not None else model
    split = data.val if eval_split == "val" else data.test
    t1 = time.perf_counter()
    calibrated = recalibrate_bn(final_model, train, mean, std, device, cfg.bn_recalibrate_samples,
                                cfg.batch_size)
    ev = evaluate(final_model, split, mean, std, device, cfg.eval_batch_size, amp)
    if not math.isfinite(ev["loss"]):
        raise TrialFailed(f"{eval_split} loss is {ev['loss']}")
    if on_final is not None:
        on_final(final_model, mean, std)
    return {
        f"{eval_split}_accuracy": ev["accuracy"],
        f"{eval_split}_loss": ev["loss"],
        "train_loss": last_loss,
        "steps": step,
        "epochs": step / steps_per_epoch,
        "train_seconds": train_seconds,
        "bn_calibration_images": calibrated,
        "eval_seconds": time.perf_counter() - t1,
        "images_per_second": seen / max(train_seconds, 1e-9),
        "device": str(device),
        "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
    }
