"""Deterministic synthetic accuracies, so searches can be demonstrated and tested without data.

``separable`` is a sum of per-layer terms (Assumption 4.2 holds exactly, so LayerNAS with
enough buckets must find the constrained optimum); ``appendix_i`` is the paper's worked
example with its listed accuracies.
"""

from __future__ import annotations

import hashlib

import numpy as np

APPENDIX_I = {
    "ADD": 0.30, "CDD": 0.45, "ACD": 0.27, "CAD": 0.40, "CBD": 0.42, "CDB": 0.40, "CDA": 0.37,
    "BDD": 0.35, "DDD": 0.50, "BCD": 0.33, "BBD": 0.32, "BCC": 0.32, "DDA": 0.37,
}


def appendix_i_name(arch: tuple[int, ...]) -> str:
    """Option index -> the paper's letter (options are listed D, C, B, A)."""
    return "".join("DCBA"[x] for x in arch)


def appendix_i(arch: tuple[int, ...]) -> float:
    """The notes' accuracies; archs the example never lists get a value below every listed
    model of the same cost (0.1 + 0.02 * cost), so they never win."""
    name = appendix_i_name(arch)
    if name in APPENDIX_I:
        return APPENDIX_I[name]
    return 0.1 + 0.02 * sum(4 - x for x in arch)


def _unit(*parts: object) -> float:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def separable(arch: tuple[int, ...], seed: int = 0) -> float:
    """Sum of per-(layer, option) terms, larger options slightly better on average."""
    terms = [0.06 / (1 + x) + 0.02 * _unit(seed, i, x) for i, x in enumerate(arch)]
    return float(0.5 + 5 * np.mean(terms))


def appendix_i_slow(arch: tuple[int, ...]) -> float:
    """`appendix_i` taking a second per lookup, so tests can interrupt a run mid-trial."""
    import time

    time.sleep(1.0)
    return appendix_i(arch)


def appendix_i_stuck(arch: tuple[int, ...]) -> float:
    """`appendix_i`, but the default arch takes 10 minutes: a trial that overruns its time
    limit, for the SLURM tests."""
    import time

    if sum(arch) == 0:
        time.sleep(600)
    return appendix_i(arch)


def flaky_kind(arch: tuple[int, ...]) -> str | None:
    """Which failure `separable_flaky` simulates for ``arch``: None for about 90% of archs,
    else "crash", "nan" or "timeout" (a deterministic function of the arch)."""
    u = _unit("flaky", tuple(int(x) for x in arch))
    if u >= 0.1:
        return None
    return ("crash", "nan", "timeout")[int(u * 30) % 3]


def separable_flaky(arch: tuple[int, ...]) -> float:
    """`separable` where ~10% of archs fail: an exception, a NaN accuracy, or a lookup that
    hangs (run it with a `trial_timeout`), for the failing-trials tests."""
    import time

    kind = flaky_kind(arch)
    if kind == "crash":
        raise RuntimeError(f"simulated crash for arch {'-'.join(map(str, arch))}")
    if kind == "nan":
        return float("nan")
    if kind == "timeout":
        time.sleep(120)
    return separable(arch)


def broken(arch: tuple[int, ...]) -> float:
    """An evaluator that fails for every arch (as a missing data set or a dead oracle service
    would), for the test that such a search stops at its first stage."""
    raise RuntimeError("simulated broken evaluator")
