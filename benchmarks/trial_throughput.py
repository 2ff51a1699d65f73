"""Training throughput of the project's trainer against a minimal hand-written PyTorch loop.

Same model (mobilenet-tiny, default arch), same data (Fashion-MNIST, or digits), same number
of steps and batch size, in the same process; the two are interleaved and repeated so machine
load affects both alike. Prints images/s of both and their ratio (target >= 0.9 on CPU) and
writes benchmarks/results/trial_throughput.json. On a CUDA machine it also samples GPU
utilisation with nvidia-smi during the project's loop.

Usage: python benchmarks/trial_throughput.py [--steps 60] [--batch-size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from layernas.core.space import load_space
from layernas.evaluate.data import DataError, load_dataset
from layernas.evaluate.models import build_model
from layernas.evaluate.recipe import TrainConfig
from layernas.evaluate.train import pick_device, train_model


def plain_loop(model, data, steps: int, batch: int, lr: float, device) -> float:
    """The baseline: the shortest correct loop (SGD, resident tensors, no schedule)."""
    x_all = data.train.images.to(device)
    y_all = data.train.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    n = len(y_all)
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.randperm(n, device=device)
        for i in range(0, n - batch + 1, batch):
            idx = perm[i : i + batch]
            x = x_all[idx].float() / 255.0
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def gpu_util_sampler(stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
            out.append(float(r.stdout.strip().splitlines()[0]))
        except Exception:
            return
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trial_throughput.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_dataset("fashion-mnist", max_train_samples=args.steps * args.batch_size)
    except DataError:
        data = load_dataset("digits")
    space = load_space("mobilenet-tiny")
    device = pick_device("auto")
    n_train = len(data.train)
    epochs = args.steps * args.batch_size / (n_train // args.batch_size * args.batch_size)
    cfg = replace(TrainConfig(dataset=data.name, batch_size=args.batch_size, epochs=epochs, lr=0.05,
                              log_every=10**9), device=device.type)
    ours, plain, util = [], [], []
    for r in range(args.repeats):
        torch.manual_seed(r)
        m = build_model(space, space.default_arch(), num_classes=10, input_size=data.input_size,
                        input_channels=data.input_channels).to(device)
        plain.append(plain_loop(m, data, args.steps, args.batch_size, 0.05, device))
        torch.manual_seed(r)
        m = build_model(space, space.default_arch(), num_classes=10, input_size=data.input_size,
                        input_channels=data.input_channels)
        stop, samples = threading.Event(), []
        th = threading.Thread(target=gpu_util_sampler, args=(stop, samples), daemon=True)
        if device.type == "cuda":
            th.start()
        res = train_model(m, data, cfg, r)
        stop.set()
        ours.append(res["images_per_second"])
        util += samples
        print(f"repeat {r}: layernas {ours[-1]:9.1f} img/s   plain loop {plain[-1]:9.1f} img/s   "
              f"ratio {ours[-1] / plain[-1]:.3f}")
    best_ours, best_plain = max(ours), max(plain)
    result = {
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device),
        "torch_threads": torch.get_num_threads(), "dataset": data.name, "space": "mobilenet-tiny default",
        "batch_size": args.batch_size, "steps": args.steps,
        "layernas_images_per_s": round(best_ours, 1), "plain_images_per_s": round(best_plain, 1),
        "ratio": round(best_ours / best_plain, 3),
        "gpu_utilisation_mean": round(sum(util) / len(util), 1) if util else None,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
