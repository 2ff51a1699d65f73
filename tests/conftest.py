"""Suite-wide set-up: SLURM's controller probe made instant for the local tests; SLURM tests last.

Why: snakemake-executor-plugin-slurm runs `scontrol show config` (10 s timeout) whenever
Snakemake starts and SLURM's commands are installed, only to word a --help text. With SLURM
installed but its controller down (a machine where tests/test_slurm.py ran before, as CI's
may be), scontrol retries the gone controller for 9 s, and every local `snakemake` call in
the suite paid it (measured here: the suite took 1,536 s instead of ~730 s, and the kill tests'
start-up outran their delays). The local tests therefore run with SLURM_CONF pointing at a
config whose controller timeouts are 1 s: scontrol then fails in 3 ms (measured).
tests/test_slurm.py's cluster fixture restores the real configuration (``real_slurm_conf``),
and those tests run last so nothing after them needs the probe conf again."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

PROBE_CONF = "LAYERNAS_TEST_PROBE_SLURM_CONF"


def pytest_configure(config):
    if "SLURM_CONF" in os.environ or not shutil.which("scontrol"):
        return
    path = Path(tempfile.mkdtemp(prefix="layernas-slurm-probe-")) / "slurm.conf"
    path.write_text("ClusterName=none\nSlurmctldHost=localhost\nMessageTimeout=1\nTCPTimeout=1\n")
    os.environ["SLURM_CONF"] = os.environ[PROBE_CONF] = str(path)


def pytest_unconfigure(config):
    real_slurm_conf()
    probe = os.environ.pop(PROBE_CONF, None)
    if probe:
        shutil.rmtree(Path(probe).parent, ignore_errors=True)


def real_slurm_conf() -> None:
    """Undo the probe config for the rest of the session (the SLURM tests, which run last)."""
    probe = os.environ.get(PROBE_CONF)
    if probe and os.environ.get("SLURM_CONF") == probe:
        del os.environ["SLURM_CONF"]


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)  # stable sort


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forward passes: the test machine's cores are shared, and torch's spinning intra-op
    threads slow them down tenfold under contention (restored after the module)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
