"""Offline data sets: each loads, splits are deterministic and disjoint, missing paths fail clearly."""

from __future__ import annotations

import subprocess

import pytest
import torch

from layernas.evaluate.data import DataError, load_dataset


def test_digits_loads_with_fixed_disjoint_splits():
    d = load_dataset("digits")
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (1, 8, 8)
    assert len(d.train) + len(d.val) + len(d.test) == 1797 and d.num_classes == 10
    again = load_dataset.__wrapped__("digits")
    assert torch.equal(again.val.labels, d.val.labels)
    assert int(d.train.images.max()) > 200  # scaled from 0..16 to 0..255


def _has_fashion() -> bool:
    return subprocess.run(["dpkg", "-s", "dataset-fashion-mnist"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_fashion(), reason="Debian package dataset-fashion-mnist is not installed "
                    "(make setup installs it as root; else: sudo apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_loads_from_the_debian_package():
    d = load_dataset("fashion-mnist")
    assert d.train.images.shape[1:] == (1, 28, 28)
    assert len(d.train) + len(d.val) == 60000 and len(d.test) == 10000
    assert len(d.val) == 6000


def test_max_train_samples_trims_only_train():
    d = load_dataset("digits", max_train_samples=100)
    assert len(d.train) == 100 and len(d.val) == len(load_dataset("digits").val)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_user_directories_must_exist(tmp_path, name):
    with pytest.raises(DataError, match="data_dir"):
        load_dataset(name, str(tmp_path / "missing"))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset("mnist-but-typo")
