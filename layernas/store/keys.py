"""Content keys and the rules of what goes into them, in one place.

A record is named by what it computes, never by where it sits in a search, so an interrupted
search, a repeated layer sweep or a second search with another target finds every finished
record again. A key is the hash of (space id + version, arch, recipe hash, seed). The recipe
hash leaves out the fields in NOT_HASHED (where and how fast a run goes, not what it computes),
so moving a search to a GPU or changing its thread count reuses every finished trial and final
retraining. Torch-free and pandas-free: the controller names every job, and the audit checks
every record, without either.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Fields of the train section that do not change a result: left out of every key.
NOT_HASHED = ("device", "threads", "save_weights", "log_every")
# Bumped when the trainer changes results for the same settings (2: BN recalibration before
# evaluation), so old records are not reused as if they were new ones.
TRAINER_VERSION = 2
# Fields of the final section that choose what to retrain (and whether to export it), not how.
FINAL_SELECTION = ("activate", "top_n", "export")
# evaluator supernet: the train section's fields that choose the data the supernet trains on and
# its children are evaluated on (the trials' data); the supernet section's fields that decide how
# a child is evaluated, not how the supernet is trained (they are in the evaluations' keys only);
# bumped when supernet training or child evaluation changes results for the same settings.
SUPERNET_DATA = ("dataset", "data_dir", "val_fraction", "max_train_samples")
SUPERNET_EVAL = ("recal_samples",)
SUPERNET_VERSION = 1
TABLE_SUFFIXES = (".csv", ".parquet", ".txt")


def config_hash(cfg: Any) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trial_key(space_id: str, arch: str, recipe_hash: str, seed: int) -> str:
    """Short content hash naming ``trials/<key>/`` (and ``final/<key>/``)."""
    blob = f"{space_id}|{arch}|{recipe_hash}|{int(seed)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def is_table(spec: str) -> bool:
    """Whether an oracle spec names a table file (else it is ``module:function``)."""
    return Path(spec).suffix in TABLE_SUFFIXES or Path(spec).exists()


def oracle_id(spec: str) -> str:
    """Identity of an oracle for trial keys: a table by its content (the same table anywhere
    gives the same keys), a callable by its import path. Cheap: no table is parsed. A
    ValueError when the table does not exist."""
    if is_table(spec):
        if not Path(spec).exists():
            raise ValueError(f"oracle table {spec} does not exist")
        return f"table:{file_digest(spec)}"
    return f"callable:{spec}"


def hashed_train(train: dict | None) -> dict:
    """The part of a train section that decides a result (what keys hash)."""
    return {k: v for k, v in (train or {}).items() if k not in NOT_HASHED}


def train_hash(config: dict, supernet: str | None = None) -> str:
    """Hash of whatever decides a trial's result besides space, arch and seed. For
    ``evaluator: supernet`` that is the supernet checkpoint's content hash (``supernet``, from
    its metrics.json) and the evaluation settings, so an evaluation of another supernet never
    matches; a ValueError without it (the checkpoint must exist before any key is made)."""
    if config["evaluator"] == "tabular":
        return config_hash({"evaluator": "tabular", "oracle": oracle_id(str(config["oracle"]))})
    if config["evaluator"] == "supernet":
        if not supernet:
            raise ValueError("train_hash: evaluator supernet needs the supernet checkpoint's content hash, got "
                             f"{supernet!r}")
        return config_hash({"evaluator": "supernet", "version": SUPERNET_VERSION, "supernet": str(supernet),
                            "eval": supernet_eval(config)})
    return config_hash({"evaluator": "train", "trainer": TRAINER_VERSION, "train": hashed_train(config.get("train"))})


# BN recalibration images per child: 500 ranked children as 2,000 did (Kendall tau 0.55 vs 0.56
# over the cost range, 0.34 vs 0.35 in the target) at 1.0 s per child instead of 2.3
# (benchmarks/results/supernet_ranking*.json, docs/supernet.md).
RECAL_SAMPLES = 500


def supernet_eval(config: dict) -> dict:
    """How a child of the supernet is evaluated: the SUPERNET_EVAL fields (default
    recal_samples RECAL_SAMPLES) and the recalibration batch size (the supernet's batch_size, 128)."""
    sn = config.get("supernet") or {}
    return {"recal_samples": sn.get("recal_samples", RECAL_SAMPLES), "recal_batch_size": sn.get("batch_size", 128)}


def supernet_recipe(config: dict) -> dict:
    """What decides a supernet's weights besides space and seed: its training settings
    (NOT_HASHED and SUPERNET_EVAL fields left out) and the train section's data fields."""
    sn = {k: v for k, v in (config.get("supernet") or {}).items() if k not in NOT_HASHED + SUPERNET_EVAL}
    train = config.get("train") or {}
    return {"version": SUPERNET_VERSION, "supernet": sn, "data": {k: train.get(k) for k in SUPERNET_DATA}}


def supernet_key(space_id: str, config: dict) -> str:
    """Short content hash naming ``supernet/<key>/``: one supernet per (space id, data and
    supernet recipe, seed), so a rerun with the same settings finds it and trains nothing."""
    return trial_key(space_id, "supernet", config_hash(supernet_recipe(config)), int(config.get("seed", 0)))


def final_hash(config: dict) -> str:
    """Hash of what decides a final retraining: the final recipe (without the selection
    fields: activate, top_n, export) and the train section by the trial rule (NOT_HASHED left out, trainer version in)."""
    final = {k: v for k, v in (config.get("final") or {}).items() if k not in FINAL_SELECTION}
    return config_hash({"final": final, "trainer": TRAINER_VERSION, "train": hashed_train(config.get("train"))})


def final_key(space_id: str, arch: str, config: dict) -> str:
    return trial_key(space_id, arch, final_hash(config), int(config.get("seed", 0)))
