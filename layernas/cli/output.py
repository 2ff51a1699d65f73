"""What every command prints: one JSON printer (``--json``; its keys are a contract other
tooling relies on) and small helpers for the human-readable text."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from layernas.core.describe import human_number


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays as Python numbers and lists,
    NaN and infinities as None (JSON has no NaN), tuples and sets as lists, Paths and anything
    else unknown as strings. Dict keys become strings."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def dumps(obj: Any) -> str:
    """The JSON text of ``obj`` (see ``jsonable``), indented; what --json prints and what
    commands write as summary files."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


def print_json(obj: Any) -> None:
    print(dumps(obj))


def si(x: float) -> str:
    """3940000 -> 3.94M; small numbers as they are (``layernas.core.describe``)."""
    return human_number(x)


def mb(n: float) -> str:
    """Bytes in MB with one decimal: 12.3 MB."""
    return f"{n / 1e6:.1f} MB"


def plural(n: int, word: str) -> str:
    """1 error, 2 errors."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def progress(msg: str, prefix: str = "layernas") -> None:
    """A progress line on stderr (stdout stays the command's result)."""
    print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)
