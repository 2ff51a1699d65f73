"""Torch networks for (space, arch): the models that trials train.

Each backbone mirrors its cost function in `cost.py` layer for layer, because the search buckets
and filters candidates by that analytic cost without ever building them; tests count every
shipped space's built models with `counting.count_madds_params` and require exact equality. Keep
the two in step: a change here without the matching change there silently mis-buckets a search.

Shape follows torchvision's `models/mobilenetv3.py`: a config record per block (one resolved row
of the space's network table), block modules with injectable norm / SE layers, a model taking
the list of records, a private table builder per backbone, and one public `build_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation
from torchvision.ops.misc import Conv2dNormActivation

from layernas.core.cost import Context, make_divisible, resolve_value
from layernas.core.space import ACTIVATIONS, NB201_OPS, Space, parse_arch

_ACTIVATION_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "swish": nn.SiLU,
}


def activation_layer(name: str) -> Callable[..., nn.Module]:
    if name not in _ACTIVATION_LAYERS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return _ACTIVATION_LAYERS[name]


def _init_weights(model: nn.Module) -> None:
    # torchvision's MobileNet init: trials train from scratch, and PyTorch's default conv init
    # trains these deep narrow nets noticeably slower.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- mobilenet

# MobileNetV3's SE: torchvision's block (1x1 convs with bias, ReLU squeeze) with a hard sigmoid.
_HARD_SE = partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)


@dataclass(frozen=True)
class BlockConfig:
    """One inverted-residual (bneck) row with every `$layer` reference resolved."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    stride: int
    se: bool
    act: str


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 bneck. The expansion conv exists only when it changes the width (the t=1
    first block has none), matching how `cost._mobilenet` counts it."""

    def __init__(
        self,
        cfg: BlockConfig,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        se_layer: Callable[[int, int], nn.Module] = _HARD_SE,
    ):
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"block stride must be 1 or 2, got {cfg.stride}")
        if cfg.kernel % 2 == 0:
            raise ValueError(f"block kernel must be odd for 'same' padding, got {cfg.kernel}")
        act = activation_layer(cfg.act)
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(
                Conv2dNormActivation(cfg.in_channels, cfg.expanded, 1, norm_layer=norm_layer, activation_layer=act)
            )
        layers.append(
            Conv2dNormActivation(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                stride=cfg.stride,
                groups=cfg.expanded,
                norm_layer=norm_layer,
                activation_layer=act,
            )
        )
        if cfg.se:
            layers.append(se_layer(cfg.expanded, int(make_divisible(cfg.expanded // 4, 8))))
        layers.append(
            Conv2dNormActivation(cfg.expanded, cfg.out_channels, 1, norm_layer=norm_layer, activation_layer=None)
        )
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNet(nn.Module):
    """Stem conv -> bneck blocks -> optional 1x1 head conv -> pool -> optional hidden Linear ->
    classifier. The head order follows the paper's tables literally (a searched "conv2d 1x1"
    after pooling is a Linear), see the space files' descriptions."""

    def __init__(
        self,
        blocks: Sequence[BlockConfig],
        *,
        stem_out: int,
        stem_kernel: int = 3,
        stem_stride: int = 2,
        head_conv: int | None = None,
        hidden: int | None = None,
        num_classes: int = 1000,
        dropout: float = 0.0,
        act: str = "hswish",
        input_channels: int = 3,
        norm_layer: Callable[..., nn.Module] | None = None,
        se_layer: Callable[[int, int], nn.Module] | None = None,
    ):
        super().__init__()
        if not blocks:
            raise ValueError("a MobileNet needs at least one block")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        norm_layer = norm_layer or nn.BatchNorm2d
        block_kwargs = {"norm_layer": norm_layer} | ({"se_layer": se_layer} if se_layer else {})
        act_layer = activation_layer(act)
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                input_channels, stem_out, stem_kernel, stride=stem_stride, norm_layer=norm_layer,
                activation_layer=act_layer,
            )
        ]
        layers += [InvertedResidual(cfg, **block_kwargs) for cfg in blocks]
        c = blocks[-1].out_channels
        if head_conv is not None:
            layers.append(Conv2dNormActivation(c, head_conv, 1, norm_layer=norm_layer, activation_layer=act_layer))
            c = head_conv
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = []
        if hidden is not None:
            head += [nn.Linear(c, hidden), act_layer(inplace=True)]
            c = hidden
        head += [nn.Dropout(p=dropout), nn.Linear(c, num_classes)]
        self.classifier = nn.Sequential(*head)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _mobilenet_conf(space: Space, arch: tuple[int, ...]) -> tuple[list[BlockConfig], dict[str, Any]]:
    """Resolve the space's network table for one arch, field by field as `cost._mobilenet`."""
    net = space.network

    def value(v: Any, slot: str, where: str) -> int:
        return resolve_value(space, arch, v, slot, where)

    act = net.get("act", "hswish")
    stem = net.get("stem") or {}
    c = value(stem.get("out", 16), "out", "stem.out")
    kwargs: dict[str, Any] = {
        "stem_out": c,
        "stem_kernel": int(stem.get("kernel", 3)),
        "stem_stride": int(stem.get("stride", 2)),
        "act": act,
    }
    blocks = []
    for b, blk in enumerate(net.get("blocks") or []):
        where = f"blocks[{b}]"
        expanded = blk.get("expanded", "in")
        cfg = BlockConfig(
            in_channels=c,
            kernel=value(blk.get("kernel", 3), "kernel", f"{where}.kernel"),
            expanded=c if expanded == "in" else value(expanded, "expanded", f"{where}.expanded"),
            out_channels=value(blk.get("out"), "out", f"{where}.out"),
            stride=int(blk.get("stride", 1)),
            se=bool(blk.get("se", net.get("se", False))),
            act=blk.get("act", act),
        )
        blocks.append(cfg)
        c = cfg.out_channels
    head = net.get("head") or {}
    if head.get("conv") is not None:
        kwargs["head_conv"] = value(head["conv"], "filters", "head.conv")
    if head.get("hidden") is not None:
        kwargs["hidden"] = value(head["hidden"], "filters", "head.hidden")
    kwargs["dropout"] = float(head.get("dropout", 0.0))
    return blocks, kwargs


