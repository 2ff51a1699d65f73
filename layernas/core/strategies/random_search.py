"""Random search among archs within the cost target: the baseline every NAS method must beat.

Why sample only in-target archs: with a hard constraint an out-of-target arch is wasted
training, and "random search within the target" is the baseline the paper compares against.
Archs are drawn uniformly from the in-target set and without replacement, so a trial budget is
never spent twice on the same arch and the search ends (``done``) when the set is exhausted:

- small spaces (up to ``enumerate_limit`` archs, e.g. NB201's 15,625): enumerate, cost once,
  shuffle the in-target set with the seed;
- large spaces: rejection sampling of uniform archs in chunks, skipping archs proposed before;
  ``done`` once ``max_chunks`` chunks in a row yield nothing new.
"""

from __future__ import annotations

import math

import numpy as np

from layernas.core.cost import cost_of
from layernas.core.space import Space
from layernas.core.strategies.base import Arch, Strategy, Target


def uniform_archs(space: Space, rng: np.random.Generator, n: int) -> np.ndarray:
    """n archs drawn uniformly from the whole space, as an (n, L) int array."""
    return np.stack([rng.integers(0, k, n) for k in space.sizes], axis=1).astype(np.int64)


def all_archs(space: Space) -> np.ndarray:
    """Every arch of a (small) space in flat order, as an (prod |S_i|, L) int array."""
    n = math.prod(space.sizes)
    return np.stack(np.unravel_index(np.arange(n), space.sizes), axis=1).astype(np.int64)


class InTargetSampler:
    """Uniform draws without replacement from the archs whose cost is in the target.

    Shared by random search and by the initial population of regularized evolution."""

    def __init__(
        self,
        space: Space,
        target: Target,
        rng: np.random.Generator,
        cost_kwargs: dict | None = None,
        enumerate_limit: int = 1_000_000,
        chunk: int = 1024,
        max_chunks: int = 200,
    ):
        self.space, self.target, self.rng = space, target, rng
        self.cost_kwargs = dict(cost_kwargs or {})
        self.chunk, self.max_chunks = chunk, max_chunks
        self.proposed: set[Arch] = set()
        self.exhausted = False
        self._queue: np.ndarray | None = None
        self._pos = 0
        if math.prod(space.sizes) <= enumerate_limit:
            archs = all_archs(space)
            cost = cost_of(space, archs, **self.cost_kwargs)[target.metric]
            archs = archs[np.asarray(target.contains(cost), bool)]
            self._queue = archs[rng.permutation(len(archs))]

    @property
    def size(self) -> int | None:
        """Number of in-target archs when enumerated, else None."""
        return None if self._queue is None else len(self._queue)

    def draw(self, n: int) -> list[Arch]:
        """Up to n new in-target archs; fewer (possibly none) once the set is exhausted."""
        out: list[Arch] = []
        if self._queue is not None:
            rows = self._queue[self._pos : self._pos + n]
            self._pos += len(rows)
            out = [tuple(int(x) for x in r) for r in rows]
            self.exhausted = self._pos >= len(self._queue)
        else:
            misses = 0
            while len(out) < n and misses < self.max_chunks:
                cand = uniform_archs(self.space, self.rng, self.chunk)
                ok = np.asarray(self.target.contains(cost_of(self.space, cand, **self.cost_kwargs)[self.target.metric]), bool)
                found = False
                for row in cand[ok]:
                    a = tuple(int(x) for x in row)
                    if a not in self.proposed:
                        self.proposed.add(a)
                        out.append(a)
                        found = True
                        if len(out) == n:
                            break
                misses = 0 if found else misses + 1
            self.exhausted = len(out) < n
        self.proposed.update(out)
        return out


class RandomSearch(Strategy):
    """Uniform random search over the in-target archs, ``batch_size`` archs per ask."""

    name = "random"

    def __init__(
        self,
        space: Space,
        target: Target,
        seed: int = 0,
        cost_kwargs: dict | None = None,
        batch_size: int = 1,
        enumerate_limit: int = 1_000_000,
    ):
        super().__init__(space, target, seed, cost_kwargs)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.sampler = InTargetSampler(space, target, self.rng, self.cost_kwargs, enumerate_limit)
        self.results: dict[Arch, float | None] = {}
        self._done = False

    def ask(self) -> list[Arch]:
        if self._done:
            return []
        batch = self.sampler.draw(self.batch_size)
        self._done = not batch
        return batch

    def tell(self, results: list[tuple[Arch, float | None]]) -> None:
        for arch, acc in results:
            self.results[tuple(arch)] = acc
        self._done = self._done or self.sampler.exhausted

    @property
    def done(self) -> bool:
        return self._done
