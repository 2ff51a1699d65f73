"""``evaluator: supernet`` in the workflow: the supernet rule's job (train the supernet once per
supernet key and record it) and the evaluation of a child in a trial batch (slice it out,
recalibrate its BatchNorm statistics, validation accuracy), recorded as a trial.

The supernet directory ``supernet/{skey}/`` follows the trials' rules: inputs first
(``trial.json``), the checkpoint (atomic), ``log.txt``, then ``metrics.json`` last with the
checkpoint's content hash and the sha256 of every file before it, and ``finished.json``, the copy
from which a rerun that Snakemake started after deleting metrics.json (``--rerun-incomplete``
after a SIGKILL that landed between the job's last write and Snakemake's bookkeeping) restores
it instead of training again. A training that fails (a NaN loss, no data) fails the job: no
search can go on without its supernet, so it is no record.

An evaluation is a trial record under its content key, whose recipe hash holds the supernet's
content hash (``keys.train_hash``): records of another supernet never match. The checkpoint is
loaded once per batch job, before the first child it evaluates, and checked (``load_supernet``:
its content hash; and against the hash its metrics.json records, which the keys were made of).
A checkpoint that does not load is an error of the job, not a failed child.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from layernas.core.space import Space, load_space, parse_arch
from layernas.evaluate.recipe import SupernetConfig, TrainConfig, supernet_recal_samples
from layernas.store.files import atomic_write_json, atomic_write_text
from layernas.store.keys import SUPERNET_DATA, supernet_eval, supernet_key, supernet_recipe
from layernas.store.layout import LOG, METRICS, SUPERNET, Layout
from layernas.store.records import (
    Recorder,
    changed_artifacts,
    read_finished_record,
    read_metrics,
    record_run,
    write_finished_record,
)
from layernas.store.supernet import SUPERNET_ARCH, read_supernet_record

Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


def data_of(config: dict):
    """The trials' data (the train section's SUPERNET_DATA fields), as the trainer loads it."""
    from layernas.evaluate.data import load_dataset

    train = TrainConfig.from_dict(
        {k: v for k, v in (config.get("train") or {}).items() if k in SUPERNET_DATA}
    )
    return load_dataset(train.dataset, train.data_dir, train.val_fraction, train.max_train_samples)


def supernet_layout(config: dict) -> tuple[Layout, str]:
    """The run's results layout and its supernet key."""
    space = load_space(config["space"])
    return Layout(config.get("results", "results")), supernet_key(space.space_id, config)


# --------------------------------------------------------------------------- training


def restore_supernet(out_dir: Path, skey: str) -> dict | None:
    """metrics.json rewritten from finished.json when that holds this key's finished supernet and
    the checkpoint on disk is the one it lists (its sha256); None otherwise."""
    metrics = read_finished_record(out_dir, skey, SUPERNET_ARCH)
    if metrics is None or not (out_dir / SUPERNET).is_file() or changed_artifacts(out_dir, metrics):
        return None
    atomic_write_json(out_dir / METRICS, metrics)
    return metrics


