"""A weight-sharing supernet for the ``mobilenet`` backbone, and the children it holds.

One network holds the largest option of every layer (the widest stem, for every block the
widest input, the largest kernel, the widest expansion and SE squeeze, the widest output; the
widest head). Any arch of the space runs through it by *slicing*, as Once-for-All and
BigNAS do:

- widths: a child of width c uses the first c channels of every tensor that width indexes
  (conv in/out channels, depthwise groups, SE squeeze, Linear in/out features, BN entries);
- kernels: a k x k child kernel is the centre of the supernet's K x K one (offset (K - k) // 2);
  no kernel-transformation matrix (OFA's): the shared centre is trained by every kernel size;
- BatchNorm: *shared, sliced* (a child's BN of width c is the first c entries of the weight,
  bias and running statistics). Why not per-width private BN (slimmable networks): the
  children's running statistics are recalibrated before every evaluation anyway (BN
  recalibration, `evaluate_children`), which is what fixes their mismatch, and sliced BN keeps
  a child a plain sub-tensor of the supernet, so `extract_child` is a copy;
- the expansion conv: `models.InvertedResidual` has none when a block's expanded width equals
  its input width. The supernet has one at (max in, max expanded) in every block where some
  arch can have expanded != in (a searched ``expanded``); a child whose expanded equals its
  input skips it, exactly as its stand-alone network does, and its depthwise conv then slices
  the same first channels it would after an expansion. ``expanded: in`` blocks never have one.

The sliced forward `Supernet.forward(x, arch)` computes exactly the network
`models.build_model(space, arch)` builds, with the weights `extract_child` copies into it
(tests hold the two to 1e-5 and the extracted child's MAdds/params to `cost.cost_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layernas.core.cost import Context, make_divisible
from layernas.core.space import Space, parse_arch
from layernas.evaluate.models import (
    BlockConfig,
    _init_weights,
    _mobilenet_conf,
    activation_layer,
    build_model,
)


def _conf(space: Space, arch: tuple[int, ...]) -> tuple[list[BlockConfig], dict[str, Any]]:
    # `models._mobilenet_conf` resolves the network table for one arch, field by field as the
    # cost does; reusing it (not a copy) keeps the supernet's children the networks trials build.
    return _mobilenet_conf(space, arch)


def squeeze_width(expanded: int) -> int:
    """The SE squeeze width of `models.InvertedResidual` for an expanded width."""
    return int(make_divisible(expanded // 4, 8))


def _probe_archs(space: Space) -> list[tuple[int, ...]]:
    """The default arch and every arch that differs from it in one layer: each network field
    reads one layer (or none), so these archs show every value each field takes."""
    base = space.default_arch()
    out = [base]
    for j, n in enumerate(space.sizes):
        out += [base[:j] + (o,) + base[j + 1:] for o in range(n) if o != base[j]]
    return out


@dataclass(frozen=True)
class SuperBlock:
    """A block's largest shape, and whether any child expands (so the supernet needs the conv)."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze: int  # 0: no SE
    stride: int
    se: bool
    act: str
    has_expand: bool


def supernet_shape(space: Space) -> tuple[list[SuperBlock], dict[str, Any]]:
    """Per block the maximum of every width and kernel over the space, and the stem/head maxima."""
    if space.backbone != "mobilenet":
        raise ValueError(f"a supernet is defined for backbone 'mobilenet' only; space {space.name} is "
                         f"{space.backbone!r}")
    confs = [_conf(space, a) for a in _probe_archs(space)]
    blocks = []
    for b, spec in enumerate(space.network.get("blocks") or []):
        rows = [c[0][b] for c in confs]
        ins = {r.in_channels for r in rows}
        exps = {r.expanded for r in rows}
        # Expanded and input widths read different layers (or one is constant), so any pair of
        # their values occurs; a field pair reading one layer only over-approximates: a conv no
        # child uses stays untouched.
        searched = spec.get("expanded", "in") != "in"
        has_expand = searched and not (len(ins) == 1 and ins == exps)
        first = rows[0]
        blocks.append(SuperBlock(
            in_channels=max(ins), kernel=max(r.kernel for r in rows), expanded=max(exps),
            out_channels=max(r.out_channels for r in rows),
            squeeze=max(squeeze_width(e) for e in exps) if first.se else 0,
            stride=first.stride, se=first.se, act=first.act, has_expand=has_expand,
        ))
    kw = [c[1] for c in confs]
    top = {"stem_out": max(k["stem_out"] for k in kw), "stem_kernel": kw[0]["stem_kernel"],
           "stem_stride": kw[0]["stem_stride"], "act": kw[0]["act"], "dropout": kw[0]["dropout"],
           "head_conv": max(k["head_conv"] for k in kw) if "head_conv" in kw[0] else None,
           "hidden": max(k["hidden"] for k in kw) if "hidden" in kw[0] else None}
    return blocks, top


