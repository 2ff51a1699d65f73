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
    import signal

    # A suite started in the background (`make test &`, nohup) inherits SIGINT ignored, and an
    # ignored signal stays ignored in every process it starts: the Ctrl-C tests' snakemake and
    # `layernas status --watch` would never see their SIGINT. A handler is reset at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
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


# --------------------------------------------------------------------------- workflow runs

ROOT = Path(__file__).resolve().parents[1]
SUPERNET_CONFIG = ROOT / ".test" / "supernet.yaml"


def snakemake_cmd(workdir: Path, *configs: str | Path, cores: int = 2) -> list[str]:
    """The documented command (the default profile loads itself) on ``workdir`` with ``configs``
    merged over config.yaml, in order."""
    import sys

    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores),
            "-d", str(workdir), "--configfile", *map(str, configs)]


def run_workflow(workdir: Path, *configs: str | Path, extra: tuple[str, ...] = (), timeout: int = 300,
                 check: bool = True, cores: int = 2):
    """Run the workflow; with ``check``, a failure shows the tail of its output."""
    import subprocess

    proc = subprocess.run([*snakemake_cmd(workdir, *configs, cores=cores), *extra], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def config_file(path: Path, overrides: dict) -> Path:
    """``overrides`` as a YAML config file at ``path`` (a second --configfile: nested values
    given with --config would arrive as strings)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(overrides))
    return path
