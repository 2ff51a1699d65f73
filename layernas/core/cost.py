"""Analytic cost (MAdds, params) of archs, computed from the space alone and vectorised.

Why analytic: the search costs every child before deciding whether to train it, and the
feasibility filter and Eq. 4 bucketing need the cost of many hypothetical completions. Building
torch modules for that would dominate the search; here an (n, L) int array of archs becomes
numpy lookups and a few multiply-adds per block (100,000 archs of the 60M space cost in a few
tens of milliseconds, see benchmarks/cost_speed.py).

Why pieces: every backbone's cost is a sum of *pieces* (the stem, one block, the head, one
NB201 node...), and each piece reads only a few layers (a block reads its kernel/expansion
layer and the block-filter layers on either side). `cost_of` adds the pieces up; the exact
completion bounds (`layernas.core.bounds`) tabulate the same pieces over the options of the
layers they read and minimise over the chain. One formula serves both, so the bounds can never
drift from the cost.

Conventions (the hook counter in `models.py` uses the same ones, and tests hold them equal):
- MAdds count the multiply-accumulates of Conv2d and Linear layers only (BN, activations,
  pooling and residual adds are free), as torchvision's documented FLOPs for MobileNets do.
- params count every parameter: conv/linear weights and biases, and BN weight + bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from layernas.core import latency as lat
from layernas.core.arch import NB201_OPS, Space, SpaceError

METRICS = ("madds", "params", "latency")


def make_divisible(v: np.ndarray | int, divisor: int = 8) -> np.ndarray:
    """torchvision's `_make_divisible`, vectorised (used for the SE squeeze width)."""
    v = np.asarray(v, dtype=np.int64)
    new_v = np.maximum(divisor, ((v + divisor // 2) // divisor) * divisor)
    return np.where(new_v < 0.9 * v, new_v + divisor, new_v)


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv (padding (k-1)//2), as in torchvision."""
    pad = (kernel - 1) // 2
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class Context:
    input_size: int
    input_channels: int
    num_classes: int
    latency_table: str | None = None  # a latency lookup table (Parquet): enables metric "latency"

    @classmethod
    def of(cls, space: Space, input_size=None, num_classes=None, input_channels=None, latency_table=None) -> "Context":
        return cls(
            input_size=int(input_size or space.input_size),
            input_channels=int(input_channels or space.input_channels),
            num_classes=int(num_classes or space.num_classes),
            latency_table=str(latency_table) if latency_table else None,
        )


def as_archs(space: Space, archs: Any) -> np.ndarray:
    a = np.asarray(archs, dtype=np.int64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != space.num_layers:
        raise ValueError(f"archs must have shape (n, {space.num_layers}), got {a.shape}")
    sizes = np.asarray(space.sizes)
    if a.size and (a.min() < 0 or (a >= sizes).any()):
        bad = np.argwhere((a < 0) | (a >= sizes))[0]
        raise ValueError(
            f"option {a[bad[0], bad[1]]} of layer {bad[1]} is out of range 0..{sizes[bad[1]] - 1}"
        )
    return a


class Resolver:
    """Turns a network field ('$layer' reference or a constant) into a per-arch vector, and
    records which layers were read (the bounds use that to know what a piece depends on)."""

    def __init__(self, space: Space, archs: np.ndarray, segments: bool = False):
        self.space = space
        self.archs = archs
        self.index = {layer.name: i for i, layer in enumerate(space.layers)}
        self.used: set[str] = set()
        self.segments = segments  # pieces also name their latency segments (slower; latency only)

    @property
    def n(self) -> int:
        return self.archs.shape[0]

    def column(self, j: int) -> np.ndarray:
        """Option index of layer j in every arch."""
        self.used.add(self.space.layers[j].name)
        return self.archs[:, j]

    def __call__(self, value: Any, slot: str, where: str) -> np.ndarray:
        if isinstance(value, str) and value.startswith("$"):
            name, _, fld = value[1:].partition(".")
            if name not in self.index:
                raise SpaceError(f"network.{where}: {value} names no layer; layers: {sorted(self.index)}")
            layer = self.space.layers[self.index[name]]
            fld = fld or (slot if slot in layer.options[0] else "filters")
            if fld not in layer.options[0]:
                raise SpaceError(f"network.{where}: layer {name} options have no field {fld!r}")
            table = np.array([opt[fld] for opt in layer.options], dtype=np.int64)
            return table[self.column(self.index[name])]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpaceError(f"network.{where}: must be a positive integer or $layer, got {value!r}")
        return np.full(self.n, value, dtype=np.int64)


def resolve_value(space: Space, arch: Any, value: Any, slot: str, where: str = "") -> int:
    """One network field ('$layer' reference or constant) for one arch, as the cost sees it;
    `models.build_model` uses this so the built network and the formula never disagree."""
    return int(Resolver(space, np.asarray([arch], dtype=np.int64))(value, slot, where or slot)[0])


# A piece: (resolver over n archs) -> (madds, params[, segment keys]): float arrays of length n,
# and, where the resolver asks for segments and the backbone has latency tables, one key per arch.
Piece = Callable[[Resolver], tuple]


def _const(m: float, p: float) -> Piece:
    return lambda r: (np.full(r.n, float(m)), np.full(r.n, float(p)))


def _fixed_latency(r: Resolver):
    return np.zeros(r.n), np.zeros(r.n), [lat.FIXED] * r.n if r.segments else None


# --------------------------------------------------------------------------- per backbone


def _additive(space: Space, ctx: Context) -> list[Piece]:
    def layer_piece(j: int) -> Piece:
        m = np.array([o["cost"] for o in space.layers[j].options], dtype=np.float64)
        p = np.array([o.get("params", 0) for o in space.layers[j].options], dtype=np.float64)
        return lambda r: (m[r.column(j)], p[r.column(j)])

    return [layer_piece(j) for j in range(space.num_layers)]


Spec = tuple[Any, str, str]  # (value, slot, where): a network field as the Resolver takes it


def _conv_piece(cin: Spec, cout: Spec, h: int, kernel: int = 1, stride: int = 1, act: str = "") -> Piece:
    """A conv + BN + activation at h x h output pixels (the stem, a 1x1 head conv)."""
    def piece(r: Resolver):
        c, o = r(*cin), r(*cout)
        m = (kernel * kernel * c * o * h * h).astype(np.float64)
        p = (kernel * kernel * c * o + 2 * o).astype(np.float64)
        seg = lat.keys("conv", c=c, o=o, k=kernel, s=stride, h=h, act=act) if r.segments else None
        return m, p, seg

    return piece


def _tail_piece(cin: Spec, hidden: Spec | None, n_cls: int, h: int, act: str) -> Piece:
    """Global pooling, the optional hidden Linear (+ activation) and the classifier."""
    def piece(r: Resolver):
        c = r(*cin)
        m, p = np.zeros(r.n), np.zeros(r.n)
        last = c
        if hidden is not None:
            hh = r(*hidden)
            m, p = (c * hh).astype(np.float64), (c * hh + hh).astype(np.float64)
            last = hh
        m, p = m + last * n_cls, p + last * n_cls + n_cls
        seg = None
        if r.segments:
            seg = lat.keys("tail", c=c, hidden=hh if hidden is not None else 0, classes=n_cls, h=h, act=act)
        return m, p, seg

    return piece


def _block_piece(cin: Spec, blk: dict, where: str, h: int, ho: int, se: bool, act: str) -> Piece:
    def piece(r: Resolver):
        c = r(*cin)
        k = r(blk.get("kernel", 3), "kernel", f"{where}.kernel")
        e = c if blk.get("expanded", "in") == "in" else r(blk["expanded"], "expanded", f"{where}.expanded")
        o = r(blk.get("out"), "out", f"{where}.out")
        has_expand = e != c
        madds = has_expand * c * e * h * h + k * k * e * ho * ho + e * o * ho * ho
        params = has_expand * (c * e + 2 * e) + (k * k * e + 2 * e) + (e * o + 2 * o)
        if se:
            sq = make_divisible(e // 4, 8)
            madds = madds + 2 * e * sq
            params = params + 2 * e * sq + sq + e
        seg = None
        if r.segments:
            seg = lat.keys("block", c=c, k=k, e=e, o=o, s=int(blk.get("stride", 1)), h=h, se=int(se), act=act)
        return madds.astype(np.float64), params.astype(np.float64), seg

    return piece


def _mobilenet(space: Space, ctx: Context) -> list[Piece]:
    """Mirror of `models.build_model` for backbone: mobilenet (keep the two in step)."""
    net = space.network
    act = net.get("act", "hswish")
    stem = net.get("stem") or {}
    k, s = int(stem.get("kernel", 3)), int(stem.get("stride", 2))
    h = conv_out(ctx.input_size, k, s)
    c: Spec = (stem.get("out", 16), "out", "stem.out")
    pieces = [_fixed_latency, _conv_piece((ctx.input_channels, "in", "input"), c, h, kernel=k, stride=s, act=act)]
    blocks = net.get("blocks") or []
    if not blocks:
        raise SpaceError("network.blocks: a mobilenet space needs at least one block")
    for b, blk in enumerate(blocks):
        where = f"blocks[{b}]"
        ho = (h - 1) // int(blk.get("stride", 1)) + 1  # 'same' padding for odd kernels, any k
        se = bool(blk.get("se", net.get("se", False)))
        pieces.append(_block_piece(c, blk, where, h, ho, se, blk.get("act", act)))
        c, h = (blk.get("out"), "out", f"{where}.out"), ho
    head = net.get("head") or {}
    if head.get("conv") is not None:
        hc: Spec = (head["conv"], "filters", "head.conv")
        pieces.append(_conv_piece(c, hc, h, act=act))
        c = hc
    hidden = (head["hidden"], "filters", "head.hidden") if head.get("hidden") is not None else None
    pieces.append(_tail_piece(c, hidden, ctx.num_classes, h, act))
    return pieces


def _check_all_layers_used(space: Space, pieces: list[Piece]) -> None:
    r = Resolver(space, np.zeros((1, space.num_layers), dtype=np.int64))
    for piece in pieces:
        piece(r)
    unused = set(r.index) - r.used
    if unused:
        raise SpaceError(f"layers {sorted(unused)} are not referenced by the network ($name)")


def _nb201_op_cost(c: int, hw: int) -> tuple[np.ndarray, np.ndarray]:
    """(madds, params) of each NB201 op on a C->C edge at hw pixels, in NB201_OPS order.
    ReLU-Conv-BN ops: conv weights (no bias) + BN affine; pooling, skip and none are free."""
    madds = np.array([9 * c * c * hw, c * c * hw, 0, 0, 0], dtype=np.float64)
    params = np.array([9 * c * c + 2 * c, c * c + 2 * c, 0, 0, 0], dtype=np.float64)
    return madds, params


def nb201_fixed_and_edge_costs(ctx: Context, stem: int = 16, cells_per_stage: int = 5):
    """NB201 macro skeleton: stem conv3x3 -> N cells (C) -> resblock -> N cells (2C) ->
    resblock -> N cells (4C) -> BN-ReLU -> GAP -> Linear. Every cell shares the genotype, so
    an edge op costs the same multiple in every network: cost = fixed + sum over edges."""
    size = ctx.input_size
    fixed_m = 9 * ctx.input_channels * stem * size * size
    fixed_p = 9 * ctx.input_channels * stem + 2 * stem
    edge_m = np.zeros(len(NB201_OPS))
    edge_p = np.zeros(len(NB201_OPS))
    c, h = stem, size
    for stage in range(3):
        if stage > 0:  # ResNetBasicblock(c, 2c, stride 2)
            c2, h2 = 2 * c, (h - 1) // 2 + 1
            fixed_m += 9 * c * c2 * h2 * h2 + 9 * c2 * c2 * h2 * h2 + c * c2 * h2 * h2
            fixed_p += (9 * c * c2 + 2 * c2) + (9 * c2 * c2 + 2 * c2) + c * c2
            c, h = c2, h2
        m, p = _nb201_op_cost(c, h * h)
        edge_m += cells_per_stage * m
        edge_p += cells_per_stage * p
    fixed_m += c * ctx.num_classes
    fixed_p += 2 * c + c * ctx.num_classes + ctx.num_classes  # lastact BN + classifier
    return (fixed_m, fixed_p), (edge_m, edge_p)


def _nb201(space: Space, ctx: Context) -> list[Piece]:
    net = space.network
    (fm, fp), (em, ep) = nb201_fixed_and_edge_costs(
        ctx, int(net.get("stem", 16)), int(net.get("cells_per_stage", 5))
    )

    def node_piece(j: int) -> Piece:
        ops = np.array([o["ops"] for o in space.layers[j].options], dtype=np.int64)  # (|S|, edges)
        m, p = em[ops].sum(axis=1), ep[ops].sum(axis=1)
        return lambda r: (m[r.column(j)], p[r.column(j)])

    return [_const(fm, fp)] + [node_piece(j) for j in range(space.num_layers)]


def _nats(space: Space, ctx: Context) -> list[Piece]:
    """NATS-Bench size space (N=1): stem(3->C0) cell(C0->C0) res(C0->C1,s2) cell(C1->C2)
    res(C2->C3,s2) cell(C3->C4) BN GAP Linear. The cell is NATS-Bench's fixed genotype
    |conv3~0|+|conv3~0|conv3~1|+|skip~0|conv3~1|conv3~2|; edges out of node 0 map Cin->Cout,
    and a skip with Cin != Cout is a 1x1 conv."""
    if space.num_layers != 5:
        raise SpaceError("a nats space has exactly 5 layers (channels of the 5 stages)")
    ch = [(f"${layer.name}", "channels", f"layers[{i}]") for i, layer in enumerate(space.layers)]

    def cell(ci, co, hw):
        mm = 2 * 9 * ci * co * hw + 3 * 9 * co * co * hw + (ci != co) * ci * co * hw
        pp = 2 * (9 * ci * co + 2 * co) + 3 * (9 * co * co + 2 * co) + (ci != co) * (ci * co + 2 * co)
        return mm, pp

    def res(ci, co, hw):
        return 9 * ci * co * hw + 9 * co * co * hw + ci * co * hw, (9 * ci * co + 2 * co) + (9 * co * co + 2 * co) + ci * co

    def step(fn, i, o, hw) -> Piece:
        def piece(r: Resolver):
            mm, pp = fn(r(*ch[i]), r(*ch[o]), hw)
            return mm.astype(np.float64), pp.astype(np.float64)
        return piece

    h = ctx.input_size
    pieces = [_conv_piece((ctx.input_channels, "in", "input"), ch[0], h, kernel=3)]
    for fn, i, o, s in [(cell, 0, 0, 1), (res, 0, 1, 2), (cell, 1, 2, 1), (res, 2, 3, 2), (cell, 3, 4, 1)]:
        h = (h - 1) // s + 1
        pieces.append(step(fn, i, o, h * h))
    n_cls = ctx.num_classes
    pieces.append(lambda r: ((r(*ch[4]) * n_cls).astype(np.float64),
                             (2 * r(*ch[4]) + r(*ch[4]) * n_cls + n_cls).astype(np.float64)))
    return pieces


_BACKBONE_PIECES = {"additive": _additive, "mobilenet": _mobilenet, "nb201": _nb201, "nats": _nats}


def cost_pieces(space: Space, ctx: Context) -> list[Piece]:
    """The pieces whose sum is the cost of an arch; raises SpaceError for a malformed network."""
    pieces = _BACKBONE_PIECES[space.backbone](space, ctx)
    if space.backbone == "mobilenet":
        _check_all_layers_used(space, pieces)
    return pieces


def evaluate_pieces(
    space: Space, pieces: list[Piece], archs: np.ndarray, latency: lat.LatencyTable | None = None
) -> dict[str, np.ndarray]:
    """The sum of ``pieces`` over ``archs``: madds and params, and latency (ms) with a table."""
    r = Resolver(space, archs, segments=latency is not None)
    out = {m: np.zeros(len(archs), dtype=np.float64) for m in METRICS[: 2 if latency is None else 3]}
    for piece in pieces:
        m, p, *seg = piece(r)
        out["madds"] += m
        out["params"] += p
        if latency is not None:
            if not seg or seg[0] is None:
                raise lat.LatencyError(f"space {space.name}: latency tables support the mobilenet backbone only, "
                                       f"not {space.backbone!r}")
            out["latency"] += latency.lookup(seg[0])
    return out


def latency_table_of(ctx: Context) -> lat.LatencyTable | None:
    return lat.read_table(ctx.latency_table) if ctx.latency_table else None


def cost_of(
    space: Space, archs: Any, input_size=None, num_classes=None, input_channels=None, latency_table=None
) -> dict[str, np.ndarray]:
    """MAdds and params of each arch (rows of an (n, L) int array) as float64 arrays, and its
    predicted latency in milliseconds when a latency table is given."""
    a = as_archs(space, archs)
    ctx = Context.of(space, input_size, num_classes, input_channels, latency_table)
    return evaluate_pieces(space, cost_pieces(space, ctx), a, latency_table_of(ctx))


def cost(space: Space, arch: Any, metric: str = "madds", **ctx) -> float:
    return float(cost_of(space, [arch], **ctx)[metric][0])
