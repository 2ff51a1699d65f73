"""Hook counter: hand-checked conventions, and torchvision's documented MobileNet figures."""

from __future__ import annotations

import pytest
from torch import nn

from layernas.evaluate.counting import TORCHVISION_MODELS, count_madds_params, torchvision_cost

pytestmark = pytest.mark.usefixtures("one_thread")


def test_counts_conv_and_linear_macs_and_nothing_else():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),  # 8x8 out
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 5, padding=2, groups=8),  # depthwise, 8x8
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    got = count_madds_params(model, input_size=16)
    assert got["madds"] == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 1 * 25 + 8 * 10
    assert got["params"] == 8 * 3 * 9 + 2 * 8 + (8 * 25 + 8) + (8 * 10 + 10)


def test_linear_on_more_than_two_dims_counts_every_leading_position():
    # (1, 3, 8, 8) input: the Linear runs at 3 * 8 positions.
    got = count_madds_params(nn.Linear(8, 4), input_size=8, input_channels=3)
    assert got["madds"] == 3 * 8 * 8 * 4


def test_count_runs_in_eval_mode_and_restores_training_mode():
    seen = []
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    model.register_forward_hook(lambda m, a, o: seen.append(m.training))
    model.train()
    count_madds_params(model, 4, 1)
    assert seen == [False] and model.training


def test_counter_rejects_a_non_module():
    with pytest.raises(TypeError):
        count_madds_params("mobilenet", 224)


# Compared against: (1) the figures in the brief for this module (300.8M / 56.5M / 217.9M MAdds),
# and (2) the installed torchvision's own Weights metadata, `_ops` (GFLOPS, which torchvision
# means as multiply-adds: 0.301 / 0.057 / 0.217) and `num_params` (3,504,872 / 2,542,856 /
# 5,483,032). Counted here: 300,774,272 / 56,510,400 / 216,589,760 MAdds; params are exact.
@pytest.mark.parametrize(
    "name, weights, stated_madds",
    [
        ("mobilenet_v2", "MobileNet_V2_Weights", 300.8e6),
        ("mobilenet_v3_small", "MobileNet_V3_Small_Weights", 56.5e6),
        ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 217.9e6),
    ],
)
def test_torchvision_mobilenets_match_their_documented_ops(name, weights, stated_madds):
    import torchvision.models

    meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
    got = torchvision_cost(name)
    print(name, got, "documented", meta["_ops"], "GFLOPS", meta["num_params"], "params")
    assert got["madds"] == pytest.approx(stated_madds, rel=0.02)
    assert got["madds"] == pytest.approx(meta["_ops"] * 1e9, rel=0.02)
    assert got["params"] == meta["num_params"]


def test_unknown_torchvision_model_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError) as err:
        torchvision_cost("resnet50")
    assert all(n in str(err.value) for n in TORCHVISION_MODELS)
