"""The weight-sharing supernet: slicing gives exactly the built child (cost and outputs), BN
recalibration, seeded training, sandwich sampling and content-hashed checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layernas.core.cost import cost_of
from layernas.core.space import load_space, parse_arch, space_from_dict
from layernas.evaluate.counting import count_madds_params
from layernas.evaluate.data import load_dataset
from layernas.evaluate.supernet import Supernet, extract_child, slice_like
from layernas.evaluate.supernet_train import (
    CheckpointError,
    SupernetConfig,
    evaluate_children,
    load_supernet,
    norm_of,
    save_supernet,
    state_hash,
    step_archs,
    train_supernet,
)
from layernas.evaluate.train import recalibrate_bn

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = load_space("mobilenet-tiny")
# Searched stem width shared with a block's output (a residual), expanded widths that can equal
# the input (16 = stem 16: no expansion conv), SE, a hidden Linear, and an `expanded: in` block.
REFS = space_from_dict({
    "name": "refs", "backbone": "mobilenet", "input_size": 16, "input_channels": 1, "num_classes": 3,
    "network": {"act": "relu6", "stem": {"out": "$stem", "kernel": 5, "stride": 1},
                "blocks": [{"kernel": "$b.kernel", "expanded": "$b", "out": "$stem", "stride": 1, "se": True},
                           {"kernel": 3, "expanded": "in", "out": 24, "stride": 2}],
                "head": {"conv": "$head", "hidden": 24}},
    "layers": [{"name": "stem", "filters": [16, 8]}, {"name": "b", "kernels": [3, 5], "expanded": [32, 16]},
               {"name": "head", "filters": [40, 20]}],
})


def _archs(space, n_random=3, seed=0):
    rng = np.random.default_rng(seed)
    out = [parse_arch("max", space), parse_arch("min", space)]
    return out + [tuple(int(rng.integers(n)) for n in space.sizes) for _ in range(n_random)]


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine and statistics, so a wrong slice of them shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1.0 if t is m.weight else 0.0))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("space", [TINY, REFS], ids=["tiny", "refs"])
def test_an_extracted_child_has_exactly_the_analytic_cost(space):
    net = Supernet(space)
    for arch in _archs(space):
        child = extract_child(net, arch)
        c = cost_of(space, [arch])
        assert count_madds_params(child, space.input_size, space.input_channels) == {
            "madds": int(c["madds"][0]), "params": int(c["params"][0])}, arch


@pytest.mark.parametrize("space", [TINY, REFS], ids=["tiny", "refs"])
def test_the_sliced_forward_is_the_extracted_child(space):
    torch.manual_seed(0)
    net = Supernet(space)
    _randomise_bn(net)
    net.eval()
    x = torch.randn(3, space.input_channels, space.input_size, space.input_size)
    for arch in _archs(space, n_random=4, seed=1):
        with torch.no_grad():
            want = extract_child(net, arch)(x)
            got = net(x, arch)
        assert got.shape == want.shape == (3, space.num_classes)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_slicing_takes_the_first_channels_and_the_kernel_centre():
    net = Supernet(TINY)
    arch = tuple(TINY.layers[j].labels.index(lab) for j, lab in
                 enumerate(["f16", "k3e48", "k5e32", "f32", "k3e96", "k5e72", "f128"]))
    child = extract_child(net, arch)
    dw = net.blocks[0].dw.conv.weight  # 72 x 1 x 5 x 5 in the supernet
    assert dw.shape == (72, 1, 5, 5)
    assert torch.equal(child.features[1].block[1][0].weight, dw[:48, :, 1:4, 1:4])
    assert torch.equal(child.features[1].block[2][0].weight, net.blocks[0].project.conv.weight[:16, :48])
    assert torch.equal(child.features[2].block[1][0].weight, net.blocks[1].dw.conv.weight[:32])
    assert torch.equal(child.classifier[-1].weight, net.classifier.weight[:, :128])
    assert slice_like(torch.arange(25.0).view(1, 1, 5, 5), torch.Size([1, 1, 1, 1])).item() == 12.0
    with pytest.raises(ValueError):
        slice_like(torch.zeros(4, 4), torch.Size([5, 4]))


def test_a_child_whose_expanded_width_equals_its_input_skips_the_expansion_conv():
    net = Supernet(REFS)
    assert net.blocks[0].expand is not None  # some child expands 8 -> 16 or 16 -> 32
    assert net.blocks[1].expand is None  # `expanded: in` never expands
    same = (0, REFS.layers[1].labels.index("k5e16"), 0)  # stem 16, expanded 16
    child = extract_child(net, same)
    assert len(child.features[1].block) == 3  # dw, SE, project: no expansion conv
    assert len(extract_child(net, (1, same[1], 0)).features[1].block) == 4  # 8 -> 16 expands


def test_other_backbones_are_refused():
    with pytest.raises(ValueError, match="mobilenet"):
        Supernet(load_space("nats-size"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, 0.2, 192)


CFG = SupernetConfig(epochs=1.0, batch_size=64, lr=0.05, random_children=1)


@pytest.fixture(scope="module")
def trained(digits):
    return train_supernet(TINY, digits, CFG, seed=0)


def test_sandwich_steps_are_largest_smallest_and_seeded_random_children():
    net = Supernet(TINY)
    cfg = SupernetConfig(random_children=3)
    a = step_archs(net, np.random.default_rng(5), cfg)
    assert a[0] == (0,) * 7 == parse_arch("max", TINY) and a[1] == parse_arch("min", TINY) and len(a) == 5
    assert a == step_archs(net, np.random.default_rng(5), cfg)
    assert len(step_archs(net, np.random.default_rng(5), SupernetConfig(sandwich=False, random_children=2))) == 2


def test_training_is_deterministic_from_the_seed(digits, trained):
    net, meta = trained
    assert meta["steps"] == len(digits.train) // 64 and meta["children_trained"] == 3 * meta["steps"]
    again, meta2 = train_supernet(TINY, digits, CFG, seed=0)
    h = state_hash(net.state_dict(), meta)
    assert h == state_hash(again.state_dict(), meta2)
    archs = _archs(TINY, n_random=2)
    first = [(r["accuracy"], r["loss"]) for r in evaluate_children(net, archs, digits, meta, 64)]
    assert first == [(r["accuracy"], r["loss"]) for r in evaluate_children(again, archs, digits, meta2, 64)]
    other, meta3 = train_supernet(TINY, digits, CFG, seed=1)
    assert state_hash(other.state_dict(), meta3) != h


def test_bn_recalibration_changes_the_statistics_and_leaves_the_supernet_alone(digits, trained):
    net, meta = trained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = _archs(TINY)[2]
    shared = extract_child(net, arch)
    child = extract_child(net, arch)
    mean, std = norm_of(meta)
    assert recalibrate_bn(child, digits.train, mean, std, torch.device("cpu"), 100, 32) == 100
    bns = [(a, b) for a, b in zip(shared.modules(), child.modules()) if isinstance(a, nn.BatchNorm2d)]
    # variances: a 1x1 conv after a zero-bias BN has zero mean under any statistics
    assert len(bns) == 14 and all(not torch.allclose(a.running_var, b.running_var) for a, b in bns)
    rows = {n: evaluate_children(net, [arch], digits, meta, n, 32)[0] for n in (0, 100)}
    assert rows[100]["bn_calibration_images"] == 100 and rows[0]["bn_calibration_images"] == 0
    assert rows[100]["loss"] != rows[0]["loss"]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # evaluation never writes


def test_recalibrating_through_the_sliced_forward_matches_the_trainers_recalibration(digits, trained):
    """The supernet's sliced BN (cumulative average when momentum is None) computes the
    statistics `train.recalibrate_bn` computes on the extracted child from the same batches."""
    net, meta = trained
    arch = _archs(TINY)[3]
    mean, std = norm_of(meta)
    child = extract_child(net, arch)
    recalibrate_bn(child, digits.train, mean, std, torch.device("cpu"), 96, 32)
    sup = Supernet(TINY, num_classes=10, input_size=8, input_channels=1)
    sup.load_state_dict(net.state_dict())
    bns = [m for m in sup.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    sup.train()
    with torch.no_grad():
        for i in range(0, 96, 32):
            sup((digits.train.images[i:i + 32].float() / 255.0 - mean) / std, arch)
    for k, v in extract_child(sup, arch).state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, child.state_dict()[k], atol=1e-5, rtol=1e-4)


def test_a_checkpoint_round_trips_by_hash_and_refuses_corruption(tmp_path, trained):
    net, meta = trained
    path = tmp_path / "supernet.pt"
    key = save_supernet(path, net, meta)
    loaded, meta2, key2 = load_supernet(path, TINY)
    assert key2 == key == state_hash(loaded.state_dict(), meta2) and meta2 == meta
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x, _archs(TINY)[2]), net(x, _archs(TINY)[2]))
    data = bytearray(path.read_bytes())
    at = data.rfind(b"\x00" * 8, 0, len(data) - 2000)  # inside the tensor data (zeroed biases)
    data[at] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_supernet(tmp_path / "bad.pt", TINY)
    (tmp_path / "cut.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="does not load"):
        load_supernet(tmp_path / "cut.pt", TINY)
    with pytest.raises(CheckpointError, match="space"):
        load_supernet(path, REFS)


def test_the_recipe_is_checked():
    with pytest.raises(ValueError, match="unknown supernet"):
        SupernetConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="distill"):
        SupernetConfig.from_dict({"distill": True, "sandwich": False})
    with pytest.raises(ValueError, match="children"):
        SupernetConfig.from_dict({"sandwich": False, "random_children": 0})
    assert SupernetConfig.from_dict({"epochs": 2}).epochs == 2