class ConvBN(nn.Module):
    """Bias-free conv + BN at the largest shape, run sliced to a child's."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, depthwise: bool = False):
        super().__init__()
        self.stride, self.depthwise = stride, depthwise
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2,
                              groups=c_out if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, c_out: int, kernel: int | None = None) -> torch.Tensor:
        w = self.conv.weight
        c_in = 1 if self.depthwise else x.shape[1]
        k = kernel or w.shape[-1]
        off = (w.shape[-1] - k) // 2
        w = w[:c_out, :c_in, off:off + k, off:off + k]
        x = F.conv2d(x, w, None, self.stride, (k - 1) // 2, 1, c_out if self.depthwise else 1)
        return sliced_bn(self.bn, x, c_out)


def sliced_bn(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """`nn.BatchNorm2d.forward` on the first ``c`` entries: in training mode the running
    statistics of those entries update in place (cumulative average when momentum is None)."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training, factor, bn.eps)


class SuperBlockModule(nn.Module):
    def __init__(self, s: SuperBlock):
        super().__init__()
        self.shape = s
        self.expand = ConvBN(s.in_channels, s.expanded, 1) if s.has_expand else None
        self.dw = ConvBN(s.expanded, s.expanded, s.kernel, stride=s.stride, depthwise=True)
        if s.se:
            self.fc1 = nn.Conv2d(s.expanded, s.squeeze, 1)
            self.fc2 = nn.Conv2d(s.squeeze, s.expanded, 1)
        self.project = ConvBN(s.expanded, s.out_channels, 1)
        self.act = activation_layer(s.act)()

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        e = cfg.expanded
        out = x
        if e != cfg.in_channels:
            out = self.act(self.expand(out, e))
        out = self.act(self.dw(out, e, cfg.kernel))
        if cfg.se:
            sq = squeeze_width(e)
            s = F.adaptive_avg_pool2d(out, 1)
            s = F.relu(F.conv2d(s, self.fc1.weight[:sq, :e], self.fc1.bias[:sq]))
            s = F.hardsigmoid(F.conv2d(s, self.fc2.weight[:e, :sq], self.fc2.bias[:e]))
            out = out * s
        out = self.project(out, cfg.out_channels)
        return out + x if cfg.stride == 1 and cfg.in_channels == cfg.out_channels else out

    def active(self, cfg: BlockConfig) -> list[nn.Module]:
        """This block's parameter modules a child uses, in the order of its stand-alone block."""
        mods: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            mods += [self.expand.conv, self.expand.bn]
        mods += [self.dw.conv, self.dw.bn] + ([self.fc1, self.fc2] if cfg.se else [])
        return mods + [self.project.conv, self.project.bn]


