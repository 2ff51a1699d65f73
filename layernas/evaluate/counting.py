"""MAdds and params counted on a built torch module, to check the analytic cost against.

Why a second counter: `cost.py` computes MAdds from the space alone, without building a model,
so nothing there proves that the formula describes the network `models.build_model` trains. This
module measures the built network with forward hooks, under the same conventions as `cost.py`
(only Conv2d and Linear multiply-accumulates count; BN, activations, pooling and residual adds
are free; params are every parameter), so the two can be held exactly equal by the tests, and
checked against torchvision's documented MobileNet figures.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# torchvision builders the counter is checked against; documented `_ops` (GFLOPS, i.e. GMAdds)
# and `num_params` from the Weights enums of torchvision/models/mobilenetv2.py, mobilenetv3.py.
TORCHVISION_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def _conv_madds(module: nn.Conv2d, output: torch.Tensor) -> int:
    out_h, out_w = output.shape[-2:]
    kh, kw = module.kernel_size
    return int(out_h * out_w * module.out_channels * (module.in_channels // module.groups) * kh * kw)


def _linear_madds(module: nn.Linear, inputs: torch.Tensor) -> int:
    # A Linear applied to (B, ..., in) runs once per leading position (tokens, pixels).
    positions = math.prod(inputs.shape[1:-1]) if inputs.dim() > 2 else 1
    return int(positions * module.in_features * module.out_features)


def count_madds_params(module: nn.Module, input_size: int, input_channels: int = 3) -> dict:
    """MAdds of one forward pass on a single ``input_size`` square image, and the param count.

    Hooks see the shapes the network really produces (padding, strides, odd sizes), which is
    the point: a hand formula that gets a spatial size wrong shows up as a mismatch. The module
    is put in eval mode for the pass (so BN and dropout don't need a batch) and restored after.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_madds_params needs an nn.Module, got {type(module).__name__}")
    if int(input_size) <= 0 or int(input_channels) <= 0:
        raise ValueError(f"input_size and input_channels must be positive, got {input_size}, {input_channels}")
    total = 0

    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += _conv_madds(mod, output)
        else:
            total += _linear_madds(mod, args[0])

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # The input follows the module's parameters, so a model already on a GPU counts in place.
    param = next(module.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (None, None)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, int(input_channels), int(input_size), int(input_size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return {"madds": int(total), "params": int(sum(p.numel() for p in module.parameters()))}


def torchvision_cost(name: str) -> dict:
    """Counted MAdds/params of an untrained torchvision MobileNet at 224x224, 1000 classes.

    A reference point for the counter itself: torchvision documents these models' ops, so if
    our conventions drifted from the ones behind the published MobileNet figures, this shows it.
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision model {name!r}; allowed: {', '.join(TORCHVISION_MODELS)}")
    import torchvision.models

    model = getattr(torchvision.models, name)(weights=None, num_classes=1000)
    return count_madds_params(model, 224, 3)
