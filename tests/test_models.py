"""Built models: exactly the analytic cost of every shipped space, runnable, and strict on input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layernas.core.cost import cost_of
from layernas.core.space import list_spaces, load_space, parse_arch, space_from_dict
from layernas.evaluate.counting import count_madds_params
from layernas.evaluate.models import InvertedResidual, build_model

NETWORK_SPACES = [n for n in list_spaces() if load_space(n).backbone != "additive"]
ADDITIVE_SPACES = [n for n in list_spaces() if load_space(n).backbone == "additive"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cases():
    """(space, arch) pairs: min, default and random archs; fewer random ones at 224px, where
    one build + count takes a few tenths of a second."""
    for name in NETWORK_SPACES:
        space = load_space(name)
        rng = np.random.default_rng(sum(map(ord, name)))
        n_random = 1 if space.input_size >= 224 else 4
        archs = {"min": parse_arch("min", space), "default": space.default_arch()}
        for i in range(n_random):
            archs[f"random{i}"] = tuple(int(rng.integers(n)) for n in space.sizes)
        for label, arch in archs.items():
            yield pytest.param(name, arch, id=f"{name}-{label}")


def _analytic(space, arch, **ctx):
    c = cost_of(space, [arch], **ctx)
    return {"madds": int(c["madds"][0]), "params": int(c["params"][0])}


@pytest.mark.parametrize("name, arch", list(_cases()))
def test_built_model_has_exactly_the_analytic_cost(name, arch):
    space = load_space(name)
    model = build_model(space, arch)
    assert count_madds_params(model, space.input_size, space.input_channels) == _analytic(space, arch)


@pytest.mark.parametrize(
    "name, ctx",
    [
        ("mobilenet-tiny", {"input_size": 32, "input_channels": 3, "num_classes": 100}),
        ("mobilenet-tiny", {"input_size": 31}),  # odd sizes through stride-2 blocks
        ("mobilenetv3-small-60m", {"input_size": 96, "num_classes": 10}),
        ("nb201-topology", {"input_size": 64, "num_classes": 100, "input_channels": 1}),
        ("nb201-topology", {"input_size": 30}),  # odd stage sizes: shortcut pool must agree
        ("nats-size", {"input_size": 28, "num_classes": 120}),
    ],
)
def test_cost_still_matches_at_other_input_sizes_channels_and_classes(name, ctx):
    space = load_space(name)
    rng = np.random.default_rng(7)
    size = ctx.get("input_size", space.input_size)
    channels = ctx.get("input_channels", space.input_channels)
    for arch in (space.default_arch(), tuple(int(rng.integers(n)) for n in space.sizes)):
        model = build_model(space, arch, **ctx)
        assert count_madds_params(model, size, channels) == _analytic(space, arch, **ctx)


@pytest.mark.parametrize("name", NETWORK_SPACES)
def test_forward_pass_gives_one_logit_per_class(name):
    space = load_space(name)
    model = build_model(space, parse_arch("min", space)).eval()
    x = torch.randn(1, space.input_channels, space.input_size, space.input_size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, space.num_classes) and torch.isfinite(y).all()
    assert model.input_size == space.input_size


def test_small_models_train_a_step():
    for name in ("mobilenet-tiny", "nb201-topology", "nats-size"):
        space = load_space(name)
        model = build_model(space, parse_arch("min", space), num_classes=5)
        x = torch.randn(2, space.input_channels, space.input_size, space.input_size)
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 4]))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_block_activation_and_se_follow_the_block_over_the_network():
    # MobileNetV3-Small: ReLU in the first bneck, hard-swish elsewhere, SE everywhere.
    space = load_space("mobilenetv3-small-60m")
    blocks = [m for m in build_model(space, space.default_arch()).modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == len(space.network["blocks"])
    first, second = blocks[0], blocks[1]
    assert any(isinstance(m, nn.ReLU) for m in first.block[0].modules())
    assert not any(isinstance(m, nn.Hardswish) for m in first.modules())
    assert any(isinstance(m, nn.Hardswish) for m in second.modules())
    se = [m for m in second.modules() if type(m).__name__ == "SqueezeExcitation"]
    assert len(se) == 1 and isinstance(se[0].scale_activation, nn.Hardsigmoid)


def test_residual_only_where_shape_is_kept():
    space = load_space("mobilenet-tiny")
    blocks = [m for m in build_model(space, space.default_arch()).modules() if isinstance(m, InvertedResidual)]
    # stride 2 / 1 / 2 / 1, out filters shared within a stage
    assert [b.use_res_connect for b in blocks] == [False, True, False, True]


def test_swish_space_uses_silu_and_expanded_in_block_has_no_expansion_conv():
    space = load_space("mobilenetv2-300m")
    model = build_model(space, parse_arch("min", space))
    first = next(m for m in model.modules() if isinstance(m, InvertedResidual))
    convs = [m for m in first.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 1 and convs[0].groups == convs[0].in_channels  # depthwise only, no expand
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, nn.Hardswish) for m in model.modules())


@pytest.mark.parametrize(
    "arch",
    [(0, 0), (0, 0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 3), (0, -1, 0, 0, 0, 0, 0), "0-0-x"],
)
def test_bad_arch_is_refused(arch):
    with pytest.raises(ValueError):
        build_model(load_space("mobilenet-tiny"), arch)


def test_arch_string_builds_the_same_model():
    space = load_space("nb201-topology")
    a = count_madds_params(build_model(space, "1-2-3"), 32)
    assert a == count_madds_params(build_model(space, (1, 2, 3)), 32)
    assert count_madds_params(build_model(space, "min"), 32) == _analytic(space, parse_arch("min", space))


@pytest.mark.parametrize("name", ADDITIVE_SPACES)
def test_additive_space_has_no_network(name):
    space = load_space(name)
    with pytest.raises(ValueError, match="additive"):
        build_model(space, space.default_arch())


def test_bad_context_and_non_space_are_refused():
    space = load_space("mobilenet-tiny")
    with pytest.raises(ValueError):
        build_model(space, space.default_arch(), num_classes=0)
    with pytest.raises(TypeError):
        build_model("mobilenet-tiny", space.default_arch())


def test_stem_and_head_widths_may_be_searched_layers():
    space = space_from_dict({
        "name": "refs", "backbone": "mobilenet", "input_size": 16, "input_channels": 1, "num_classes": 3,
        "network": {"act": "relu6", "stem": {"out": "$stem", "kernel": 5, "stride": 1},
                    "blocks": [{"kernel": "$b.kernel", "expanded": "$b", "out": "$stem", "stride": 1, "se": True}],
                    "head": {"conv": "$head", "hidden": 24}},
        "layers": [{"name": "stem", "filters": [16, 8]}, {"name": "b", "kernels": [3, 5], "expanded": [32, 16]},
                   {"name": "head", "filters": [40, 20]}],
    })
    for arch in [(0, 0, 0), (1, 3, 1), (0, 2, 1)]:
        assert count_madds_params(build_model(space, arch), 16, 1) == _analytic(space, arch)
