"""Search strategies sharing one ask/tell interface (see base.Strategy), and their registry.

``make_strategy(name, space, target, seed, **options)`` is how the benchmark harness (and any
other driver) builds a strategy by name, so a typo in a name or an option fails up front with
the valid choices instead of deep inside a run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from layernas.core.space import Space
from layernas.core.strategies.base import Arch, Strategy, Target

STRATEGY_NAMES = ("layernas", "random", "evolution", "ppo")
ALIASES = {
    "rs": "random",
    "random-search": "random",
    "re": "evolution",
    "regularized-evolution": "evolution",
    "rl": "ppo",
}

__all__ = ["Arch", "Strategy", "Target", "STRATEGY_NAMES", "make_strategy", "strategy_options", "resolve_name"]


def resolve_name(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in STRATEGY_NAMES:
        raise ValueError(
            f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})"
        )
    return key


def _layernas_factory(
    space: Space,
    target: Target,
    seed: int = 0,
    cost_kwargs: dict | None = None,
    buckets: int = 100,
    replicas: int = 3,
    per_sweep: int = 3,
    budget: int | None = None,
    select: str = "best",
    child_order: str = "parent",
    key_fn: Callable[[str], str] | None = None,
) -> Strategy:
    """LayerNAS over the range [target.lo, target.hi]. ``select`` orders the parents (best,
    dearest or random) and ``child_order`` a stage's children (parent or interleave; see
    `core.search.SearchConfig`); the run's seed seeds ``select: random`` and nothing else (the
    other modes are deterministic). Budget None: the paper's bound H*K*sum|S_i| (a harness
    budget usually bites first)."""
    from layernas.core.driver import LayerNAS  # the driver imports this package: import late
    from layernas.core.search import SearchConfig

    cfg = SearchConfig(
        target_min=target.lo, target_max=target.hi, buckets=buckets, replicas=replicas,
        per_sweep=per_sweep, budget=budget, metric=target.metric, select=select, seed=int(seed),
        child_order=child_order,
    )
    return LayerNAS(space, cfg, seed=seed, key_fn=key_fn, cost_kwargs=cost_kwargs)


def _factory(name: str) -> Callable[..., Strategy]:
    if name == "layernas":
        return _layernas_factory
    if name == "random":
        from layernas.core.strategies.random_search import RandomSearch

        return RandomSearch
    if name == "evolution":
        from layernas.core.strategies.evolution import RegularizedEvolution

        return RegularizedEvolution
    from layernas.core.strategies.ppo import PPO

    return PPO


def strategy_options(name: str) -> dict[str, object]:
    """The tunable options of a strategy and their defaults."""
    sig = inspect.signature(_factory(resolve_name(name)))
    skip = {"self", "space", "target", "seed", "cost_kwargs"}
    return {k: p.default for k, p in sig.parameters.items() if k not in skip}


def make_strategy(
    name: str, space: Space, target: Target, seed: int = 0, cost_kwargs: dict | None = None, **options
) -> Strategy:
    """Build strategy ``name`` (layernas, random, evolution, ppo or an alias) for ``space``."""
    key = resolve_name(name)
    valid = strategy_options(key)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"strategy {key} has no option(s) {', '.join(bad)}; its options: {', '.join(valid)}")
    return _factory(key)(space, target, seed=seed, cost_kwargs=cost_kwargs, **options)
