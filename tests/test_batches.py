"""Trial batches and the controller's memoised walk (layernas/workflow/controller.py), without
Snakemake: the batch size setting, batches cut from a children table, a batch job that resumes
from the trials it finished, a deleted trial making the batch's next run the input, and a walk
that asks each stage's checkpoint once (and the last stage on disk first, on a resumed run).
The workflow runs (batched == unbatched tables, a batch killed half-way) are in test_workflow.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from layernas.evaluate.trial import run_trial_batch
from layernas.workflow.config import check_config
from layernas.workflow.controller import Controller, inline_trials, trial_batch
from layernas.workflow.stages import Context, walk, write_aggregate, write_children

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, **extra) -> dict:
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg.update(results=str(tmp_path / "results"), **extra)
    return check_config(cfg)


@pytest.mark.parametrize("setting, evaluator, expected", [
    (None, "tabular", None), (None, "train", 1), ("all", "train", None), (5, "tabular", 5), (1, "tabular", 1),
])
def test_batch_setting(setting, evaluator, expected):
    cfg = {"evaluator": evaluator, "resources": {"trial": {"batch": setting}}}
    assert trial_batch(cfg) == expected


@pytest.mark.parametrize("bad", [0, -2, "some", True, 1.5])
def test_bad_batch_setting_is_refused(bad):
    with pytest.raises(ValueError, match="resources.trial.batch"):
        trial_batch({"evaluator": "tabular", "resources": {"trial": {"batch": bad}}})


@pytest.mark.parametrize("extra, inline", [
    ({}, True), ({"resources": {"trial": {"local": True}}}, True), ({"resources": {"trial": {"local": False}}}, False),
    ({"trial_timeout": 5}, False), ({"evaluator": "train"}, False),
])
def test_lookups_on_the_submitting_machine_without_a_time_limit_run_inside_the_controller(extra, inline):
    assert inline_trials({"evaluator": "tabular", **extra}) is inline


def test_the_schema_refuses_a_bad_batch(tmp_path):
    from layernas.workflow.config import ConfigError

    with pytest.raises(ConfigError, match="resources.trial.batch"):
        config(tmp_path, resources={"trial": {"batch": "half"}})
    with pytest.raises(ConfigError, match="resources.trial.batch"):
        config(tmp_path, resources={"trial": {"batch": 0}})


def first_stage(tmp_path: Path, batch) -> tuple[Context, Controller]:
    ctx = Context(config(tmp_path, resources={"trial": {"batch": batch}}))
    write_children(ctx, 0, 0, None, None, ctx.children_path(0, 0))
    return ctx, Controller(ctx)


def test_batches_cut_the_stage_in_table_order(tmp_path):
    ctx, ctl = first_stage(tmp_path, 3)
    import pandas as pd

    kids = pd.read_parquet(ctx.children_path(0, 0))
    wanted = [(k, a) for k, a, act in zip(kids["key"], kids["arch"], kids["action"]) if act == "evaluate"]
    chunks = ctl.chunks(0, 0)
    assert [len(c) for c in chunks] == [3] * (len(wanted) // 3) + ([len(wanted) % 3] if len(wanted) % 3 else [])
    assert [item for c in chunks for item in c] == wanted
    assert ctl.chunk(0, 0, 0) == [list(x) for x in wanted[:3]]
    everything = Controller(Context(config(tmp_path, resources={"trial": {"batch": "all"}})))
    assert everything.chunks(0, 0) == (tuple(wanted),)


def run_batch(ctx: Context, ctl: Controller, c: int, v: int) -> dict:
    return run_trial_batch(ctx.config, ctl.chunk(0, 0, c), ctl.layout.batch(0, 0, c, v), ctx.layout.trials_dir,
                           str(ctx.layout.log("trials", "{key}")))


def test_a_batch_resumes_from_its_finished_trials_and_a_deleted_one_is_its_next_run(tmp_path):
    ctx, ctl = first_stage(tmp_path, "all")
    keys = [k for k, _ in ctl.chunk(0, 0, 0)]
    assert ctl.manifest(0, 0, 0) == str(ctl.layout.batch(0, 0, 0, 0))  # never ran: run 0
    # A batch killed after its first trial: that one is finished, the manifest is not written.
    run_trial_batch(ctx.config, ctl.chunk(0, 0, 0)[:1], tmp_path / "elsewhere.json", ctx.layout.trials_dir,
                    str(ctx.layout.log("trials", "{key}")))
    first = json.loads(ctx.layout.trial_metrics(keys[0]).read_text())["finished_at"]
    assert ctl.manifest(0, 0, 0) == str(ctl.layout.batch(0, 0, 0, 0))
    out = run_batch(ctx, ctl, 0, 0)  # run again: only the unfinished trials are evaluated
    assert [t["ran"] for t in out["trials"]] == [False] + [True] * (len(keys) - 1)
    assert json.loads(ctx.layout.trial_metrics(keys[0]).read_text())["finished_at"] == first
    assert all(ctx.layout.log("trials", k).exists() for k in keys[1:])
    assert ctl.manifest(0, 0, 0) == str(ctl.layout.batch(0, 0, 0, 0))
    assert Controller(ctx).redo_targets() == []
    # A trial deleted after the batch ran: the batch's next run is the aggregate's input and a target.
    shutil.rmtree(ctx.layout.trial_dir(keys[2]))
    nxt = str(ctl.layout.batch(0, 0, 0, 1))
    assert ctl.manifest(0, 0, 0) == nxt and Controller(ctx).redo_targets() == [nxt]
    assert ctl.aggregate_inputs(0, 0)["batches"] == [nxt]
    out = run_batch(ctx, ctl, 0, 1)
    assert [t["key"] for t in out["trials"] if t["ran"]] == [keys[2]]
    assert ctl.manifest(0, 0, 0) == nxt and Controller(ctx).redo_targets() == []
    # Another search's files in the directory: no redo targets from them.
    shutil.rmtree(ctx.layout.trial_dir(keys[1]))
    other = Controller(Context(config(tmp_path, seed=7)))
    assert other.redo_targets() == []


class Incomplete(Exception):
    """Stands in for Snakemake's IncompleteCheckpointException."""


