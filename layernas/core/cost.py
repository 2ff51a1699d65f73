"""Analytic cost (MAdds, params) of archs, computed from the space alone and vectorised.

Why analytic: the search costs every child before deciding whether to train it, and the
feasibility filter and Eq. 4 bucketing need the cost of many hypothetical completions. Building
torch modules for that would dominate the search; here an (n, L) int array of archs becomes
numpy lookups and a few multiply-adds per block (100,000 archs of the 60M space cost in a few
tens of milliseconds, see benchmarks/cost_speed.py).

Conventions (the hook counter in `models.py` uses the same ones, and tests hold them equal):
- MAdds count the multiply-accumulates of Conv2d and Linear layers only (BN, activations,
  pooling and residual adds are free), as torchvision's documented FLOPs for MobileNets do.
- params count every parameter: conv/linear weights and biases, and BN weight + bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from layernas.core.arch import NB201_OPS, Space, SpaceError

METRICS = ("madds", "params")


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

    @classmethod
    def of(cls, space: Space, input_size=None, num_classes=None, input_channels=None) -> "Context":
        return cls(
            input_size=int(input_size or space.input_size),
            input_channels=int(input_channels or space.input_channels),
            num_classes=int(num_classes or space.num_classes),
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


# --------------------------------------------------------------------------- per backbone


class _Resolver:
    """Turns a network field ('$layer' reference or a constant) into a per-arch vector."""

    def __init__(self, space: Space, archs: np.ndarray):
        self.space = space
        self.archs = archs
        self.index = {layer.name: i for i, layer in enumerate(space.layers)}
        self.used: set[str] = set()

    def __call__(self, value: Any, slot: str, where: str) -> np.ndarray:
        n = self.archs.shape[0]
        if isinstance(value, str) and value.startswith("$"):
            name, _, fld = value[1:].partition(".")
            if name not in self.index:
                raise SpaceError(f"network.{where}: {value} names no layer; layers: {sorted(self.index)}")
            layer = self.space.layers[self.index[name]]
            fld = fld or (slot if slot in layer.options[0] else "filters")
            if fld not in layer.options[0]:
                raise SpaceError(f"network.{where}: layer {name} options have no field {fld!r}")
            self.used.add(name)
            table = np.array([opt[fld] for opt in layer.options], dtype=np.int64)
            return table[self.archs[:, self.index[name]]]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpaceError(f"network.{where}: must be a positive integer or $layer, got {value!r}")
        return np.full(n, value, dtype=np.int64)


def resolve_value(space: Space, arch: Any, value: Any, slot: str, where: str = "") -> int:
    """One network field ('$layer' reference or constant) for one arch, as the cost sees it;
    `models.build_model` uses this so the built network and the formula never disagree."""
    return int(_Resolver(space, np.asarray([arch], dtype=np.int64))(value, slot, where or slot)[0])


def _additive(space: Space, archs: np.ndarray, ctx: Context) -> dict[str, np.ndarray]:
    madds = np.zeros(len(archs), dtype=np.float64)
    params = np.zeros(len(archs), dtype=np.float64)
    for j, layer in enumerate(space.layers):
        madds += np.array([o["cost"] for o in layer.options], dtype=np.float64)[archs[:, j]]
        params += np.array([o.get("params", 0) for o in layer.options], dtype=np.float64)[archs[:, j]]
    return {"madds": madds, "params": params}


def _mobilenet(space: Space, archs: np.ndarray, ctx: Context) -> dict[str, np.ndarray]:
    """Mirror of `models.build_model` for backbone: mobilenet (keep the two in step)."""
    net = space.network
    r = _Resolver(space, archs)
    n = len(archs)
    madds = np.zeros(n, dtype=np.float64)
    params = np.zeros(n, dtype=np.float64)
    stem = net.get("stem") or {}
    k, s = int(stem.get("kernel", 3)), int(stem.get("stride", 2))
    c = r(stem.get("out", 16), "out", "stem.out")
    h = conv_out(ctx.input_size, k, s)
    madds += k * k * ctx.input_channels * c * h * h
    params += k * k * ctx.input_channels * c + 2 * c
    blocks = net.get("blocks") or []
    if not blocks:
        raise SpaceError("network.blocks: a mobilenet space needs at least one block")
    for b, blk in enumerate(blocks):
        where = f"blocks[{b}]"
        k = r(blk.get("kernel", 3), "kernel", f"{where}.kernel")
        e = c if blk.get("expanded", "in") == "in" else r(blk["expanded"], "expanded", f"{where}.expanded")
        o = r(blk.get("out"), "out", f"{where}.out")
        s = int(blk.get("stride", 1))
        ho = (h - 1) // s + 1  # 'same' padding for odd kernels, any k
        has_expand = e != c
        madds += has_expand * c * e * h * h
        params += has_expand * (c * e + 2 * e)
        madds += k * k * e * ho * ho
        params += k * k * e + 2 * e
        if blk.get("se", net.get("se", False)):
            sq = make_divisible(e // 4, 8)
            madds += 2 * e * sq
            params += 2 * e * sq + sq + e
        madds += e * o * ho * ho
        params += e * o + 2 * o
        c, h = o, ho
    head = net.get("head") or {}
    if head.get("conv") is not None:
        hc = r(head["conv"], "filters", "head.conv")
        madds += c * hc * h * h
        params += c * hc + 2 * hc
        c = hc
    if head.get("hidden") is not None:
        hh = r(head["hidden"], "filters", "head.hidden")
        madds += c * hh
        params += c * hh + hh
        c = hh
    madds += c * ctx.num_classes
    params += c * ctx.num_classes + ctx.num_classes
    unused = set(r.index) - r.used
    if unused:
        raise SpaceError(f"layers {sorted(unused)} are not referenced by the network ($name)")
    return {"madds": madds, "params": params}


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


def _nb201(space: Space, archs: np.ndarray, ctx: Context) -> dict[str, np.ndarray]:
    net = space.network
    (fm, fp), (em, ep) = nb201_fixed_and_edge_costs(
        ctx, int(net.get("stem", 16)), int(net.get("cells_per_stage", 5))
    )
    madds = np.full(len(archs), fm, dtype=np.float64)
    params = np.full(len(archs), fp, dtype=np.float64)
    for j, layer in enumerate(space.layers):
        ops = np.array([o["ops"] for o in layer.options], dtype=np.int64)  # (|S|, edges)
        madds += em[ops].sum(axis=1)[archs[:, j]]
        params += ep[ops].sum(axis=1)[archs[:, j]]
    return {"madds": madds, "params": params}


def _nats(space: Space, archs: np.ndarray, ctx: Context) -> dict[str, np.ndarray]:
    """NATS-Bench size space (N=1): stem(3->C0) cell(C0->C0) res(C0->C1,s2) cell(C1->C2)
    res(C2->C3,s2) cell(C3->C4) BN GAP Linear. The cell is NATS-Bench's fixed genotype
    |conv3~0|+|conv3~0|conv3~1|+|skip~0|conv3~1|conv3~2|; edges out of node 0 map Cin->Cout,
    and a skip with Cin != Cout is a 1x1 conv."""
    r = _Resolver(space, archs)
    ch = [r(f"${layer.name}", "channels", f"layers[{i}]") for i, layer in enumerate(space.layers)]
    if len(ch) != 5:
        raise SpaceError("a nats space has exactly 5 layers (channels of the 5 stages)")
    h = ctx.input_size
    m = 9 * ctx.input_channels * ch[0] * h * h
    p = 9 * ctx.input_channels * ch[0] + 2 * ch[0]

    def cell(ci, co, h):
        hw = h * h
        mm = 2 * 9 * ci * co * hw + 3 * 9 * co * co * hw + (ci != co) * ci * co * hw
        pp = 2 * (9 * ci * co + 2 * co) + 3 * (9 * co * co + 2 * co) + (ci != co) * (ci * co + 2 * co)
        return mm, pp

    def res(ci, co, h):
        hw = h * h
        mm = 9 * ci * co * hw + 9 * co * co * hw + ci * co * hw
        pp = (9 * ci * co + 2 * co) + (9 * co * co + 2 * co) + ci * co
        return mm, pp

    steps = [(cell, ch[0], ch[0], 1), (res, ch[0], ch[1], 2), (cell, ch[1], ch[2], 1),
             (res, ch[2], ch[3], 2), (cell, ch[3], ch[4], 1)]
    for fn, ci, co, s in steps:
        h = (h - 1) // s + 1
        mm, pp = fn(ci, co, h)
        m = m + mm
        p = p + pp
    m = m + ch[4] * ctx.num_classes
    p = p + 2 * ch[4] + ch[4] * ctx.num_classes + ctx.num_classes
    return {"madds": m.astype(np.float64), "params": p.astype(np.float64)}


_BACKBONE_COST = {"additive": _additive, "mobilenet": _mobilenet, "nb201": _nb201, "nats": _nats}


def cost_of(space: Space, archs: Any, input_size=None, num_classes=None, input_channels=None) -> dict[str, np.ndarray]:
    """MAdds and params of each arch (rows of an (n, L) int array) as float64 arrays."""
    a = as_archs(space, archs)
    return _BACKBONE_COST[space.backbone](space, a, Context.of(space, input_size, num_classes, input_channels))


def cost(space: Space, arch: Any, metric: str = "madds", **ctx) -> float:
    return float(cost_of(space, [arch], **ctx)[metric][0])


# --------------------------------------------------------------------------- bounds


def completion_costs(space: Space, archs: Any, layer: int, metric: str = "madds", **ctx) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) cost reachable from each arch by changing only the layers after ``layer``.

    Costs are monotone in every option (more filters, bigger kernels and heavier ops never
    cost less), so the cheapest completion puts every later layer on its last option and the
    most expensive on option 0.
    """
    a = as_archs(space, archs).copy()
    lo = a.copy()
    hi = a.copy()
    for j in range(layer + 1, space.num_layers):
        lo[:, j] = space.sizes[j] - 1
        hi[:, j] = 0
    return cost_of(space, lo, **ctx)[metric], cost_of(space, hi, **ctx)[metric]


