"""How archs and costs read to a person, the same in status, summaries, the report and the
CLI: ``3-5-0-0-0-0-0 (f12 k3e48 k5e72 ...)`` and ``3.94M MAdds / 0.12M params`` instead of an
index string and ``3.93933e+06``."""

from __future__ import annotations

import math

from layernas.core.arch import Space, parse_arch

UNITS = {"madds": "MAdds", "params": "params", "latency": "ms"}


def human_number(x: float | int | None) -> str:
    """3939330 -> 3.94M, 120345 -> 0.12M, 2.1e9 -> 2.10G, 9 -> 9; None/NaN -> "-"."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1e9:
        return f"{x / 1e9:.2f}G"
    if abs(x) >= 1e5:
        return f"{x / 1e6:.2f}M"
    return f"{x:g}"


def human_cost(x: float | int | None, metric: str = "madds") -> str:
    """A cost with its unit: ``3.94M MAdds``; the Appendix I toy space's plain costs stay plain."""
    return f"{human_number(x)} {UNITS.get(metric, metric)}".rstrip()


def decode(space: Space, arch: str | tuple[int, ...]) -> str:
    """The options an arch string picks, in words: ``f12 k3e48 k5e72 ...``."""
    arch_t = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
    return " ".join(space.describe(arch_t))


def arch_label(space: Space | None, arch: str) -> str:
    """``3-5-0 (f12 k3e48 k5e72)``: the string that names the record, with what it means."""
    if space is None:
        return arch
    try:
        return f"{arch} ({decode(space, arch)})"
    except (ValueError, IndexError):
        return arch
