"""Final retraining of a found model with the paper's recipe, made configurable.

The paper retrains its best proxy models for 500 epochs with RMSProp (momentum 0.9), initial
lr 2.64 at batch 4096 (scaled linearly with the batch size here), 12.5 warm-up epochs (2.5%)
then cosine decay, and reports test accuracy. Defaults keep that shape at laptop scale; every
number is a config field (``final:`` in config.yaml, ``layernas.evaluate.recipe.FinalConfig``).
Weight decay 1e-5 and an EMA of the weights (0.999) are our additions: the paper mentions
neither (``weight_decay: 0``, ``ema_decay: null`` give its recipe as written).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from layernas.evaluate.recipe import FinalConfig, TrainConfig
from layernas.evaluate.trial import save_weights
from layernas.store.files import atomic_write_json
from layernas.store.layout import PREPROCESSING, WEIGHTS
from layernas.store.records import record_run


def run_final(space, arch: str, train_cfg: dict | None, final_cfg: dict | None, seed: int, out_dir: str | Path,
              threads: int | None = None) -> dict:
    """Retrain ``arch`` on the whole training split (train + val) and report test accuracy;
    saves the evaluated weights (model.pt, also the transfer stage's backbone) and the input
    preprocessing (preprocessing.json) before metrics.json. A failure of the model is recorded."""
    fc = FinalConfig.from_dict(final_cfg)
    tc = TrainConfig.from_dict(train_cfg)
    tc = replace(tc, optimizer="rmsprop", momentum=0.9, epochs=fc.epochs, batch_size=fc.batch_size,
                 weight_decay=fc.weight_decay, max_train_samples=fc.max_train_samples,
                 threads=threads or tc.threads)
    inputs = {"space": space.name, "space_id": space.space_id, "arch": arch, "seed": int(seed),
              "train": tc.hashed(), "final": fc.__dict__}

    def body(metrics: dict, log) -> None:
        import torch

        from layernas.core.cost import cost_of
        from layernas.core.space import format_arch, parse_arch
        from layernas.evaluate.data import Dataset, load_dataset
        from layernas.evaluate.loading import preprocessing_record
        from layernas.evaluate.models import build_model
        from layernas.evaluate.train import train_model

        d = load_dataset(tc.dataset, tc.data_dir, tc.val_fraction, None)
        split = type(d.train)
        train_all = split(torch.cat([d.train.images, d.val.images]), torch.cat([d.train.labels, d.val.labels]))
        if fc.max_train_samples:
            train_all = split(train_all.images[: fc.max_train_samples], train_all.labels[: fc.max_train_samples])
        data = Dataset(d.name, train_all, d.val, d.test, d.num_classes)
        arch_t = parse_arch(arch, space)
        torch.manual_seed(int(seed))
        model = build_model(space, arch_t, num_classes=data.num_classes, input_size=data.input_size,
                            input_channels=data.input_channels)
        c = cost_of(space, [arch_t], input_size=data.input_size, num_classes=data.num_classes,
                    input_channels=data.input_channels)
        metrics.update(madds=int(c["madds"][0]), params=int(c["params"][0]), lr=fc.lr)

        def keep(evaluated, mean, std) -> None:  # the model and input the test accuracy is of
            save_weights(evaluated, Path(out_dir) / WEIGHTS)
            atomic_write_json(Path(out_dir) / PREPROCESSING, preprocessing_record(
                space, format_arch(arch_t), dataset=tc.dataset, data_dir=tc.data_dir, num_classes=data.num_classes,
                input_size=data.input_size, input_channels=data.input_channels, mean=mean.cpu(), std=std.cpu()))

        res = train_model(model, data, tc, int(seed), log=log, lr=fc.lr, warmup_epochs=fc.warmup_fraction * fc.epochs,
                          ema_decay=fc.ema_decay, eval_split="test", on_final=keep)
        metrics.update(res)

    return record_run(out_dir, inputs, {"arch": arch, "seed": int(seed), "stage": "final"}, body)