def layer_bounds(space: Space, metric: str = "madds", **ctx) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4's minCost(M_l), maxCost(M_l) for every layer l (0-based).

    A layer-l candidate is (s_0..s_l, o_{l+1}..o_{L-1}); its cost ranges from all-cheapest
    searched layers with defaults after l, up to the all-default model. These depend only on
    the space, so bucket bounds never move during a search and resumes are stable.
    """
    L = space.num_layers
    rows = np.zeros((L, L), dtype=np.int64)
    for l in range(L):
        for j in range(l + 1):
            rows[l, j] = space.sizes[j] - 1
    lo = cost_of(space, rows, **ctx)[metric]
    hi = np.full(L, cost_of(space, [space.default_arch()], **ctx)[metric][0])
    return lo, hi


def cost_range(space: Space, metric: str = "madds", **ctx) -> tuple[float, float]:
    c = cost_of(space, [space.min_arch(), space.default_arch()], **ctx)[metric]
    return float(c[0]), float(c[1])


# --------------------------------------------------------------------------- option order


def order_options(space: Space, raw_layers: list | None = None) -> Space:
    """Put each layer's options most expensive first and check explicit lists are ordered.

    Generated option sets (kernel x expanded, NB201 edge-op combinations) are sorted by their
    cost with every other layer at its default, stable so equal-cost options keep their
    listed order. Explicitly listed options (filters, channels, additive options) must already
    be listed most expensive first: a list out of order is almost always a typo, and silently
    reordering it would change every arch string the user has written down.
    """
    from dataclasses import replace

    layers = list(space.layers)
    # Provisional default: the option that is maximal in every numeric field (for generated
    # products that is the largest kernel with the largest expansion, or conv3x3 everywhere).
    # Explicit lists start with it; all-conv3x3 is first in itertools.product order.
    def generated(j: int) -> bool:
        raw = raw_layers[j] if raw_layers is not None else None
        return isinstance(raw, dict) and any(k in raw for k in ("edges", "kernels", "out"))

    base = [0] * len(layers)
    for j, layer in enumerate(layers):
        if generated(j) and "expanded" in layer.options[0]:
            top = {k: max(o[k] for o in layer.options) for k in layer.options[0]}
            base[j] = max(
                range(len(layer)), key=lambda i: tuple(layer.options[i][k] == top[k] for k in top)
            )
    probe = replace(space, layers=tuple(layers))
    for j, layer in enumerate(layers):
        rows = np.tile(np.asarray(base, dtype=np.int64), (len(layer), 1))
        rows[:, j] = np.arange(len(layer))
        c = _BACKBONE_COST[space.backbone](probe, rows, Context.of(space))["madds"]
        line = raw_layers[j].get("__line__") if raw_layers is not None and isinstance(raw_layers[j], dict) else None
        if generated(j):
            order = sorted(range(len(layer)), key=lambda i: -c[i])  # stable
            layers[j] = type(layer)(
                name=layer.name,
                options=tuple(layer.options[i] for i in order),
                labels=tuple(layer.labels[i] for i in order),
            )
        else:
            bad = [i for i in range(1, len(c)) if c[i] > c[i - 1]]
            if bad:
                i = bad[0]
                at = f" (line {line})" if line else ""
                raise SpaceError(
                    f"layers[{j}] ({layer.name}){at}: options must be listed most expensive first; "
                    f"option {i} ({layer.labels[i]}, cost {c[i]:g}) costs more than option {i - 1} "
                    f"({layer.labels[i - 1]}, cost {c[i - 1]:g})"
                )
        base[j] = 0
        probe = replace(space, layers=tuple(layers))
    return probe
