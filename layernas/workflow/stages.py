"""Library side of the Snakemake workflow: config checks, paths, stage inputs and the
stage-by-stage driver steps the rule scripts call. Kept here (not in .smk files) so it is
tested without Snakemake and the rules stay thin.

Files of one search (``R`` = results directory, r = sweep, l = layer, both 0-based):

    R/search/r{r}/l{l}/children.parquet   checkpoint: children of stage (r, l) + action
    R/trials/{key}/metrics.json           one trial (trial.json, log.txt beside it)
    R/search/r{r}/l{l}/buckets.parquet    table(r, l): the memorial table M_l after (r, l)
    R/search/r{r}/l{l}/history.parquet    every child generated up to and including (r, l)
    R/search/summary.json, history.parquet, tables.parquet, top.parquet   after the search
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layernas.search import (
    Geometry,
    SearchConfig,
    check_target_reachable,
    finish_stage,
    plan_stage,
    results_from_history,
    stage_before,
    stage_children,
)
from layernas.space import Space, SpaceError, load_space
from layernas.store import atomic_write_json, atomic_write_parquet, config_hash, trial_key

EVALUATORS = ("train", "tabular")


class ConfigError(ValueError):
    """A workflow config problem, named by field and value, found before any job starts."""


# --------------------------------------------------------------------------- config


SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def normalize_config(config: dict) -> None:
    """First thing the Snakefile runs. Accepts numbers that YAML 1.1 reads as strings
    (``2.6e6`` without an exponent sign is a string to PyYAML), so a user's natural notation
    passes schema validation; then checks the schema itself and stops the process with one
    line naming the field and value (Snakemake's own ``validate``, which follows, would print
    the whole schema for an unknown key)."""
    target = config.get("target")
    if isinstance(target, dict):
        for k in ("min", "max"):
            v = target.get(k)
            if isinstance(v, str):
                try:
                    target[k] = float(v)
                except ValueError:
                    pass  # the schema check names the field
    try:
        check_schema(config)
    except ConfigError as exc:
        raise SystemExit(f"layernas: config error: {exc}") from None


def _show(value: Any) -> str:
    """A config value as the user wrote it in YAML (null, true, 'text', 3)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return repr(value)


