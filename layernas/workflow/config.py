"""Workflow config checks, in one place: the Snakefile (through common.smk), the CLI and the
tests all call ``check_config``. It fills the schema's defaults, then raises ConfigError
naming the field and value of the first problem; only the entry points turn that into an
exit. Nothing here imports torch, so the controller validates a config in well under a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from layernas.core.search import SearchConfig, check_target_reachable
from layernas.core.space import Space, SpaceError, load_space
from layernas.evaluate.recipe import FinalConfig, SupernetConfig, TrainConfig, supernet_recal_samples
from layernas.evaluate.sources import check_source

EVALUATORS = ("train", "tabular", "supernet")
# Evaluators whose found models are networks to retrain from scratch (final, export, transfer).
TRAINED = ("train", "supernet")


class ConfigError(ValueError):
    """A workflow config problem, named by field and value, found before any job starts."""


SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def normalize_config(config: dict) -> None:
    """First thing the Snakefile runs. Accepts numbers that YAML 1.1 reads as strings
    (``2.6e6`` without an exponent sign is a string to PyYAML), so a user's natural notation
    passes schema validation; then checks the schema itself and stops the process with one
    line naming the field and value (Snakemake's own ``validate`` would print the whole schema
    for an unknown key)."""
    target = config.get("target")
    if isinstance(target, dict):
        for k in ("min", "max"):
            v = target.get(k)
            if isinstance(v, str):
                try:
                    target[k] = float(v)
                except ValueError:
                    pass  # the schema check names the field
    check_schema(config)


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
        select=s.get("select", "best"),
        seed=int(s.get("seed", 0)),
        child_order=s.get("child_order", "parent"),
    )


def cost_kwargs(config: dict) -> dict:
    """Input size / classes for costing: the data set's, when training; else the space's; and
    the latency table when the target is latency (the user's, or the one the workflow measures)."""
    out = {}
    for key in ("input_size", "num_classes", "input_channels"):
        if config.get("cost", {}).get(key):
            out[key] = int(config["cost"][key])
    table = latency_table_path(config)
    if table is not None:
        out["latency_table"] = table
    return out


def latency_table_path(config: dict) -> str | None:
    """The latency table a latency search reads (None for other metrics)."""
    if (config.get("target") or {}).get("metric") != "latency":
        return None
    given = (config.get("latency") or {}).get("table")
    if given:
        return os.path.abspath(os.path.expanduser(str(given)))
    from layernas.store.layout import Layout

    return str(Layout(config.get("results", "results")).latency_table.resolve())


def measures_latency(config: dict) -> bool:
    """Whether the workflow measures the latency table itself (latency target, no table given)."""
    return latency_table_path(config) is not None and not (config.get("latency") or {}).get("table")


def latency_device(config: dict) -> str:
    """The device string a table must carry: ``cpu`` means this machine's CPU."""
    from layernas.core.latency import cpu_device

    device = str((config.get("latency") or {}).get("device", "cpu"))
    return cpu_device() if device == "cpu" else device


def validate_latency(config: dict, space: Space) -> bool:
    """Check a latency target's table; returns False while the workflow has yet to measure it
    (then the target's reachability is checked by the first stage)."""
    from layernas.core.latency import LatencyError, check_table, read_table

    if space.backbone != "mobilenet":
        raise ConfigError(f"config field 'target.metric': latency tables support the mobilenet backbone; "
                          f"space {space.name} is {space.backbone!r}")
    lat = config.get("latency") or {}
    path = latency_table_path(config)
    if measures_latency(config) and not os.path.exists(path):
        return False
    field = "latency.table" if lat.get("table") else "latency"
    try:
        check_table(read_table(path), latency_device(config), int(lat.get("threads", 1)), str(lat.get("runtime", "torch")),
                    str(lat.get("statistic", "min")))
    except LatencyError as exc:
        raise ConfigError(f"config field {field!r}: {exc}") from None
    return True


def trial_store(config: dict) -> Path | None:
    """The trial store the config names (``trials:``), as an absolute path (~ and $VARS
    expanded, a relative path taken from the working directory), or None for the default
    ``<results>/trials``, also when ``trials`` names that very directory. Raises ConfigError
    for a variable that is not set, or a store that is the results directory or holds it."""
    raw = config.get("trials")
    if raw is None or str(raw).strip() == "":
        return None
    expanded = os.path.expandvars(os.path.expanduser(str(raw).strip()))
    if "$" in expanded:
        raise ConfigError(f"config field 'trials': {_show(raw)} names an environment variable that is not set "
                          f"(expanded to {expanded!r})")
    store = Path(os.path.abspath(expanded))
    results = Path(os.path.abspath(str(config.get("results", "results"))))
    if store == results / "trials":
        return None
    if store == results or store in results.parents:
        raise ConfigError(f"config field 'trials': {_show(raw)} is the results directory {str(results)!r} or holds "
                          "it; name a directory of its own (its entries are trial keys)")
    if store.exists() and not store.is_dir():
        raise ConfigError(f"config field 'trials': {_show(raw)} exists and is not a directory")
    return store


def oracle_spec(config: dict, space: Space):
    from layernas.evaluate.oracle import load_oracle

    return load_oracle(str(config["oracle"]), space)


def validate(config: dict) -> None:
    """Semantic checks the JSON schema cannot express; raise ConfigError naming the field."""
    trial_store(config)
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
    if cfg.metric != "latency" or validate_latency(config, space):
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
        try:
            train = TrainConfig.from_dict(config["train"])
            check_source(train.dataset, train.data_dir)  # files only, nothing is loaded
        except (TypeError, ValueError) as exc:
            raise _field_error("train", exc) from None
        if config["evaluator"] == "supernet":
            validate_supernet(config, space)
        final = config.get("final") or {}
        if final.get("activate", True):
            try:
                FinalConfig.from_dict(final)
            except (TypeError, ValueError) as exc:
                raise _field_error("final", exc) from None
    validate_transfer(config)


def validate_supernet(config: dict, space: Space) -> None:
    """The ``supernet:`` section of ``evaluator: supernet``: its recipe (SupernetConfig, an
    unknown field too), ``recal_samples``, and a space whose networks a supernet can hold."""
    if space.backbone != "mobilenet":
        raise ConfigError(f"config field 'evaluator': evaluator supernet supports the mobilenet backbone; space "
                          f"{space.name} is {space.backbone!r} (use evaluator: train)")
    raw = config.get("supernet") or {}
    try:
        SupernetConfig.from_dict(raw)
        supernet_recal_samples(raw)
    except (TypeError, ValueError) as exc:
        raise _field_error("supernet", exc) from None


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
    return bool((config.get("transfer") or {}).get("activate")) and config.get("evaluator") in TRAINED \
        and bool((config.get("final") or {}).get("activate", True))


def exports_final(config: dict) -> bool:
    """Whether the workflow exports the final models (``final.export``, default true): only
    where there are final models (evaluator train or supernet, ``final.activate``)."""
    final = config.get("final") or {}
    return config.get("evaluator", "train") in TRAINED and bool(final.get("activate", True)) \
        and bool(final.get("export", True))


def validate_transfer(config: dict) -> None:
    """Raise ConfigError for a transfer section that would fail only after the search."""
    # The stage transfers the final models; a run without them (evaluator tabular, or
    # final.activate false) has nothing to transfer, and the embedded config.yaml that every
    # run inherits turns transfer on, so that is not an error.
    if not transfer_runs(config):
        return
    from layernas.detect.data import GenConfig, split_paths
    from layernas.detect.recipe import TransferConfig

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


def fill_defaults(config: dict, schema: dict) -> None:
    """Set the schema's ``default`` of every missing property, recursively (what Snakemake's
    ``validate`` does, so library callers see the same config the rules see)."""
    for name, prop in (schema.get("properties") or {}).items():
        if name not in config and "default" in prop:
            config[name] = json.loads(json.dumps(prop["default"]))
        if isinstance(config.get(name), dict) and prop.get("type") == "object":
            fill_defaults(config[name], prop)


def check_config(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Normalise, check the schema, fill defaults and check the semantics of a workflow
    config, in place; returns it. Raises ConfigError (a ValueError) naming field and value."""
    normalize_config(config)
    if Path(schema_path).is_file():
        import yaml

        fill_defaults(config, yaml.safe_load(Path(schema_path).read_text()))
    validate(config)
    return config


def load_config_file(path: str | Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path(path).read_text())
