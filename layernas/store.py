"""Trial keys and atomic writes: the on-disk contract every stage relies on.

A trial is keyed by its content (space id + version, arch, training-config hash, seed), never
by its position in the search, so an interrupted search, a repeated layer sweep or a second
search with another target reuses every finished trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def config_hash(cfg: Any) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trial_key(space_id: str, arch: str, train_hash: str, seed: int) -> str:
    """Short content hash naming ``results/trials/<key>/``."""
    blob = f"{space_id}|{arch}|{train_hash}|{int(seed)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory + fsync + rename: readers see the old
    file or the whole new one, never a half-written one (also after SIGKILL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: str | Path, df) -> None:
    """Parquet through a temp file + rename (pandas writes in place otherwise)."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
