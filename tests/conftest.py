"""Suite-wide ordering: the SLURM tests run last.

Why: snakemake-executor-plugin-slurm runs `scontrol show config` (10 s timeout) whenever
Snakemake starts and SLURM's commands are installed. Once tests/test_slurm.py has installed
SLURM and brought its cluster down again, every later `snakemake` call in the suite would
wait those 10 s for a controller that is gone (measured: a 3 s dry run took 14 s)."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)  # stable sort
