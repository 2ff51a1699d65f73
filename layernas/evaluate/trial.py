"""One trial: evaluate one child (train it, or look it up) and record it by its content key.

Imports as little as possible: with ``evaluator: tabular`` a trial is a lookup, so Python
start-up and imports are most of its cost, and a 1,000-trial search starts 1,000 of these
(torch and pandas are imported only by the branch that needs them)."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import threading
from pathlib import Path

from layernas.core.space import format_arch, load_space, parse_arch
from layernas.store.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from layernas.store.keys import train_hash, trial_key
from layernas.store.layout import LOCK, METRICS, WEIGHTS
from layernas.store.records import read_finished_record, record_run, write_finished_record


def run_trial_job(config: dict, arch: str, key: str, out_dir: str | Path, threads: int = 1) -> dict:
    """Evaluate one child and record it under ``out_dir``; returns its metrics."""
    return TrialRunner(config, threads).run(arch, key, out_dir)


class TrialRunner:
    """What the trials of one job share, loaded once: the space, the recipe hash (for a table
    oracle, a hash of the whole table) and, for lookups, the oracle itself. A batch job runs
    many trials through one runner; ``run_trial_job`` one."""

    def __init__(self, config: dict, threads: int = 1):
        self.config = config
        self.threads = threads
        self.space = load_space(config["space"])
        self.seed = int(config.get("seed", 0))
        self._oracle = None
        self.supernet = None
        if config.get("evaluator") == "supernet":
            from layernas.evaluate.supernet_job import SupernetEvaluator

            # The checkpoint's hash (from its metrics.json) is in every key; it loads on first use.
            self.supernet = SupernetEvaluator(config, self.space, threads)
        self.recipe = train_hash(config, self.supernet.hash if self.supernet else None)
        if config.get("evaluator") in ("train", "supernet"):
            import torch  # noqa: F401  - once per job, before the first trial: start-up, not trial time

    def oracle(self):
        from layernas.evaluate.oracle import load_oracle

        if self._oracle is None:
            self._oracle = load_oracle(str(self.config["oracle"]), self.space)
        return self._oracle

    def run(self, arch: str, key: str, out_dir: str | Path) -> dict:
        config, space, seed = self.config, self.space, self.seed
        expected = trial_key(space.space_id, arch, self.recipe, seed)
        if expected != key:
            raise ValueError(f"trial key {key} does not match arch {arch} under this config (expected {expected})")
        out_dir = Path(out_dir)
        restored = restore_finished(out_dir, key, arch)
        if restored is not None:
            return restored
        with key_lock(out_dir):
            restored = restore_finished(out_dir, key, arch)  # the job we waited for finished it
            if restored is not None:
                return restored
            with time_limit(config.get("trial_timeout")):
                if config["evaluator"] == "tabular":
                    m = evaluate_tabular(config, space, arch, key, out_dir, seed, oracle=self.oracle)
                elif self.supernet is not None:
                    m = self.supernet.run(arch, key, out_dir, seed, self.recipe)
                else:
                    m = run_trial(space, arch, config["train"], seed, out_dir, threads=self.threads)
            write_finished_record(out_dir, key, arch, m)
        return m


def run_trial_batch(config: dict, items: list, manifest: str | Path, trials_dir: str | Path, log_pattern: str,
                    threads: int = 1, log=None, runner: TrialRunner | None = None) -> dict:
    """A batch job: evaluate the (key, arch) ``items`` in order, each recorded under
    ``trials_dir/{key}/`` exactly as a one-trial job records it, then write ``manifest`` (the
    job's declared output) last. A trial whose metrics.json exists is skipped, so a batch killed
    half-way and run again evaluates only the trials it had not finished; each trial it runs
    (evaluates, waits for, or restores) gets its one-line job log at ``log_pattern``.
    ``runner``: one kept by the caller (the controller's, for lookups: the oracle loads once)."""
    import time

    t0 = time.time()
    runner = runner or TrialRunner(config, threads)
    t1 = time.time()
    rows = []
    for key, arch in items:
        out_dir = Path(trials_dir) / key
        if (out_dir / METRICS).exists():  # finished before this job started: nothing to do
            rows.append({"key": key, "ran": False})
            continue
        m = runner.run(arch, key, out_dir)
        line = f"trial {key} arch {arch}: {m.get('status')} {m.get('error') or ''}"
        atomic_write_text(log_pattern.format(key=key), line + "\n")
        if log is not None:
            print(line, file=log, flush=True)
        rows.append({"key": key, "ran": True, "status": m.get("status"), "wall_seconds": m.get("wall_seconds")})
    # When the job's process started, its imports were done (started_at), its runner had loaded
    # the space and, for training, torch (trials_started_at), and its trials ended: what
    # benchmarks/trial_job_overhead.py splits a trial job's time into.
    out = {"trials": rows, "process_started_at": process_started_at(), "started_at": t0, "trials_started_at": t1,
           "finished_at": time.time()}
    atomic_write_json(manifest, out)
    return out


def process_started_at() -> float | None:
    """This process's start time (epoch seconds, 10 ms resolution) from /proc: its start in
    clock ticks since boot, against the time since boot now; None elsewhere."""
    import time

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextlib.contextmanager
def key_lock(out_dir: Path):
    """Hold ``out_dir/.lock`` (fcntl.flock, exclusive) while this job evaluates the key: two
    searches sharing a trial store that ask for the key at once evaluate it once, the second
    job waiting and then restoring the first one's record. The kernel drops the lock when the
    holder exits, however it ends (a crash, SIGKILL, a cluster's walltime kill), so a lock
    file left on disk never blocks anyone; it is not deleted (deleting would let a third job
    lock a new file while the second still waits on the old one). Costs ~0.1 ms uncontended.
    ``layernas audit --fix`` leaves a directory whose lock is held alone (a job is running it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# RECORD is a second copy of a finished trial's metrics. Snakemake deletes a job's declared
# output (metrics.json) before rerunning a job it saw start but not finish: after a SIGKILL
# that lands between the trial writing metrics.json and Snakemake recording the job as done,
# `--rerun-incomplete` would train the trial again. The copy is not a declared output, so it
# survives, and the rerun restores metrics.json from it instead of training.


def restore_finished(out_dir: Path, key: str, arch: str) -> dict | None:
    """metrics.json rewritten from ``finished.json`` when that holds this key's result."""
    metrics = read_finished_record(out_dir, key, arch)
    if metrics is not None:
        atomic_write_json(out_dir / METRICS, metrics)
    return metrics


class TrialTimeout(Exception):
    """Raised inside a trial that ran past ``trial_timeout``; recorded as a failed trial."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """SIGALRM after ``seconds`` raises TrialTimeout in the trial, which records it as failed
    like any other error, so the search goes on (a cluster's walltime kill, by contrast, fails
    the job and Snakemake's retry applies). No limit when None or off the main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise TrialTimeout(f"trial ran past trial_timeout = {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def evaluate_tabular(config: dict, space, arch: str, key: str, out_dir: str | Path, seed: int, oracle=None) -> dict:
    """A table lookup recorded like a trained trial, so every later stage reads one format.
    An oracle that cannot answer (missing arch, NaN, a table or callable that does not load)
    is a failed trial, not a failed workflow. ``oracle``: a callable returning the loaded
    oracle (a batch loads it once); by default it is loaded for this trial."""
    from layernas.evaluate.oracle import load_oracle

    if oracle is None:
        def oracle():
            return load_oracle(str(config["oracle"]), space)

    inputs = {"key": key, "space": space.name, "space_id": space.space_id, "arch": arch,
              "evaluator": "tabular", "oracle": str(config["oracle"]), "seed": seed}

    def body(metrics: dict, log) -> None:
        try:
            acc = oracle()([parse_arch(arch, space)])[0]
        finally:
            log(f"tabular lookup of {arch}")
        if acc is None or not math.isfinite(acc):
            raise ValueError(f"oracle returned {acc!r}")
        metrics.update(accuracy=float(acc))

    return record_run(out_dir, inputs, {"key": key, "arch": arch, "device": "none"}, body, torch=False,
                      on_failure={"accuracy": None})


def run_trial(space, arch, train_cfg: dict | None, seed: int, out_dir: str | Path, threads: int | None = None,
              fail_with: str | None = None) -> dict:
    """Train and evaluate one arch; record it under ``out_dir``; return its metrics.

    A bad trial (invalid arch, a crash in training, out-of-memory, NaN loss) gives ``status:
    failed`` with the error, recorded like a success; an error of the code is raised
    (``layernas.store.records``). ``fail_with`` injects "nan" or "crash" for tests of that path."""
    arch_str = arch if isinstance(arch, str) else format_arch(arch)
    cfg_raw = dict(train_cfg or {})
    inputs = {"space": space.name, "space_id": space.space_id, "arch": arch_str, "seed": int(seed),
              "train": cfg_raw, "train_hash": train_hash({"evaluator": "train", "train": cfg_raw})}

    def body(metrics: dict, log) -> None:
        import torch

        from layernas.core.cost import cost_of
        from layernas.evaluate.data import load_dataset
        from layernas.evaluate.models import build_model
        from layernas.evaluate.recipe import TrainConfig
        from layernas.evaluate.train import train_model

        cfg = TrainConfig.from_dict({**cfg_raw, **({"threads": threads} if threads and not cfg_raw.get("threads") else {})})
        arch_t = parse_arch(arch_str, space)
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.max_train_samples)
        torch.manual_seed(int(seed))  # the weight init is part of the trial: same seed, same model
        model = build_model(space, arch_t, num_classes=data.num_classes, input_size=data.input_size,
                            input_channels=data.input_channels)
        c = cost_of(space, [arch_t], input_size=data.input_size, num_classes=data.num_classes,
                    input_channels=data.input_channels)
        metrics.update(madds=int(c["madds"][0]), params=int(c["params"][0]))
        log(f"{space.name} {arch_str}: {metrics['madds'] / 1e6:.2f}M MAdds, {len(data.train)} train images")
        if fail_with == "crash":
            raise RuntimeError("injected crash")
        if fail_with == "nan":
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        res = train_model(model, data, cfg, int(seed), log=log)
        metrics.update(res, accuracy=res["val_accuracy"])
        if cfg.save_weights:
            save_weights(model, Path(out_dir) / WEIGHTS)

    return record_run(out_dir, inputs, {"arch": arch_str, "seed": int(seed), "device": "unknown"}, body,
                      on_failure={"accuracy": None})


def save_weights(model, path: Path) -> None:
    """state_dict through an atomic write (torch.save in place would leave half a file)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