# --------------------------------------------------------------------------- nb201 / nats


class ReLUConvBN(nn.Sequential):
    """NAS-Bench-201's conv op: pre-activation, bias-free conv, affine BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),  # its input is a node state other edges read too
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The 'none' edge: contributes nothing but keeps the node sum's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def cell_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """One NB201 edge op. Only skip and the convs can change width (skip becomes NATS-Bench's
    stride-1 FactorizedReduce: 1x1 conv + BN); pool and none on such an edge are not defined."""
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1)
    if name == "skip_connect":
        if c_in == c_out:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    if name not in NB201_OPS:
        raise ValueError(f"unknown cell op {name!r}; known: {', '.join(NB201_OPS)}")
    if c_in != c_out:
        raise ValueError(f"op {name} cannot map {c_in} to {c_out} channels")
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return Zero()


class Cell(nn.Module):
    """NB201 cell: node i is the sum over j < i of op_{j->i}(node j); the output is the last
    node. ``edges[i - 1][j]`` names the op of edge j -> i; edges out of node 0 map c_in to
    c_out, all others c_out to c_out."""

    def __init__(self, edges: Sequence[Sequence[str]], c_in: int, c_out: int):
        super().__init__()
        for i, into in enumerate(edges, start=1):
            if len(into) != i:
                raise ValueError(f"node {i} needs {i} incoming edges, got {len(into)}")
        self.nodes = nn.ModuleList(
            nn.ModuleList(cell_op(op, c_in if j == 0 else c_out, c_out) for j, op in enumerate(into))
            for into in edges
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for ops in self.nodes:
            states.append(sum(op(s) for op, s in zip(ops, states)))
        return states[-1]


class ResNetBasicBlock(nn.Module):
    """NB201's stride-2 reduction block between stages. The shortcut pool uses ceil_mode so
    odd sizes give the conv path's (h - 1) // 2 + 1 too (NB201 itself only meets even sizes)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class CellNetwork(nn.Module):
    """Stem conv3x3 + BN -> a sequence of cells and reduction blocks -> BN-ReLU -> GAP -> Linear.
    ``stages`` holds the built cells/blocks, so NB201 and NATS differ only in their tables."""

    def __init__(self, stages: Sequence[nn.Module], stem_out: int, last: int, num_classes: int, input_channels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_channels, stem_out, 3, padding=1, bias=False), nn.BatchNorm2d(stem_out)
        )
        self.cells = nn.Sequential(*stages)
        self.lastact = nn.Sequential(nn.BatchNorm2d(last), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pooling(self.lastact(self.cells(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))


def _nb201_conf(space: Space, arch: tuple[int, ...]) -> list[list[str]]:
    """Edge op names per node for one arch: layer i's option lists the ops of edges j -> i + 1."""
    edges = [[NB201_OPS[k] for k in space.option(i, x)["ops"]] for i, x in enumerate(arch)]
    if [len(e) for e in edges] != [1, 2, 3]:
        raise ValueError(
            f"an nb201 space needs 3 layers with 1, 2 and 3 edges (nodes 1..3), got {[len(e) for e in edges]}"
        )
    return edges


def _nb201(space: Space, arch: tuple[int, ...], ctx: Context) -> nn.Module:
    edges = _nb201_conf(space, arch)
    c = int(space.network.get("stem", 16))
    n = int(space.network.get("cells_per_stage", 5))
    stages: list[nn.Module] = []
    c_stem = c
    for stage in range(3):
        if stage > 0:
            stages.append(ResNetBasicBlock(c, 2 * c))
            c *= 2
        stages += [Cell(edges, c, c) for _ in range(n)]
    return CellNetwork(stages, c_stem, c, ctx.num_classes, ctx.input_channels)


# NATS-Bench's fixed size-space genotype |conv3~0|+|conv3~0|conv3~1|+|skip~0|conv3~1|conv3~2|.
_NATS_GENOTYPE = (
    ("nor_conv_3x3",),
    ("nor_conv_3x3", "nor_conv_3x3"),
    ("skip_connect", "nor_conv_3x3", "nor_conv_3x3"),
)


def _nats(space: Space, arch: tuple[int, ...], ctx: Context) -> nn.Module:
    if space.num_layers != 5:
        raise ValueError("a nats space has exactly 5 layers (channels of the 5 stages)")
    ch = [resolve_value(space, arch, f"${layer.name}", "channels") for layer in space.layers]
    stages = [
        Cell(_NATS_GENOTYPE, ch[0], ch[0]),
        ResNetBasicBlock(ch[0], ch[1]),
        Cell(_NATS_GENOTYPE, ch[1], ch[2]),
        ResNetBasicBlock(ch[2], ch[3]),
        Cell(_NATS_GENOTYPE, ch[3], ch[4]),
    ]
    return CellNetwork(stages, ch[0], ch[4], ctx.num_classes, ctx.input_channels)


def _mobilenet(space: Space, arch: tuple[int, ...], ctx: Context) -> nn.Module:
    blocks, kwargs = _mobilenet_conf(space, arch)
    return MobileNet(blocks, num_classes=ctx.num_classes, input_channels=ctx.input_channels, **kwargs)


def _additive(space: Space, arch: tuple[int, ...], ctx: Context) -> nn.Module:
    raise ValueError(
        f"space {space.name} has backbone 'additive': its options carry explicit costs and there "
        "is no network to build"
    )


_BUILDERS = {"additive": _additive, "mobilenet": _mobilenet, "nb201": _nb201, "nats": _nats}


def build_model(
    space: Space,
    arch: Sequence[int] | str,
    num_classes: int | None = None,
    input_size: int | None = None,
    input_channels: int | None = None,
) -> nn.Module:
    """The network of ``arch`` in ``space``, with exactly the MAdds and params `cost.cost_of`
    gives for the same arguments (None means the space's default).

    The networks are size-agnostic (global pooling before the classifier); ``input_size`` is
    checked and kept as ``model.input_size`` so callers count and train at the size the cost
    assumed.
    """
    if not isinstance(space, Space):
        raise TypeError(f"build_model needs a Space (see space.load_space), got {type(space).__name__}")
    arch = parse_arch(arch, space) if isinstance(arch, str) else space.check_arch(tuple(arch))
    for key, v in (("num_classes", num_classes), ("input_size", input_size), ("input_channels", input_channels)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"{key} must be a positive integer, got {v!r}")
    ctx = Context.of(space, input_size, num_classes, input_channels)
    model = _BUILDERS[space.backbone](space, arch, ctx)
    model.input_size = ctx.input_size
    return model
