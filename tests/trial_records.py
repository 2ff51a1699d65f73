"""Helpers shared by the workflow and SLURM tests (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path


def evaluated_at(results: Path) -> dict[str, float]:
    """When each finished trial was evaluated (``finished_at`` in its metrics.json): unchanged
    when a rerun restores metrics.json from finished.json instead of evaluating again. Writes
    are atomic, so a file read is whole; one can vanish between glob and read (a rerun)."""
    out = {}
    for p in (results / "trials").glob("*/metrics.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["finished_at"]
        except FileNotFoundError:
            pass
    return out
