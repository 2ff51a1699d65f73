"""Time analytic costing of 100,000 random archs for every shipped space.

Usage: python benchmarks/cost_speed.py [--n 100000] [--out benchmarks/results/cost_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from layernas.core.cost import cost_of
from layernas.core.space import list_spaces, load_space


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/cost_speed.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name in list_spaces():
        space = load_space(name)
        archs = np.stack([rng.integers(0, n, args.n) for n in space.sizes], axis=1)
        cost_of(space, archs[:10])
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cost_of(space, archs)
            times.append(time.perf_counter() - t0)
        rows.append({"space": name, "n": args.n, "best_s": min(times), "median_s": float(np.median(times))})
        print(f"{name:<24} {args.n} archs: best {min(times) * 1e3:8.1f} ms  median {np.median(times) * 1e3:8.1f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                               "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
