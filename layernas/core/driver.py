"""The in-process LayerNAS engine: the stage recurrence of `layernas.core.search` behind the
ask/tell `Strategy` interface, and `run_search`, which drives it with a batch oracle.

Its own module because it is one of two drivers of the same pure stage functions (the other is
the Snakemake workflow, `layernas.workflow.stages`): it keeps the search state in memory (tables
per (sweep, layer), children, results), whereas the workflow keeps it in files. Keeping the state
machine out of `core.search` leaves that module a set of stateless steps both drivers share.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from layernas.core.search import (
    HISTORY_COLUMNS,
    Geometry,
    SearchConfig,
    best_in_target,
    check_target_reachable,
    finish_stage,
    plan_stage,
    stage_children,
)
from layernas.core.space import Space, format_arch, parse_arch
from layernas.core.strategies.base import Arch, Strategy


class LayerNAS(Strategy):
    """LayerNAS behind the ask/tell interface: each ask is the set of archs of the next
    (sweep, layer) stage that need a new evaluation; stages whose children are all cached
    or dropped are completed without asking. Every step goes through `stage_children`,
    `plan_stage` and `finish_stage`, the functions the Snakemake workflow calls too."""

    name = "layernas"

    def __init__(
        self,
        space: Space,
        config: SearchConfig,
        seed: int = 0,
        key_fn: Callable[[str], str] | None = None,
        cost_kwargs: dict | None = None,
    ):
        super().__init__(space, config.target, seed, cost_kwargs)
        self.config = config
        self.geo = Geometry.of(space, config, **self.cost_kwargs)
        self.key_fn = key_fn or (lambda a: a)
        self.tables: dict[tuple[int, int], pd.DataFrame] = {}  # (sweep, layer) -> snapshot
        self.children: dict[tuple[int, int], pd.DataFrame] = {}
        self.results: dict[str, float] = {}  # arch -> accuracy (nan = failed)
        self._history: list[pd.DataFrame] = []  # one frame per stage, in order
        self._n_history = 0
        self.sweep, self.layer = 0, 0
        self.stopped_by_budget = False
        self._done = False
        self._sweep_had_children = False
        self._pending: pd.DataFrame | None = None
        self._asked: list[str] = []

    @property
    def trials(self) -> int:
        return len(self.results)

    @property
    def done(self) -> bool:
        return self._done

    def ask(self) -> list[Arch]:
        """Archs of the next stage needing evaluation; [] when done."""
        while not self._done:
            if self._pending is None:
                r, l = self.sweep, self.layer
                kids = stage_children(self.geo, r, l, self.tables.get((r, l - 1)), self.key_fn)
                self.children[(r, l)] = kids
                self._sweep_had_children |= not kids.empty
                self._pending, stopped = plan_stage(kids, self.results, self.trials, self.geo.budget)
                self.stopped_by_budget |= stopped
            need = self._pending[self._pending["action"] == "evaluate"]
            if need.empty:
                self._finish_stage({})
                continue
            self._asked = list(need["arch"])
            return [parse_arch(a) for a in self._asked]
        return []

    def tell(self, results: list[tuple[Arch, float | None]]) -> None:
        got = {format_arch(a): (np.nan if acc is None else float(acc)) for a, acc in results}
        missing = set(self._asked) - set(got)
        if missing:
            raise ValueError(f"tell() is missing results for {sorted(missing)[:5]}")
        self._finish_stage(got)

    def _finish_stage(self, new_results: dict[str, float]) -> None:
        r, l = self.sweep, self.layer
        table, history = finish_stage(
            self._pending, new_results, self.results, self.tables.get((r - 1, l)),
            self.children.get((r - 1, l + 1)), l, self.config.replicas, self._n_history,
        )
        self.results.update(new_results)
        self.tables[(r, l)] = table
        self._history.append(history)
        self._n_history += len(history)
        self._pending = None
        if self.stopped_by_budget:
            self._done = True
            return
        self.layer += 1
        if self.layer == self.space.num_layers:
            self._done = not self._sweep_had_children
            self.sweep, self.layer = self.sweep + 1, 0
            self._sweep_had_children = False

    # -- results
    def history_frame(self) -> pd.DataFrame:
        """Every generated child in order: evaluated, cached, failed, dropped or budget."""
        frames = [f for f in self._history if not f.empty]
        if not frames:
            return pd.DataFrame({c: [] for c in HISTORY_COLUMNS})
        return pd.concat(frames, ignore_index=True)

    def final_tables(self) -> dict[int, pd.DataFrame]:
        """Latest snapshot of every layer."""
        return {l: t for (_r, l), t in sorted(self.tables.items())}

    def best(self) -> dict | None:
        return best_in_target(self.history_frame(), self.config)


def run_search(
    space: Space,
    oracle: Callable[[list[Arch]], list[float | None]],
    config: SearchConfig,
    key_fn: Callable[[str], str] | None = None,
    progress: Callable[[str], None] | None = None,
    **cost_kwargs,
) -> LayerNAS:
    """In-process driver: ask, evaluate with ``oracle`` (a batch function), tell, repeat."""
    check_target_reachable(space, config, **cost_kwargs)
    engine = LayerNAS(space, config, key_fn=key_fn, cost_kwargs=cost_kwargs)
    while True:
        batch = engine.ask()
        if not batch:
            break
        stage = (engine.sweep, engine.layer)
        accs = oracle(batch)
        engine.tell(list(zip(batch, accs)))
        if progress is not None:
            progress(f"sweep {stage[0]} layer {stage[1]}: evaluated {len(batch)}, {engine.trials} trials so far")
    return engine
