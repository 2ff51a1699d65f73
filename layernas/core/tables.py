"""The bucket tables M_l ("memorial tables" of the paper) as a data structure.

Its own module because a table has invariants of its own that neither the stage recurrence
(`layernas.core.search`) nor its drivers should know the inside of: at most K rows per bucket,
ranked by accuracy (ties: lower cost, then arch), a candidate inserted once and keeping its
``expanded`` flag, and parents chosen among the not-yet-expanded rows (best first, dearest
bucket first, or at random). Everything here is a pure function of DataFrames (numpy/pandas
only), so the in-process driver and the Snakemake workflow build identical tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

TABLE_DTYPES = {
    "layer": "int64", "bucket": "int64", "rank": "int64", "arch": "object", "key": "object",
    "cost": "float64", "accuracy": "float64", "expanded": "bool",
}
TABLE_COLUMNS = list(TABLE_DTYPES)


def empty_table() -> pd.DataFrame:
    """A table with no rows and the columns and dtypes of every table."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TABLE_DTYPES.items()})


def select_parents(
    table: pd.DataFrame | None, per_sweep: int, order: str = "best", rng: np.random.Generator | None = None
) -> list[str]:
    """Up to R not-yet-expanded candidates, in an order that depends only on the table's
    content (and ``rng``):

    - ``best``: best accuracy first (ties: lower cost, then arch);
    - ``dearest``: the dearest bucket first, best accuracy first within a bucket;
    - ``random`` (needs ``rng``): drawn uniformly without replacement (the paper's Appendix I).
    """
    if order not in ("best", "dearest", "random"):
        raise ValueError(f"select must be best, dearest or random, got {order!r}")
    if table is None or table.empty:
        return []
    todo = table[~table["expanded"].astype(bool)]
    todo = todo.sort_values(["accuracy", "cost", "arch"], ascending=[False, True, True], kind="mergesort")
    if order == "random":
        if rng is None:
            raise ValueError("select random needs a generator (rng)")
        pick = rng.permutation(len(todo))[:per_sweep]
        return list(todo["arch"].iloc[np.sort(pick)])
    if order == "dearest":
        todo = todo.sort_values("bucket", ascending=False, kind="mergesort")  # stable: accuracy order within
    return list(todo["arch"].head(per_sweep))


def mark_expanded(table: pd.DataFrame | None, archs: Iterable[str]) -> pd.DataFrame:
    """The table with the rows of ``archs`` flagged expanded (their children were generated)."""
    if table is None:
        return empty_table()
    archs = set(archs)
    if not archs:
        return table
    out = table.copy()
    out["expanded"] = out["expanded"].astype(bool) | out["arch"].isin(archs)
    return out


def update_table(table: pd.DataFrame | None, evaluated: pd.DataFrame, layer: int, replicas: int) -> pd.DataFrame:
    """Insert evaluated children (columns arch, key, cost, bucket, accuracy) into M_layer,
    keeping the K best per bucket. A candidate already in the table keeps its expanded flag."""
    base = empty_table() if table is None else table
    new = evaluated[np.isfinite(evaluated["accuracy"].astype(float))]
    new = new[~new["arch"].isin(base["arch"])]
    new = pd.DataFrame(
        {
            "layer": layer,
            "bucket": new["bucket"].astype("int64"),
            "rank": 0,
            "arch": new["arch"],
            "key": new["key"],
            "cost": new["cost"].astype(float),
            "accuracy": new["accuracy"].astype(float),
            "expanded": False,
        }
    )
    frames = [f for f in (base, new) if not f.empty]
    if not frames:
        return empty_table()
    allrows = pd.concat(frames, ignore_index=True)
    allrows = allrows.sort_values(
        ["bucket", "accuracy", "cost", "arch"], ascending=[True, False, True, True], kind="mergesort"
    )
    allrows["rank"] = allrows.groupby("bucket").cumcount()
    kept = allrows[allrows["rank"] < replicas].reset_index(drop=True)
    return kept.astype({"layer": "int64", "bucket": "int64", "rank": "int64", "expanded": bool})[TABLE_COLUMNS]