def run_supernet_job(
    config: dict, out_dir: str | Path, threads: int | None = None, log=None, progress: Progress = _quiet
) -> dict:
    """Train the run's supernet into ``out_dir`` (= ``supernet/{skey}/``) and record it; return
    its metrics. Nothing is trained when the directory holds the finished supernet already.
    ``log``: the job's log (a text stream), which gets every line as it happens; ``progress``:
    one line when training starts and one when it ends (the workflow's progress lines)."""
    import torch

    from layernas.evaluate.supernet_train import save_supernet, train_supernet

    space = load_space(config["space"])
    skey = supernet_key(space.space_id, config)
    out_dir = Path(out_dir)
    if out_dir.name != skey:
        raise ValueError(f"supernet directory {out_dir} is not named by this config's supernet key {skey}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / METRICS).is_file():
        return read_metrics(out_dir)  # finished: never trained again
    restored = restore_supernet(out_dir, skey)
    if restored is not None:
        progress(f"supernet {skey}: finished before (restored its record), nothing to train")
        return restored
    for tmp in out_dir.glob(".*.tmp"):  # a write a kill interrupted (atomic: never the real file)
        tmp.unlink(missing_ok=True)
    raw = dict(config.get("supernet") or {})
    cfg = SupernetConfig.from_dict(raw)
    if threads and not cfg.threads:  # the rule's threads; not put into the recipe, which the checkpoint hashes
        torch.set_num_threads(int(threads))
    seed = int(config.get("seed", 0))
    rec = Recorder(
        out_dir,
        {
            "key": skey,
            "space": space.name,
            "space_id": space.space_id,
            "seed": seed,
            "supernet": raw,
            "recipe": supernet_recipe(config),
            "evaluator": "supernet",
        },
    )

    def say(line: str) -> None:
        rec.log(line)
        if log is not None:
            print(line, file=log, flush=True)

    try:
        data = data_of(config)
        n = len(data.train)
        steps = max(1, round(cfg.epochs * max(1, n // min(cfg.batch_size, n))))
        per_step = (2 if cfg.sandwich else 0) + cfg.random_children
        progress(
            f"supernet {skey}: training on {n} {data.name} images, {cfg.epochs:g} epochs = {steps} steps of "
            f"{per_step} children"
        )
        say(
            f"{space.name}: {steps} steps, {per_step} children per step, {n} train images, {len(data.val)} val"
        )
        net, meta = train_supernet(space, data, cfg, seed, log=say)
        chash = save_supernet(out_dir / SUPERNET, net, meta)
        say(
            f"trained in {meta['train_seconds']:.1f} s: {meta['steps']} steps, loss {meta['train_loss']:.4f}, "
            f"content hash {chash}"
        )
    except BaseException:
        import traceback

        say("supernet training FAILED (no record is written; the job fails)\n" + traceback.format_exc())
        atomic_write_text(out_dir / LOG, "\n".join(rec.lines) + "\n")
        raise
    device = str(next(net.parameters()).device)
    metrics = {
        "status": "ok",
        "error": None,
        "key": skey,
        "arch": SUPERNET_ARCH,
        "hash": chash,
        "seed": seed,
        "space_id": space.space_id,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "train_seconds": meta["train_seconds"],
        "steps": meta["steps"],
        "children_trained": meta["children_trained"],
        "train_loss": meta["train_loss"],
        "data": meta["data"],
    }
    metrics = rec.finish(metrics)
    write_finished_record(out_dir, skey, SUPERNET_ARCH, metrics)
    progress(
        f"supernet {skey} done: {meta['steps']} steps in {meta['train_seconds']:.1f} s on {device}, loss "
        f"{meta['train_loss']:.4f}, content hash {chash}"
    )
    return metrics


# --------------------------------------------------------------------------- evaluating children


class SupernetEvaluator:
    """What the evaluations of one batch job share: the run's supernet checkpoint, loaded and
    checked once, and the data. ``hash`` (from the supernet's metrics.json, no torch) is known
    before anything loads, so a batch whose children are all finished loads nothing."""

    def __init__(self, config: dict, space: Space, threads: int | None = None):
        self.config = config
        self.space = space
        self.threads = threads
        self.layout, self.skey = supernet_layout(config)
        self.record = read_supernet_record(self.layout, self.skey)
        self.hash = str(self.record["hash"])
        raw = config.get("supernet") or {}
        self.recal_samples = supernet_recal_samples(raw)
        self.settings = supernet_eval(config)
        self.device_name = SupernetConfig.from_dict(raw).device
        self._loaded = None

    def load(self):
        """(supernet, meta, data), loaded on first use. A CheckpointError (the job fails) when the
        checkpoint does not load, is corrupted, or is not the one the keys were made of."""
        if self._loaded is None:
            import torch

            from layernas.evaluate.supernet_train import CheckpointError, load_supernet
            from layernas.evaluate.train import pick_device

            if self.threads:
                torch.set_num_threads(int(self.threads))
            path = self.layout.supernet_checkpoint(self.skey)
            net, meta, chash = load_supernet(path, self.space, pick_device(self.device_name))
            if chash != self.hash:
                raise CheckpointError(
                    f"supernet checkpoint {path} has content hash {chash}, its metrics.json "
                    f"records {self.hash}: `layernas audit {self.layout.root} --fix` deletes it, "
                    "then the same command trains it again"
                )
            self._loaded = (net, meta, data_of(self.config))
        return self._loaded

    def run(self, arch: str, key: str, out_dir: str | Path, seed: int, recipe: str) -> dict:
        """Evaluate one child and record it under ``out_dir`` as a trial; its metrics."""
        net, meta, data = self.load()
        inputs = {
            "key": key,
            "space": self.space.name,
            "space_id": self.space.space_id,
            "arch": arch,
            "seed": seed,
            "evaluator": "supernet",
            "supernet": self.hash,
            "supernet_key": self.skey,
            "eval": self.settings,
            "train_hash": recipe,
        }

        def body(metrics: dict, log) -> None:
            from layernas.core.cost import cost_of
            from layernas.evaluate.supernet_train import evaluate_children
            from layernas.evaluate.train import TrialFailed

            arch_t = parse_arch(arch, self.space)
            c = cost_of(
                self.space,
                [arch_t],
                input_size=data.input_size,
                num_classes=data.num_classes,
                input_channels=data.input_channels,
            )
            metrics.update(madds=int(c["madds"][0]), params=int(c["params"][0]))
            eval_bs = int((self.config.get("train") or {}).get("eval_batch_size", TrainConfig.eval_batch_size))
            t0 = time.perf_counter()
            (row,) = evaluate_children(
                net,
                [arch_t],
                data,
                meta,
                recal_samples=self.recal_samples,
                recal_batch_size=int(self.settings["recal_batch_size"]),
                eval_batch_size=eval_bs,
                log=log,
            )
            metrics.update(
                accuracy=row["accuracy"],
                val_accuracy=row["accuracy"],
                val_loss=row["loss"],
                bn_calibration_images=row["bn_calibration_images"],
                eval_seconds=time.perf_counter() - t0,
            )
            if row.get("error") or not math.isfinite(row["accuracy"]):
                raise TrialFailed(row.get("error") or f"accuracy is {row['accuracy']}")

        metrics = {
            "key": key,
            "arch": arch,
            "seed": seed,
            "supernet": self.hash,
            "evaluator": "supernet",
            "device": str(next(net.parameters()).device),
        }
        return record_run(out_dir, inputs, metrics, body, on_failure={"accuracy": None})


def checkpoint_hash(path: str | Path, space: Space) -> str:
    """The content hash a supernet checkpoint's weights hash to (``load_supernet``'s check); a
    CheckpointError (a ValueError) when it does not load, is corrupted or is of another space.
    ``layernas audit`` passes it to the store's audit, which does not import torch."""
    from layernas.evaluate.supernet_train import load_supernet

    return load_supernet(path, space)[2]
