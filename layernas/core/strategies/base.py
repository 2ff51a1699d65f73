"""The whole searcher interface: ask for archs, tell their results.

Contract (every strategy, LayerNAS included):
- ``ask()`` returns the next batch of archs (tuples of option indices) the strategy wants
  evaluated; an empty list with ``done`` True means it has nothing left to propose.
- ``tell(results)`` receives ``(arch, accuracy)`` pairs for exactly the archs of the last
  ask, in any order; accuracy is None for a failed evaluation. Told results are final.
- Strategies never read the trial store or the benchmark table directly: the harness (or the
  in-process driver, or the Snakemake workflow) owns evaluation, caching and the budget, so
  the same strategy runs on a table, on real training, or on a cluster.
- Randomness comes only from the ``seed`` given at construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from layernas.core.cost import cost_of
from layernas.core.space import Space

Arch = tuple[int, ...]


@dataclass(frozen=True)
class Target:
    """The constrained cost range [lo, hi] of the metric (madds or params)."""

    lo: float
    hi: float
    metric: str = "madds"

    def contains(self, cost: np.ndarray | float) -> np.ndarray | bool:
        return (np.asarray(cost) >= self.lo) & (np.asarray(cost) <= self.hi)


class Strategy(ABC):
    name: str = "strategy"

    def __init__(self, space: Space, target: Target, seed: int = 0, cost_kwargs: dict | None = None):
        self.space = space
        self.target = target
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.cost_kwargs = dict(cost_kwargs or {})

    def cost(self, archs) -> np.ndarray:
        return cost_of(self.space, archs, **self.cost_kwargs)[self.target.metric]

    @abstractmethod
    def ask(self) -> list[Arch]: ...

    @abstractmethod
    def tell(self, results: list[tuple[Arch, float | None]]) -> None: ...

    @property
    def done(self) -> bool:
        return False
