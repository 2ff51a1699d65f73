"""Accuracy oracles for searches without training: tables (CSV/Parquet) or Python callables.

An oracle is what the in-process driver and the workflow's ``evaluator: tabular`` call instead
of a trainer. Tables are checked on load (columns, types, archs repeated with different accuracies) so a
bad table fails before a search starts; an arch missing from a table fails with its name when it is queried.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from layernas.core.space import Space, format_arch, parse_arch
from layernas.core.strategies.base import Arch
from layernas.store.keys import file_digest, is_table


class OracleError(ValueError):
    """The oracle is unusable or cannot answer a query; the message says which and why."""


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise OracleError(f"oracle table {path} does not exist")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".txt"):
            df = pd.read_csv(path, dtype={"arch": str})
        else:
            raise OracleError(f"oracle table {path}: use a .csv or .parquet file")
    except OracleError:
        raise
    except Exception as exc:  # pyarrow / pandas parse errors name no field
        raise OracleError(f"oracle table {path} could not be read: {exc}") from None
    for col in ("arch", "accuracy"):
        if col not in df.columns:
            raise OracleError(f"oracle table {path}: missing column {col!r} (has {list(df.columns)})")
    acc = pd.to_numeric(df["accuracy"], errors="coerce")
    bad = df.loc[acc.isna() & df["accuracy"].notna(), "accuracy"]
    if len(bad):
        raise OracleError(
            f"oracle table {path}: column 'accuracy' must be numeric; arch {str(df['arch'][bad.index[0]])!r} "
            f"(row {bad.index[0]}) has {bad.iloc[0]!r}"
        )
    df = df.assign(arch=df["arch"].astype(str).str.strip(), accuracy=acc)
    if df["arch"].duplicated().any():
        df = drop_repeated_archs(df, path)
    return df


def _value_columns(df) -> list[str]:
    """The columns a reader takes values from (the oracle: accuracy; the benchmark harness:
    per-seed accuracy_<k>, test_accuracy, train_time, cost): repeats of an arch must agree on them."""
    named = ("accuracy", "test_accuracy", "train_time", "cost")
    return [c for c in df.columns if c in named or (c.startswith("accuracy_") and c[9:].isdigit())]


def _show(v) -> str:
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return repr(v)


def drop_repeated_archs(df, path):
    """One row per arch. A table exported from a search's history.parquet repeats an arch (its
    cached rows carry the same accuracy, its dropped rows none), so repeats are accepted when
    they agree: rows without an accuracy are left out where the arch has a row with one, then
    rows equal on every value column (``_value_columns``; blank equals blank) are dropped but
    the first. Repeats that disagree raise OracleError naming the arch, the column and both values."""
    has = df["accuracy"].notna()
    df = df[has | ~df["arch"].isin(set(df.loc[has, "arch"]))]
    cols = _value_columns(df)
    rep = df[df["arch"].duplicated(keep=False)]
    distinct = rep.groupby("arch", sort=False)[cols].nunique(dropna=False)
    bad = distinct[(distinct > 1).any(axis=1)]
    if len(bad):
        arch = bad.index[0]
        col = next(c for c in cols if bad.loc[arch, c] > 1)
        rows = rep[rep["arch"] == arch]
        first = rows[col].iloc[0]
        other = rows[col][~((rows[col] == first) | (rows[col].isna() & (first != first)))]
        raise OracleError(
            f"oracle table {path}: arch {arch!r} appears more than once with different {col}: "
            f"{_show(first)} (row {rows.index[0]}) and {_show(other.iloc[0])} (row {other.index[0]}); "
            "keep one row per arch"
        )
    return df.drop_duplicates("arch").reset_index(drop=True)


class TableOracle:
    """Accuracy looked up by arch string; a table made for another space is refused."""

    def __init__(self, path: str | Path, space: Space):
        self.path = Path(path)
        self.space = space
        df = read_table(self.path)
        for a in df["arch"].head(1000):
            try:
                parse_arch(a, space)
            except ValueError as exc:
                raise OracleError(f"oracle table {self.path}: arch {a!r} does not fit space {space.name}: {exc}") from None
        self.acc = dict(zip(df["arch"], df["accuracy"].astype(float)))
        self.spec = f"table:{file_digest(self.path)}"

    def __call__(self, batch: list[Arch]) -> list[float | None]:
        out: list[float | None] = []
        for arch in batch:
            a = format_arch(arch)
            if a not in self.acc:
                raise OracleError(f"oracle table {self.path} has no row for arch {a}")
            v = self.acc[a]
            out.append(None if not np.isfinite(v) else v)
        return out


class CallableOracle:
    """``module:function`` taking an arch tuple and returning an accuracy (or None)."""

    def __init__(self, spec: str):
        mod_name, _, fn_name = spec.partition(":")
        if not mod_name or not fn_name:
            raise OracleError(f"oracle {spec!r}: expected a file (.csv/.parquet) or module:function")
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise OracleError(f"oracle {spec!r}: cannot import {mod_name}: {exc}") from None
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            raise OracleError(f"oracle {spec!r}: {mod_name} has no function {fn_name}")
        self.fn: Callable = fn
        self.spec = f"callable:{spec}"

    def __call__(self, batch: list[Arch]) -> list[float | None]:
        return [self.fn(tuple(a)) for a in batch]


def load_oracle(spec: str, space: Space) -> TableOracle | CallableOracle:
    if is_table(spec):
        return TableOracle(spec, space)
    return CallableOracle(spec)
