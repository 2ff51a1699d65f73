"""Regularized evolution (Real et al. 2019) with the MNAS soft-constraint objective.

The paper's baseline settings: population 50, tournament 10, fitness
``accuracy * (cost / target) ** -0.07`` (MNAS). Decisions written down:
- Mutation changes exactly one layer to a *different* option (layer uniform among layers with
  more than one option, new option uniform among the others).
- The initial population is drawn from the in-target archs (as random search does, without
  replacement), so evolution starts from the same kind of models as the baseline; the soft
  reward then lets children leave the target, as in the paper.
- Age-based removal: every told child joins the population and the oldest member leaves.
- Duplicates: a child equal to an already evaluated arch is still proposed; the harness answers
  it from its cache at no budget cost (and reports how many such lookups happened), and the
  child joins the population like any other. Failed evaluations (None) do not join.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from layernas.core.space import Space
from layernas.core.strategies.base import Arch, Strategy, Target
from layernas.core.strategies.ppo import MNAS_W, mnas_reward
from layernas.core.strategies.random_search import InTargetSampler, uniform_archs


def mutate(arch: Arch, sizes: tuple[int, ...], rng: np.random.Generator) -> Arch:
    """Copy of ``arch`` with exactly one layer moved to a different option."""
    layers = [i for i, n in enumerate(sizes) if n > 1]
    if not layers:
        raise ValueError("cannot mutate: every layer has a single option")
    i = layers[int(rng.integers(len(layers)))]
    new = int(rng.integers(0, sizes[i] - 1))
    new += new >= arch[i]  # skip the current option
    out = list(arch)
    out[i] = new
    return tuple(out)


class RegularizedEvolution(Strategy):
    """One child per ask: tournament selection of a parent, one-layer mutation."""

    name = "evolution"

    def __init__(
        self,
        space: Space,
        target: Target,
        seed: int = 0,
        cost_kwargs: dict | None = None,
        population: int = 50,
        tournament: int = 10,
        w: float = MNAS_W,
    ):
        super().__init__(space, target, seed, cost_kwargs)
        if not isinstance(population, int) or population <= 0:
            raise ValueError(f"population must be a positive integer, got {population!r}")
        if not isinstance(tournament, int) or not 0 < tournament <= population:
            raise ValueError(f"tournament must be an integer in 1..population ({population}), got {tournament!r}")
        if target.hi <= 0:
            raise ValueError("the MNAS objective needs a positive target max")
        self.population_size, self.tournament, self.w = population, tournament, float(w)
        self.population: deque[tuple[Arch, float]] = deque()  # (arch, fitness), oldest first
        self.sampler = InTargetSampler(space, target, self.rng, self.cost_kwargs)
        self.initialised = 0  # archs of the initial population proposed so far
        self._asked: list[Arch] = []
        self._costs: dict[Arch, float] = {}  # analytic cost per arch (cost_of per child is slow)

    def fitness(self, arch: Arch, accuracy: float) -> float:
        """The MNAS objective of one evaluated arch."""
        c = self._costs.get(arch)
        if c is None:
            c = self._costs[arch] = float(self.cost([arch])[0])
        return mnas_reward(accuracy, c, self.target.hi, self.w)

    def ask(self) -> list[Arch]:
        if self.initialised < self.population_size:
            batch = self.sampler.draw(1) or [tuple(int(x) for x in uniform_archs(self.space, self.rng, 1)[0])]
            self.initialised += 1
        elif not self.population:  # every initial member failed: start again at random
            batch = [tuple(int(x) for x in uniform_archs(self.space, self.rng, 1)[0])]
        else:
            k = min(self.tournament, len(self.population))
            picks = self.rng.choice(len(self.population), size=k, replace=False)
            parent = max((self.population[i] for i in picks), key=lambda m: m[1])[0]
            batch = [mutate(parent, self.space.sizes, self.rng)]
        self._asked = batch
        return batch

    def tell(self, results: list[tuple[Arch, float | None]]) -> None:
        for arch, acc in results:
            if acc is None or not np.isfinite(acc):
                continue
            arch = tuple(int(x) for x in arch)
            self.population.append((arch, self.fitness(arch, float(acc))))
            if len(self.population) > self.population_size:
                self.population.popleft()