def finished_search(tmp_path: Path) -> Context:
    """Every stage of the .test search written in-process, as the workflow's steps write them."""
    from layernas.core.search import stage_after, stage_before
    from layernas.evaluate.trial import TrialRunner

    ctx = Context(config(tmp_path))
    runner = TrialRunner(ctx.config)
    r, l = 0, 0
    while True:
        prev = stage_before(ctx.space, r, l)
        hist = ctx.history_path(*prev) if prev else None
        kids = write_children(ctx, r, l, hist, ctx.buckets_path(r, l - 1) if l else None, ctx.children_path(r, l))
        for key, arch in kids.loc[kids["action"] == "evaluate", ["key", "arch"]].itertuples(index=False):
            runner.run(arch, key, ctx.layout.trial_dir(key))
        inputs = {"children": ctx.children_path(r, l), **({"history": hist} if hist else {})}
        if r > 0:
            inputs["prev_table"] = ctx.buckets_path(r - 1, l)
            if l + 1 < ctx.space.num_layers:
                inputs["prev_next_children"] = ctx.children_path(r - 1, l + 1)
        write_aggregate(ctx, r, l, inputs, ctx.buckets_path(r, l), ctx.history_path(r, l))
        if Controller(ctx).on_disk().done:
            return ctx
        r, l = stage_after(ctx.space, r, l)


def test_the_walk_asks_each_checkpoint_once_and_a_resumed_run_every_stage_on_disk_first(tmp_path):
    ctx = finished_search(tmp_path)
    expected = walk(ctx, lambda r, l: ctx.children_path(r, l))
    stages = expected[0]
    assert len(stages) == 12  # the .test search: 4 sweeps of 3 layers
    confirmed: set = set()
    asked: list = []

    def get(r, l):
        asked.append((r, l))
        if (r, l) not in confirmed:
            raise Incomplete(r, l)
        return ctx.children_path(r, l)

    ctl = Controller(ctx)
    with pytest.raises(Incomplete):  # a resumed run's first evaluation: nothing confirmed yet
        ctl.walk(get)
    # ... so the summary asks for every stage on disk, in order, once per process
    assert ctl.chain_on_disk() == [ctx.children_path(r, l) for r, l in stages]
    assert ctl.chain_on_disk() == []
    confirmed |= set(stages[:5])  # Snakemake confirms some checkpoints, then all
    asked.clear()
    with pytest.raises(Incomplete) as exc:
        ctl.walk(get)
    assert exc.value.args == stages[5] and asked == stages[:6]
    confirmed |= set(stages)
    asked.clear()
    assert ctl.walk(get) == expected
    assert asked == stages[5:]  # each stage asked once over the calls
    asked.clear()
    assert ctl.walk(get) == expected and asked == []
    fresh = Controller(Context(config(tmp_path / "elsewhere")))
    assert fresh.chain_on_disk() == []  # nothing on disk: the walk's own first stage
