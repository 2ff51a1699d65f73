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

import gzip
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
SPLIT_SEED = 20230501  # fixed: the validation split must not change with the trial seed


class DataError(ValueError):
    """A data set cannot be loaded; the message says what is missing and how to get it."""


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


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        magic = struct.unpack(">I", fh.read(4))[0]
        ndim = magic & 0xFF
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _fashion_dir(data_dir: str | None) -> Path:
    dirs = [Path(data_dir)] if data_dir else list(FASHION_DIRS)
    for d in dirs:
        if all((d / f).is_file() for f in FASHION_FILES):
            return d
    where = f"train.data_dir: fashion-mnist not found in {data_dir!r}" if data_dir else \
        f"train.dataset: fashion-mnist not found in {', '.join(map(str, dirs))}"
    raise DataError(
        f"{where} (needs the four *-ubyte.gz files): install Debian's package "
        "(as root: apt-get install dataset-fashion-mnist, or `bash scripts/install_data.sh`), "
        "or set train.data_dir to a directory with the four *-ubyte.gz files, or use dataset: digits"
    )


def check_source(name: str, data_dir: str | None) -> None:
    """Fail with a DataError naming ``train.dataset`` / ``train.data_dir`` and the bad value when
    the files of a data set are not where the config says, without loading anything (cheap, so
    the workflow runs it before any job starts)."""
    if name not in DATASETS:
        raise DataError(f"train.dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "fashion-mnist":
        _fashion_dir(data_dir)
    elif name in CIFAR_DIRS:
        sub = CIFAR_DIRS[name]
        if not data_dir or not Path(data_dir).is_dir():
            raise DataError(
                f"train.data_dir: {name} needs a directory holding the extracted python version ({sub}/); "
                f"got {data_dir!r}, {'which is not a directory' if data_dir else 'none set'}. Nothing is downloaded."
            )
        if not (Path(data_dir) / sub).is_dir():
            raise DataError(f"train.data_dir: {data_dir!r} has no {sub}/ (the extracted python version of "
                            f"{name}). Nothing is downloaded.")
    elif name == "imagefolder":
        root = Path(data_dir) if data_dir else None
        if root is None or not (root / "train").is_dir() or not (root / "val").is_dir():
            raise DataError(f"train.data_dir: imagefolder needs a directory with train/ and val/ class folders; "
                            f"got {data_dir!r}")


def load_fashion_mnist_arrays(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels of ``split`` ('train' or 'test'): the
    trials and the detection data generator read the package through this; a DataError when
    the files are not installed."""
    prefix = {"train": "train", "test": "t10k"}[split]
    d = _fashion_dir(data_dir)
    return _read_idx(d / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(d / f"{prefix}-labels-idx1-ubyte.gz")


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
