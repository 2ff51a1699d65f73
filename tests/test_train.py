"""Proxy trainer: learns well above chance in one epoch, is deterministic for a seed, and
turns a NaN loss into a TrialFailed."""

from __future__ import annotations

import pytest
import torch

from layernas.core.space import load_space, parse_arch
from layernas.evaluate.data import load_dataset
from layernas.evaluate.models import build_model
from layernas.evaluate.recipe import TrainConfig
from layernas.evaluate.train import TrialFailed, lr_at, train_model

CFG = dict(dataset="digits", epochs=1, batch_size=16, lr=0.2, threads=1, log_every=1000)


def _run(seed: int) -> dict:
    space = load_space("mobilenet-tiny")
    d = load_dataset("digits")
    torch.manual_seed(seed)  # the init is part of the trial: seed before building
    model = build_model(space, parse_arch("min", space), num_classes=10, input_size=8, input_channels=1)
    return train_model(model, d, TrainConfig.from_dict(CFG), seed)


def test_one_epoch_on_digits_is_well_above_chance():
    m = _run(0)
    assert m["val_accuracy"] > 0.5  # chance is 0.1
    assert m["steps"] == len(load_dataset("digits").train) // 16


def test_same_seed_same_metrics():
    a, b = _run(3), _run(3)
    for k in ("val_accuracy", "val_loss", "train_loss"):
        assert a[k] == b[k]


def test_nan_loss_is_a_failed_trial():
    space = load_space("mobilenet-tiny")
    model = build_model(space, parse_arch("min", space), num_classes=10, input_size=8, input_channels=1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrialFailed, match="loss became nan"):
        train_model(model, load_dataset("digits"), TrainConfig.from_dict(CFG), 0)


@pytest.mark.parametrize("field,value", [("optimizer", "adam"), ("batch_size", 0), ("epochs", -1),
                                         ("dataset", "nope"), ("colour", 1)])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig.from_dict({field: value})


def test_schedule_warms_up_then_decays_to_zero():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
