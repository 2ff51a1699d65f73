"""Content keys: a record is named by what it computes, never by where it sits in a search,
so an interrupted search, a repeated layer sweep or a second search with another target
finds every finished record again. What goes into a recipe's hash is decided in
``layernas.evaluate.recipe``; this module only hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(cfg: Any) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trial_key(space_id: str, arch: str, recipe_hash: str, seed: int) -> str:
    """Short content hash naming ``trials/<key>/`` (and ``final/<key>/``)."""
    blob = f"{space_id}|{arch}|{recipe_hash}|{int(seed)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
