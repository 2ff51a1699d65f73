"""What the workflow's input functions ask the controller, answered at a flat cost per stage.

Snakemake re-evaluates the DAG after every checkpoint. Asked naively, each re-evaluation walks
every stage done so far (a ``checkpoints.children.get()`` each) and lists every trial of the
search, so the controller's time grows with the square of the search (0.3-0.4 s per trial at
1,000 trials, a nothing-to-do re-run of 45 s; docs/benchmarks.md). Here:

- the walk over the stages is resumed where the previous evaluation stopped: a stage whose
  children checkpoint Snakemake confirmed stays confirmed for the rest of the process, so each
  stage is asked once, not once per later stage;
- on a run's first evaluation, when nothing is confirmed yet, the summary asks for the children
  checkpoint of every stage on disk at once, in order: Snakemake confirms every finished stage
  in one pass, and a resumed or nothing-to-do run costs two DAG updates instead of one per stage;
- trials run in **batches** (``resources.trial.batch``; a stage's whole set of trials per job
  for table lookups, one per job when training): a batch job's declared output is a small
  manifest, ``search/r{r}/l{l}/batch{c}.{v}.json``, and its trials are written to the trial
  store exactly as a one-trial job writes them. So the DAG holds one job per batch, not one per
  trial, and the aggregate of a stage waits for its batches' manifests;
- a trial deleted after its batch ran (``layernas audit --fix``, ``retry-failed``, by hand) makes
  the batch's next run (``v + 1``) the input instead: that job redoes only the missing trials, the
  stage's aggregate re-runs on its changed input, and the stages after it by modification time;
- table lookups on the submitting machine run inside the controller (``inline_trials``).

Every read is memoised on the file's (path, mtime, size), and nothing here globs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

from layernas.core.status import Action
from layernas.store.layout import METRICS, Layout
from layernas.workflow.stages import Context, _read_parquet, _stat_key, read_parquet_cached

Stage = tuple[int, int]


def trial_batch(config: dict) -> int | None:
    """Trials per trial job, from ``resources.trial.batch``: an integer, or ``"all"`` (every trial
    of a stage in one job; returned as None). Unset (null): ``"all"`` for table lookups, which
    take milliseconds, and 1 for training, where one job per trial keeps a trial's GPU, memory
    and time limit its own. Raises ValueError for anything else."""
    raw = ((config.get("resources") or {}).get("trial") or {}).get("batch")
    if raw is None:
        return 1 if config.get("evaluator", "train") == "train" else None
    if raw == "all":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ValueError(f"resources.trial.batch: must be an integer >= 1 or 'all', got {raw!r}")
    return raw


def inline_trials(config: dict) -> bool:
    """Whether trial batches run inside the controller: table lookups on the submitting machine
    (``resources.trial.local`` unset or true) without a ``trial_timeout`` (a limit needs the
    job's own process: SIGALRM works on a main thread only). A batch of lookups takes
    milliseconds; a Python process for it ~0.6 s on a 2-core machine, and loads the oracle again."""
    local = ((config.get("resources") or {}).get("trial") or {}).get("local")
    return config.get("evaluator") == "tabular" and local is not False and not config.get("trial_timeout")


@lru_cache(maxsize=8192)
def _chunks(path: str, mtime_ns: int, size: int, batch: int | None) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The (key, arch) pairs a children table asks to evaluate, in table order, cut into batches."""
    kids = _read_parquet(path, mtime_ns, size)
    mask = (kids["action"] == Action.EVALUATE).to_numpy()
    items = tuple(zip(map(str, kids["key"].to_numpy()[mask]), map(str, kids["arch"].to_numpy()[mask])))
    n = len(items) if batch is None else batch
    return tuple(items[i:i + n] for i in range(0, len(items), max(n, 1)))


@dataclass
class WalkState:
    """Where the walk over the stages stands: the stages confirmed so far, in order, and the next
    stage to ask for (``r``, ``l``); ``had``: whether sweep ``r`` has had children so far."""

    stages: list[Stage] = field(default_factory=list)
    r: int = 0
    l: int = 0
    had: bool = False
    done: bool = False
    stopped: bool = False

    def advance(self, empty: bool, stopped: bool, num_layers: int) -> None:
        """Take the children table of stage (r, l) (empty or not, stopped by the budget or not)."""
        self.stages.append((self.r, self.l))
        self.had |= not empty
        if not empty and stopped:
            self.done, self.stopped = True, True
            return
        self.l += 1
        if self.l == num_layers:
            if not self.had:
                self.done = True
                return
            self.r, self.l, self.had = self.r + 1, 0, False


def _advance(state: WalkState, path: str, num_layers: int) -> None:
    kids = read_parquet_cached(path)
    state.advance(kids.empty, not kids.empty and bool(kids["stopped"].iloc[0]), num_layers)


class Controller:
    """The memoised state behind the rules' input functions (one per Snakemake process)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.layout: Layout = ctx.layout
        self.batch = trial_batch(ctx.config)
        self._walk = WalkState()
        self._primed = False
        self._redo: list[str] | None = None

    # ------------------------------------------------------------------ the walk over stages

    def walk(self, get_children) -> tuple[list[Stage], bool]:
        """All stages of the search, in order, as far as the finished checkpoints tell (what
        ``stages.walk`` returns), resumed from the previous call. ``get_children(r, l)`` returns
        the path of children(r, l) or raises (Snakemake's IncompleteCheckpointException) while
        Snakemake has not confirmed that checkpoint; the exception goes on to Snakemake."""
        st = self._walk
        while not st.done:
            _advance(st, get_children(st.r, st.l), self.ctx.space.num_layers)
        return list(st.stages), st.stopped

    def chain_on_disk(self) -> list[str]:
        """The children tables of every stage on disk, in the order of the walk: what the
        summary asks for, as checkpoint targets, on a run's first evaluation (nothing confirmed
        yet, once per process), so Snakemake takes every finished stage into the DAG at once
        and confirms their checkpoints in one pass instead of one stage per DAG update. In
        order, each stage's inputs are in the DAG before it: asking for the last stage alone
        makes Snakemake recurse through the whole chain, which fails past a few hundred stages
        (then it finds one stage per update again). Empty on later calls."""
        if self._primed or self._walk.stages:
            return []
        self._primed = True
        return [self.ctx.children_path(r, l) for r, l in self.on_disk().stages]

    def on_disk(self) -> WalkState:
        """The walk over the children tables on disk alone, without asking Snakemake (so from
        files that may be stale: only a hint, or where staleness does no harm)."""
        st = WalkState()
        while not st.done:
            path = self.ctx.children_path(st.r, st.l)
            if not os.path.exists(path):
                break
            try:
                _advance(st, path, self.ctx.space.num_layers)
            except Exception:  # noqa: BLE001 - a damaged table ends the hint; the rules' own reads report it
                break
        return st

    # ------------------------------------------------------------------ batches

    def chunks(self, r: int, l: int) -> tuple[tuple[tuple[str, str], ...], ...]:
        return _chunks(*_stat_key(self.ctx.children_path(r, l)), self.batch)

    def chunk(self, r: int, l: int, c: int) -> list[list[str]]:
        """Batch ``c`` of stage (r, l): [[key, arch], ...] (the trial rule's params)."""
        chunks = self.chunks(r, l)
        return [list(item) for item in chunks[c]] if c < len(chunks) else []

    def latest_run(self, r: int, l: int, c: int) -> int:
        """The last run of batch c of stage (r, l) with a manifest on disk; -1 when none."""
        v = -1
        while os.path.exists(self.layout.batch(r, l, c, v + 1)):
            v += 1
        return v

    def complete(self, items) -> bool:
        """Whether every trial of a batch is in the store (a stat each)."""
        store = str(self.layout.trials_dir)
        return all(os.path.exists(os.path.join(store, key, METRICS)) for key, _ in items)

    def manifest(self, r: int, l: int, c: int) -> str:
        """The manifest of batch c of stage (r, l) its aggregate waits for: the batch's latest
        run when every trial of it is in the store, else its next run (which evaluates the
        missing ones; run 0 when the batch never finished)."""
        v = self.latest_run(r, l, c)
        if v >= 0 and not self.complete(self.chunks(r, l)[c]):
            v += 1
        return str(self.layout.batch(r, l, c, max(v, 0)))

    def aggregate_inputs(self, r: int, l: int) -> dict:
        inputs: dict = self.ctx.aggregate_inputs(r, l)
        inputs["batches"] = [self.manifest(r, l, c) for c in range(len(self.chunks(r, l)))]
        return inputs

    def redo_targets(self) -> list[str]:
        """The next run of every finished batch (of the stages on disk) that lost a trial since
        it ran: targets of `rule all`, so the same command redoes exactly those trials, then
        the stages after them re-run. Nothing when the files on disk are another search's
        (search.json differs: every stage re-runs anyway, and asks for what it needs)."""
        if self._redo is not None:  # once per process: Snakemake asks again when the summary is confirmed
            return self._redo
        self._redo = out = []
        if not self.same_search():
            return out
        for r, l in self.on_disk().stages:
            for c, items in enumerate(self.chunks(r, l)):
                v = self.latest_run(r, l, c)
                if v >= 0 and not self.complete(items):
                    out.append(str(self.layout.batch(r, l, c, v + 1)))
        return out

    def same_search(self) -> bool:
        """Whether search.json records this config's search signature."""
        try:
            meta = json.loads(self.layout.search_meta.read_text())
        except (OSError, ValueError):
            return False
        sig = json.loads(json.dumps(self.ctx.signature, default=str))
        return isinstance(meta, dict) and all(meta.get(k) == v for k, v in sig.items())
