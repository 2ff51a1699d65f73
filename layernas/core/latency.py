"""Latency lookup tables: a model's predicted latency is the sum of its segments' measured
latencies plus a fixed per-forward overhead.

Why segments: the analytic cost model already splits a network into pieces that each read a
few layers (the stem, each block, the head conv, the pooled tail); a piece's latency depends on
the same values its MAdds do (input and output widths, kernel, expansion, stride, resolution,
SE, activation). Measuring each distinct segment once, in its context, gives a table the search
can sum exactly like MAdds, so the exact bounds and Eq. 4 buckets work unchanged
(`layernas.core.bounds`). Measuring is torch work (`layernas.evaluate.latency`); this module
only reads tables, builds segment keys and checks a table fits the run, with pandas and numpy.

A key names a segment by what determines its latency, e.g.
``block c=16 k=3 e=72 o=24 s=2 h=28 se=0 act=hswish``; the table's metadata (device, threads,
runtime) says where it was measured. Limits: operator fusion and caching across segments make
real latency not exactly additive; the fixed term absorbs the average of that, and
`layernas latency check` reports the remaining error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUNTIMES = ("torch", "onnxruntime")
FIXED = "fixed"  # the key of the per-forward overhead row
META_COLUMNS = ("device", "threads", "runtime", "space_id", "input_size", "num_classes", "input_channels")


class LatencyError(ValueError):
    """A latency table is missing, unreadable, or does not fit the run (message names both)."""


@dataclass(frozen=True)
class LatencyTable:
    path: str
    entries: dict[str, float]  # segment key -> milliseconds (median of repeats)
    meta: dict[str, object]

    @property
    def fixed(self) -> float:
        return float(self.entries.get(FIXED, 0.0))

    def describe(self) -> str:
        m = self.meta
        return f"{m.get('device')!r} with {m.get('threads')} thread(s) ({m.get('runtime')})"

    def lookup(self, keys: list[str]) -> np.ndarray:
        try:
            return np.fromiter((self.entries[k] for k in keys), dtype=np.float64, count=len(keys))
        except KeyError as exc:
            raise LatencyError(
                f"latency table {self.path} has no entry for segment {exc.args[0]!r}: it was measured for "
                f"another space or input size (table: space {self.meta.get('space_id')}, input size "
                f"{self.meta.get('input_size')}); measure one for this run with `layernas latency table`"
            ) from None


_TABLES: dict[tuple, LatencyTable] = {}


def read_table(path: str | Path) -> LatencyTable:
    """The table at ``path`` (memoised by path, size and mtime: searches read it per stage)."""
    import pandas as pd

    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise LatencyError(f"latency table {p} does not exist; measure one with `layernas latency table` "
                           "(or let the workflow's latency_table rule do it)") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _TABLES:
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise LatencyError(f"latency table {p} is not a readable Parquet file: {exc}") from None
        missing = {"segment", "ms", *META_COLUMNS} - set(df.columns)
        if missing:
            raise LatencyError(f"latency table {p} lacks columns {sorted(missing)}")
        ms = df["ms"].astype(float)
        bad = df[~np.isfinite(ms) | ((ms < 0) & (df["segment"] != FIXED))]  # only the fixed term may be < 0
        if len(bad):
            raise LatencyError(f"latency table {p}: segment {bad['segment'].iloc[0]!r} has latency {bad['ms'].iloc[0]!r}")
        meta = {c: df[c].iloc[0].item() if hasattr(df[c].iloc[0], "item") else df[c].iloc[0]
                for c in (*META_COLUMNS, "statistic") if c in df}
        _TABLES[key] = LatencyTable(str(p), dict(zip(df["segment"].astype(str), df["ms"].astype(float))), meta)
    return _TABLES[key]


def check_table(table: LatencyTable, device: str, threads: int, runtime: str, statistic: str | None = None) -> None:
    """Refuse a table measured elsewhere: its numbers describe other hardware or settings."""
    want = {"device": device, "threads": int(threads), "runtime": runtime}
    have = {k: table.meta.get(k) for k in want}
    if statistic is not None and table.meta.get("statistic", "min") != statistic:
        raise LatencyError(f"latency table {table.path} holds the {table.meta.get('statistic', 'min')} of its "
                           f"repeats; this run asks for the {statistic}: measure a table for it")
    if str(have["device"]) != str(device) or int(have["threads"]) != int(threads) or have["runtime"] != runtime:
        raise LatencyError(
            f"latency table {table.path} was measured on {table.describe()}; this run asks for "
            f"{device!r} with {threads} thread(s) ({runtime}): measure a table for it "
            "(`layernas latency table`, or remove latency.table to let the workflow measure one)"
        )


def cpu_device() -> str:
    """This machine's CPU as a table's device string (model name and logical cores)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not name:
        import platform

        name = platform.processor() or platform.machine() or "unknown"
    return f"cpu: {name} x{os.cpu_count()}"


def segment_key(kind: str, **fields: object) -> str:
    return " ".join([kind, *(f"{k}={v}" for k, v in fields.items())])


def parse_segment_key(key: str) -> tuple[str, dict[str, object]]:
    """Inverse of `segment_key`: integers back to int, other values kept as strings."""
    kind, *parts = key.split(" ")
    fields: dict[str, object] = {}
    for part in parts:
        k, _, v = part.partition("=")
        fields[k] = int(v) if v.lstrip("-").isdigit() else v
    return kind, fields


def keys(kind: str, **columns) -> list[str]:
    """One segment key per arch row from per-row arrays (or scalars) of field values."""
    n = max((len(v) for v in columns.values() if isinstance(v, np.ndarray)), default=1)
    cols = {k: (v.tolist() if isinstance(v, np.ndarray) else [v] * n) for k, v in columns.items()}
    names = list(cols)
    return [segment_key(kind, **dict(zip(names, row))) for row in zip(*cols.values())]