def check_schema(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Raise ConfigError naming the field and value of the first schema violation (no-op when
    the schema file is not next to the package, e.g. a non-editable install: Snakemake's
    validate still runs)."""
    schema_path = Path(schema_path)
    if not schema_path.is_file():
        return
    import jsonschema
    import yaml

    schema = yaml.safe_load(schema_path.read_text())
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if err is not None:
        raise ConfigError(_schema_message(err))


def _schema_message(err) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    kind, want, got = err.validator, err.validator_value, err.instance
    if kind == "additionalProperties" and isinstance(got, dict):
        known = list(err.schema.get("properties", {}))
        extra = sorted(k for k in got if k not in known)
        if extra:
            field = f"{path}.{extra[0]}" if path else extra[0]
            return (f"config field {field!r}: unknown field (value {_show(got[extra[0]])}); "
                    f"known fields{' of ' + path if path else ''}: {', '.join(known)}")
    if kind == "required" and isinstance(got, dict):
        missing = [k for k in want if k not in got]
        if missing:
            field = f"{path}.{missing[0]}" if path else missing[0]
            return f"config field {field!r}: is required{' in ' + path if path else ''}"
    field = path or "(top level)"
    if kind == "type":
        types = " or ".join(want) if isinstance(want, list) else want
        return f"config field {field!r}: must be of type {types}, got {_show(got)}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"config field {field!r}: must be {op} {want}, got {_show(got)}"
    if kind == "enum":
        return f"config field {field!r}: must be one of {', '.join(map(str, want))}, got {_show(got)}"
    return f"config field {field!r}: {err.message}"


def _field_error(section: str, exc: Exception) -> ConfigError:
    """ConfigError for a message from a section's own checks: ``train.lr: must be > 0`` becomes
    ``config field 'train.lr': must be > 0`` (the field named once)."""
    msg = str(exc)
    head, sep, rest = msg.partition(": ")
    if sep and (head == section or head.startswith(section + ".")) and " " not in head:
        return ConfigError(f"config field {head!r}: {rest}")
    return ConfigError(f"config field {section!r}: {msg}")


def search_config(config: dict) -> SearchConfig:
    t, s = config["target"], config["search"]
    return SearchConfig(
        target_min=float(t["min"]),
        target_max=float(t["max"]),
        buckets=int(s["buckets"]),
        replicas=int(s["replicas"]),
        per_sweep=int(s["per_sweep"]),
        budget=None if s.get("budget") in (None, 0) else int(s["budget"]),
        metric=t.get("metric", "madds"),
    )


def cost_kwargs(config: dict) -> dict:
    """Input size / classes for costing: the data set's, when training; else the space's."""
    out = {}
    for key in ("input_size", "num_classes", "input_channels"):
        if config.get("cost", {}).get(key):
            out[key] = int(config["cost"][key])
    return out


def oracle_spec(config: dict, space: Space):
    from layernas.oracle import load_oracle

    return load_oracle(str(config["oracle"]), space)


from layernas.trialjob import train_hash  # noqa: E402  (shared with the light trial job)


def validate(config: dict) -> None:
    """Semantic checks the JSON schema cannot express; raise ConfigError naming the field."""
    try:
        space = load_space(config["space"])
    except SpaceError as exc:
        raise ConfigError(f"config field 'space': {exc}") from None
    if config["evaluator"] not in EVALUATORS:
        raise ConfigError(f"config field 'evaluator': must be one of {', '.join(EVALUATORS)}, "
                          f"got {_show(config['evaluator'])}")
    t = config["target"]
    if float(t["min"]) > float(t["max"]):
        raise ConfigError(f"config field 'target.min': {t['min']:g} is above target.max {t['max']:g}")
    try:
        cfg = search_config(config)
    except ValueError as exc:
        raise ConfigError(f"config field 'search'/'target': {exc}") from None
    try:
        check_target_reachable(space, cfg, **cost_kwargs(config))
    except ValueError as exc:
        raise ConfigError(f"config field 'target': {exc}") from None
    if config["evaluator"] == "tabular":
        if not config.get("oracle"):
            raise ConfigError("config field 'oracle': evaluator 'tabular' needs an oracle (table path or "
                              f"module:function), got {_show(config.get('oracle'))}")
        try:
            oracle_spec(config, space)
        except ValueError as exc:
            raise ConfigError(f"config field 'oracle': {exc}") from None
    elif space.backbone == "additive":
        raise ConfigError(
            f"config field 'evaluator': space {space.name} has no network to train; use evaluator: tabular"
        )
    else:
        from layernas.data import check_source
        from layernas.train import validate_train_config

        try:
            train = validate_train_config(config["train"])
            check_source(train.dataset, train.data_dir)  # files only, nothing is loaded
        except (TypeError, ValueError) as exc:
            raise _field_error("train", exc) from None
        final = config.get("final") or {}
        if final.get("activate", True):
            from layernas.final import FinalConfig

            try:
                FinalConfig.from_dict(final)
            except (TypeError, ValueError) as exc:
                raise _field_error("final", exc) from None
    validate_transfer(config)


def transfer_plan(config: dict) -> dict[str, Any]:
    """What the transfer stage will use: ``coco_root`` (the user's COCO-layout directory) or
    ``gen`` (fields of the generated set), and ``recipe`` (TransferConfig fields). The seeds
    default to the run's seed so one config value makes the whole run reproducible."""
    t = config.get("transfer") or {}
    data = dict(t.get("data") or {})
    recipe = dict(t.get("recipe") or {})
    recipe.setdefault("seed", int(config.get("seed", 0)))
    root = data.pop("coco_root", None)
    if root is not None:
        return {"coco_root": str(root), "gen": None, "recipe": recipe}
    data.setdefault("seed", int(config.get("seed", 0)))
    return {"coco_root": None, "gen": data, "recipe": recipe}


def transfer_runs(config: dict) -> bool:
    """Whether the transfer stage has work: it is on and there are final models."""
    return bool((config.get("transfer") or {}).get("activate")) and config.get("evaluator") == "train" \
        and bool((config.get("final") or {}).get("activate", True))


def validate_transfer(config: dict) -> None:
    """Raise ConfigError for a transfer section that would fail only after the search."""
    # The stage transfers the final models; a run without them (evaluator tabular, or
    # final.activate false) has nothing to transfer, and the embedded config.yaml that every
    # run inherits turns transfer on, so that is not an error.
    if not transfer_runs(config):
        return
    from layernas.detdata import GenConfig, split_paths
    from layernas.transfer import TransferConfig

    plan = transfer_plan(config)
    try:
        recipe = TransferConfig.from_dict(plan["recipe"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'transfer.recipe': {exc}") from None
    if plan["coco_root"] is not None:
        try:
            for split in (recipe.train_split, recipe.val_split):
                split_paths(plan["coco_root"], split)
        except ValueError as exc:
            raise ConfigError(f"config field 'transfer.data.coco_root': {exc}") from None
    else:
        try:
            GenConfig.from_dict(plan["gen"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field 'transfer.data': {exc}") from None


# --------------------------------------------------------------------------- context


class Context:
    """What every stage of one workflow run shares; built once per Snakemake process."""

    def __init__(self, config: dict):
        self.config = config
        self.results = Path(config.get("results", "results"))
        self.space = load_space(config["space"])
        self.search = search_config(config)
        self.cost_kwargs = cost_kwargs(config)
        self.geo = Geometry.of(self.space, self.search, **self.cost_kwargs)
        self.seed = int(config.get("seed", 0))
        self.train_hash = train_hash(config, self.space)

    @property
    def signature(self) -> dict:
        """What decides the search trajectory; a rule param, so changing any of it re-runs
        the (cheap) search stages while every trial is found again by its content key."""
        return {
            "space": self.space.space_id, "train_hash": self.train_hash, "seed": self.seed,
            "search": dataclasses.asdict(self.search), "cost": self.cost_kwargs, "budget": self.geo.budget,
        }

    def key(self, arch: str) -> str:
        return trial_key(self.space.space_id, arch, self.train_hash, self.seed)

    # paths
    def stage_dir(self, r: int, l: int) -> Path:
        return self.results / "search" / f"r{r}" / f"l{l}"

    def children_path(self, r: int, l: int) -> str:
        return str(self.stage_dir(r, l) / "children.parquet")

    def buckets_path(self, r: int, l: int) -> str:
        return str(self.stage_dir(r, l) / "buckets.parquet")

    def history_path(self, r: int, l: int) -> str:
        return str(self.stage_dir(r, l) / "history.parquet")

    def trial_path(self, key: str) -> str:
        return str(self.results / "trials" / key / "metrics.json")

    # stage inputs (file names only; used by the rules' input functions)
    def children_inputs(self, r: int, l: int) -> dict[str, str]:
        out = {}
        prev = stage_before(self.space, r, l)
        if prev is not None:
            out["history"] = self.history_path(*prev)
        if l > 0:
            out["parents_table"] = self.buckets_path(r, l - 1)
        return out

    def aggregate_inputs(self, r: int, l: int) -> dict[str, str]:
        out = {"children": self.children_path(r, l)}
        prev = stage_before(self.space, r, l)
        if prev is not None:
            out["history"] = self.history_path(*prev)
        if r > 0:
            out["prev_table"] = self.buckets_path(r - 1, l)
            if l + 1 < self.space.num_layers:
                out["prev_next_children"] = self.children_path(r - 1, l + 1)
        return out


def read_parquet_cached(path: str) -> pd.DataFrame:
    """Parquet read memoised on (path, mtime, size): Snakemake re-evaluates the DAG after every
    checkpoint and walks all stages each time, so without this the walk is quadratic in reads."""
    st = os.stat(path)
    return _read_parquet(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _read_parquet(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def _maybe(path: str | None) -> pd.DataFrame | None:
    return None if path is None else pd.read_parquet(path)


# --------------------------------------------------------------------------- stage steps


def write_children(ctx: Context, r: int, l: int, history: str | None, parents_table: str | None, out: str) -> pd.DataFrame:
    """Checkpoint step: children of (r, l) with their planned action."""
    hist = _maybe(history)
    evaluated = results_from_history(hist) if hist is not None else {}
    kids = stage_children(ctx.geo, r, l, _maybe(parents_table), ctx.key)
    planned, stopped = plan_stage(kids, evaluated, len(evaluated), ctx.geo.budget)
    planned = planned.assign(stopped=stopped)
    atomic_write_parquet(out, planned)
    # Metadata for `layernas status` / audit (same content every stage, written atomically).
    atomic_write_json(ctx.results / "search" / "search.json", {**ctx.signature, "target": [
        ctx.search.target_min, ctx.search.target_max], "metric": ctx.search.metric,
        "space_name": ctx.space.name, "evaluator": ctx.config["evaluator"]})
    return planned


def keys_to_evaluate(children: pd.DataFrame) -> list[str]:
    return list(children.loc[children["action"] == "evaluate", "key"])


def read_metrics(path: str | Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def metrics_accuracy(metrics: dict) -> float:
    """The proxy metric of a finished trial: validation accuracy, nan when it failed."""
    if metrics.get("status") != "ok":
        return float("nan")
    for name in ("accuracy", "val_accuracy", "val_acc"):
        if metrics.get(name) is not None:
            return float(metrics[name])
    return float("nan")


def write_aggregate(ctx: Context, r: int, l: int, inputs: dict[str, str], buckets_out: str, history_out: str) -> None:
    """Aggregate step: table(r, l) and the cumulative history after (r, l)."""
    planned = pd.read_parquet(inputs["children"])
    hist = _maybe(inputs.get("history"))
    evaluated = results_from_history(hist) if hist is not None else {}
    new = {}
    for a, key in planned.loc[planned["action"] == "evaluate", ["arch", "key"]].itertuples(index=False):
        new[a] = metrics_accuracy(read_metrics(ctx.trial_path(key)))
    table, stage_hist = finish_stage(
        planned.drop(columns=["stopped"]),
        new,
        evaluated,
        _maybe(inputs.get("prev_table")),
        _maybe(inputs.get("prev_next_children")),
        l,
        ctx.search.replicas,
        0 if hist is None else len(hist),
    )
    frames = [f for f in (hist, stage_hist) if f is not None and not f.empty]
    full = pd.concat(frames, ignore_index=True) if frames else stage_hist
    atomic_write_parquet(buckets_out, table)
    atomic_write_parquet(history_out, full)


def walk(ctx: Context, get_children) -> tuple[list[tuple[int, int]], bool]:
    """All stages of the search, in order, as far as the finished checkpoints tell.

    ``get_children(r, l)`` returns the path of children(r, l) or raises (Snakemake's
    IncompleteCheckpointException) when that checkpoint has not run yet; it is called for
    every layer of every sweep on each re-evaluation (snakemake issue 3862)."""
    stages: list[tuple[int, int]] = []
    r = 0
    while True:
        had = False
        for l in range(ctx.space.num_layers):
            kids = read_parquet_cached(get_children(r, l))
            stages.append((r, l))
            had |= not kids.empty
            if not kids.empty and bool(kids["stopped"].iloc[0]):
                return stages, True
        if not had:
            return stages, False
        r += 1


def latest_tables(ctx: Context, stages: list[tuple[int, int]]) -> dict[int, str]:
    latest: dict[int, str] = {}
    for r, l in stages:
        latest[l] = ctx.buckets_path(r, l)
    return latest


def top_models(history: pd.DataFrame, config: SearchConfig, n: int) -> pd.DataFrame:
    """The n best distinct evaluated models in the target range (the final-stage input)."""
    ok = history[history["status"].isin(["ok"]) & np.isfinite(history["accuracy"].astype(float))]
    ok = ok[(ok["cost"] >= config.target_min) & (ok["cost"] <= config.target_max)]
    ok = ok.sort_values(["accuracy", "cost", "arch"], ascending=[False, True, True], kind="mergesort")
    return ok.drop_duplicates("arch").head(n).reset_index(drop=True)


def write_summary(ctx: Context, stages, stopped: bool, history_in: str, tables: dict[int, str], out: dict[str, str]) -> dict:
    from layernas.search import best_in_target

    hist = pd.read_parquet(history_in)
    frames = [pd.read_parquet(p) for _, p in sorted(tables.items())]
    frames = [f for f in frames if not f.empty]
    tables_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    n_top = int(ctx.config.get("final", {}).get("top_n", 3))
    top = top_models(hist, ctx.search, n_top)
    final_cfg = ctx.config.get("final", {})
    top = top.assign(final_key=[final_key(ctx, a, final_cfg) for a in top["arch"]])
    counts = hist["status"].value_counts().to_dict()
    summary = {
        "space": ctx.space.name,
        "space_id": ctx.space.space_id,
        "evaluator": ctx.config["evaluator"],
        "target": [ctx.search.target_min, ctx.search.target_max],
        "metric": ctx.search.metric,
        "buckets": ctx.search.buckets,
        "replicas": ctx.search.replicas,
        "per_sweep": ctx.search.per_sweep,
        "best": best_in_target(hist, ctx.search),
        "trials": int(counts.get("ok", 0) + counts.get("failed", 0)),
        "failed": int(counts.get("failed", 0)),
        "cached": int(counts.get("cached", 0)),
        "dropped": int(counts.get("dropped", 0)),
        "sweeps": int(hist["sweep"].nunique()) if len(hist) else 0,
        "stages": len(stages),
        "stopped_by_budget": bool(stopped),
        "budget": ctx.geo.budget,
        "top": top[["arch", "key", "final_key", "cost", "accuracy"]].to_dict("records"),
    }
    atomic_write_parquet(out["history"], hist)
    atomic_write_parquet(out["tables"], tables_df)
    atomic_write_parquet(out["top"], top)
    atomic_write_json(out["summary"], summary)
    return summary


def final_key(ctx: Context, arch: str, final_cfg: dict) -> str:
    h = config_hash({"final": {k: v for k, v in final_cfg.items() if k not in ("activate", "top_n")},
                     "train": ctx.config.get("train")})
    return trial_key(ctx.space.space_id, arch, h, ctx.seed)


# --------------------------------------------------------------------------- key lookup


def arch_for_key(results: str | Path, key: str) -> str:
    """The arch of a trial key, from the children tables on disk (cluster jobs re-parse the
    Snakefile without the driver's memory, so the lookup must work from files alone)."""
    for path in sorted(Path(results, "search").glob("r*/l*/children.parquet")):
        arch = _arch_by_key(str(path), "key").get(key)
        if arch is not None:
            return arch
    top = Path(results, "search", "top.parquet")
    if top.exists():
        arch = _arch_by_key(str(top), "final_key").get(key)
        if arch is not None:
            return arch
    raise KeyError(f"trial key {key} is not in any children table under {results}/search")


def _arch_by_key(path: str, column: str) -> dict[str, str]:
    """``column`` -> arch of one table, memoised like ``read_parquet_cached``: Snakemake asks
    for every trial's params on every DAG update, and a boolean filter per table per trial made
    a nothing-to-do re-run of a 1,000-trial search spend 46 s of its 64 s here (measured)."""
    st = os.stat(path)
    return _arch_index(path, column, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _arch_index(path: str, column: str, mtime_ns: int, size: int) -> dict[str, str]:
    table = _read_parquet(path, mtime_ns, size)
    index: dict[str, str] = {}
    for k, arch in zip(table[column], table["arch"]):
        index.setdefault(str(k), str(arch))
    return index


def load_config_file(path: str | Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path(path).read_text())