class Supernet(nn.Module):
    """The largest network of a mobilenet space; ``forward(x, arch)`` runs one child by slicing."""

    def __init__(self, space: Space, num_classes: int | None = None, input_size: int | None = None,
                 input_channels: int | None = None):
        super().__init__()
        ctx = Context.of(space, input_size, num_classes, input_channels)
        self.space, self.ctx = space, ctx
        shapes, top = supernet_shape(space)
        self.top = top
        self.stem = ConvBN(ctx.input_channels, top["stem_out"], top["stem_kernel"], stride=top["stem_stride"])
        self.blocks = nn.ModuleList(SuperBlockModule(s) for s in shapes)
        c = shapes[-1].out_channels
        self.head = ConvBN(c, top["head_conv"], 1) if top["head_conv"] is not None else None
        c = top["head_conv"] or c
        self.hidden = nn.Linear(c, top["hidden"]) if top["hidden"] is not None else None
        self.classifier = nn.Linear(top["hidden"] or c, ctx.num_classes)
        self.act = activation_layer(top["act"])()
        self._confs: dict[tuple[int, ...], tuple[list[BlockConfig], dict[str, Any]]] = {}
        _init_weights(self)  # the stand-alone networks' init (torchvision's MobileNet)

    def check(self, arch: Sequence[int] | str) -> tuple[int, ...]:
        return parse_arch(arch, self.space) if isinstance(arch, str) else self.space.check_arch(tuple(arch))

    def conf(self, arch: Sequence[int] | str) -> tuple[list[BlockConfig], dict[str, Any]]:
        arch = self.check(arch)
        if arch not in self._confs:
            if len(self._confs) >= 10_000:  # training draws new archs every step: keep it bounded
                self._confs.clear()
            self._confs[arch] = _conf(self.space, arch)
        return self._confs[arch]

    def largest(self) -> tuple[int, ...]:
        return parse_arch("max", self.space)

    def smallest(self) -> tuple[int, ...]:
        return parse_arch("min", self.space)

    def forward(self, x: torch.Tensor, arch: Sequence[int] | str) -> torch.Tensor:
        blocks, kw = self.conf(arch)
        x = self.act(self.stem(x, kw["stem_out"]))
        for mod, cfg in zip(self.blocks, blocks):
            x = mod(x, cfg)
        if self.head is not None:
            x = self.act(self.head(x, kw["head_conv"]))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.hidden is not None:
            h = kw["hidden"]
            x = self.act(F.linear(x, self.hidden.weight[:h, :x.shape[1]], self.hidden.bias[:h]))
        x = F.dropout(x, kw["dropout"], self.training)
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    def active_modules(self, arch: Sequence[int] | str) -> list[nn.Module]:
        """The supernet modules a child uses (Conv2d, BatchNorm2d, Linear), in the order
        ``build_model(space, arch).modules()`` lists its own."""
        blocks, kw = self.conf(arch)
        mods: list[nn.Module] = [self.stem.conv, self.stem.bn]
        for mod, cfg in zip(self.blocks, blocks):
            mods += mod.active(cfg)
        if self.head is not None:
            mods += [self.head.conv, self.head.bn]
        return mods + ([self.hidden] if self.hidden is not None else []) + [self.classifier]


_SLICED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def slice_like(src: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The child's part of a supernet tensor: the first entries of the two channel dimensions,
    the centre of the kernel dimensions."""
    if src.dim() != len(shape) or any(s < t for s, t in zip(src.shape, shape)):
        raise ValueError(f"cannot slice a {tuple(src.shape)} tensor to {tuple(shape)}")
    idx = [slice(0, n) for n in shape[:2]]
    for s, t in zip(src.shape[2:], shape[2:]):
        off = (s - t) // 2
        idx.append(slice(off, off + t))
    return src[tuple(idx)]


def _pairs(supernet: Supernet, child: nn.Module, arch) -> list[tuple[nn.Module, nn.Module]]:
    ours = [m for m in child.modules() if isinstance(m, _SLICED)]
    theirs = supernet.active_modules(arch)
    if len(ours) != len(theirs) or any(type(a) is not type(b) for a, b in zip(ours, theirs)):
        raise RuntimeError(f"the supernet's modules for arch {arch} do not match the built network's "
                           f"({[type(m).__name__ for m in theirs]} vs {[type(m).__name__ for m in ours]})")
    return list(zip(ours, theirs))


@torch.no_grad()
def extract_child(supernet: Supernet, arch: Sequence[int] | str) -> nn.Module:
    """The stand-alone network of ``arch`` (`models.build_model`, same context as the
    supernet) holding the supernet's sliced weights and BN statistics, on the supernet's
    device, in eval mode. The global RNG is left as it was (the build's init draws from it)."""
    arch = supernet.check(arch)
    ctx = supernet.ctx
    with torch.random.fork_rng(devices=[]):
        child = build_model(supernet.space, arch, num_classes=ctx.num_classes, input_size=ctx.input_size,
                            input_channels=ctx.input_channels)
    device = next(supernet.parameters()).device
    child.to(device)
    for mine, sup in _pairs(supernet, child, arch):
        for name, t in list(mine.named_parameters(recurse=False)) + list(mine.named_buffers(recurse=False)):
            src = getattr(sup, name)
            t.copy_(src if t.dim() == 0 else slice_like(src, t.shape))
    return child.eval()

