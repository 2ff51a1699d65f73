"""Where the offline data sets live and whether their files are there: no torch, so the
workflow's controller checks a config's data set before any job starts without paying for a
torch import. Nothing here downloads: Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` package; CIFAR and ImageFolder from a directory the user names."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


class DataError(ValueError):
    """A data set cannot be loaded; the message says what is missing and how to get it."""


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
