"""Offline data sets as resident uint8 tensors, with a deterministic train/validation split.

Nothing here downloads: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package,
digits from scikit-learn, and CIFAR / ImageFolder from a directory the user names. The small
sets fit in memory, so trials index tensors directly instead of going through a DataLoader
(start-up of worker processes would dominate a seconds-long proxy trial).

The proxy metric is validation accuracy on a split carved from the training set (fixed seed,
independent of the trial seed, so every trial sees the same split); the test split is only
used for final numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from layernas.evaluate.sources import DATASETS, DataError, check_source, load_fashion_mnist_arrays

SPLIT_SEED = 20230501  # fixed: the validation split must not change with the trial seed


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def input_channels(self) -> int:
        return int(self.train.images.shape[1])


def _fashion(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    xtr, ytr = load_fashion_mnist_arrays("train", data_dir)
    xte, yte = load_fashion_mnist_arrays("test", data_dir)
    return xtr[:, None], ytr, xte[:, None], yte, 10


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = len(y) // 5  # digits has no test split: hold out 20% once, deterministically
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test], 10


def _cifar(name: str, data_dir: str | None):
    import torchvision

    check_source(name, data_dir)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        tr = cls(data_dir, train=True, download=False)
        te = cls(data_dir, train=False, download=False)
    except RuntimeError as exc:
        raise DataError(f"{name} in {data_dir}: {exc}") from None
    conv = lambda ds: np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # noqa: E731
    return conv(tr), np.asarray(tr.targets), conv(te), np.asarray(te.targets), len(tr.classes)


def _imagefolder(data_dir: str | None, image_size: int):
    import torchvision
    from torchvision.transforms import functional as F

    check_source("imagefolder", data_dir)
    root = Path(str(data_dir))

    def load(split: str):
        ds = torchvision.datasets.ImageFolder(str(root / split))
        xs = [np.asarray(F.center_crop(F.resize(img.convert("RGB"), image_size), image_size)).transpose(2, 0, 1)
              for img, _ in ds]
        return np.stack(xs).astype(np.uint8), np.asarray(ds.targets), len(ds.classes)

    xtr, ytr, n = load("train")
    xte, yte, _ = load("val")
    return xtr, ytr, xte, yte, n


@lru_cache(maxsize=8)
def load_dataset(name: str, data_dir: str | None = None, val_fraction: float = 0.1,
                 max_train_samples: int | None = None, image_size: int = 64) -> Dataset:
    """Load once per process (cached); the validation split is a fixed-seed slice of train."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if name == "fashion-mnist":
        xtr, ytr, xte, yte, k = _fashion(data_dir)
    elif name == "digits":
        xtr, ytr, xte, yte, k = _digits()
    elif name in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte, k = _cifar(name, data_dir)
    else:
        xtr, ytr, xte, yte, k = _imagefolder(data_dir, image_size)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(ytr))
    n_val = max(1, int(round(len(ytr) * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if max_train_samples:
        train_idx = train_idx[: int(max_train_samples)]

    def split(x, y, idx=None) -> Split:
        if idx is not None:
            x, y = x[idx], y[idx]
        return Split(torch.from_numpy(np.array(x, copy=True)), torch.from_numpy(np.array(y, dtype=np.int64)))

    return Dataset(name, split(xtr, ytr, train_idx), split(xtr, ytr, val_idx), split(xte, yte), k)
