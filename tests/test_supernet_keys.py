"""Key rules of ``evaluator: supernet`` (layernas.store.keys): the evaluations' keys hold the
checkpoint's content hash and the evaluation settings; the supernet's own key holds what decides
its weights and nothing else; the keys of train and tabular searches do not change."""

from __future__ import annotations

import json

import pytest

from layernas.store.keys import supernet_key, train_hash, trial_key
from layernas.store.supernet import SupernetMissing, supernet_hash
from layernas.workflow.config import check_config
from layernas.workflow.stages import Context


def config(**over) -> dict:
    base = {"space": "mobilenet-tiny", "evaluator": "supernet", "target": {"min": 3.5e6, "max": 4.0e6},
            "train": {"dataset": "digits"}, "supernet": {"epochs": 0.5}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return check_config(base)


def test_an_evaluation_key_holds_the_checkpoint_hash_and_the_evaluation_settings():
    c = config()
    with pytest.raises(ValueError, match="needs the supernet checkpoint's content hash"):
        train_hash(c)
    a, b = train_hash(c, "aaaaaaaaaaaaaaaa"), train_hash(c, "bbbbbbbbbbbbbbbb")
    assert a != b and a == train_hash(config(), "aaaaaaaaaaaaaaaa")
    assert train_hash(config(supernet={"recal_samples": 2000}), "aaaaaaaaaaaaaaaa") != a
    assert train_hash(config(supernet={"device": "cpu", "threads": 3, "log_every": 5}), "aaaaaaaaaaaaaaaa") == a
    assert trial_key("s", "0-1", a, 0) != trial_key("s", "0-1", b, 0)


def test_the_supernet_key_holds_what_decides_its_weights_only():
    k = supernet_key("mobilenet-tiny@v1", config())
    assert k == supernet_key("mobilenet-tiny@v1", config())
    for same in ({"supernet": {"device": "cpu", "threads": 2, "log_every": 7, "recal_samples": 10}},
                 {"train": {"lr": 0.5, "epochs": 3, "bn_recalibrate_samples": 10}}):
        assert supernet_key("mobilenet-tiny@v1", config(**same)) == k, same
    for other in ({"supernet": {"epochs": 1}}, {"seed": 1}, {"train": {"max_train_samples": 500}},
                  {"train": {"val_fraction": 0.2}}, {"supernet": {"distill": False}}):
        assert supernet_key("mobilenet-tiny@v1", config(**other)) != k, other
    assert supernet_key("other@v1", config()) != k


def test_train_and_tabular_keys_ignore_the_supernet_section():
    """Every config gets the supernet section's defaults; no train or tabular key may see them."""
    train = {"evaluator": "train", "train": {"dataset": "digits"}}
    assert train_hash({**train, "supernet": {"epochs": 9}}) == train_hash(train)
    tab = {"evaluator": "tabular", "oracle": "layernas.examples.toy:appendix_i"}
    assert train_hash({**tab, "supernet": {"epochs": 9}}) == train_hash(tab)


def test_the_controller_keys_children_by_the_trained_supernet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = Context(config())
    skey = ctx.supernet_key
    assert ctx.children_inputs(0, 0) == {"supernet": f"results/supernet/{skey}/metrics.json"}
    assert ctx.children_inputs(0, 1)["supernet"] == f"results/supernet/{skey}/metrics.json"
    with pytest.raises(SupernetMissing, match="no trained supernet"):
        ctx.key("0-0-0-0-0-0-0")
    path = ctx.layout.supernet_metrics(skey)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"status": "failed"}))
    with pytest.raises(SupernetMissing, match="records no trained supernet"):
        supernet_hash(ctx.layout, skey)
    path.write_text(json.dumps({"status": "ok", "hash": "0123456789abcdef"}))
    assert ctx.key_hash() == train_hash(ctx.config, "0123456789abcdef")
    assert ctx.key("0-0-0-0-0-0-0") == trial_key(ctx.space.space_id, "0-0-0-0-0-0-0", ctx.key_hash(), 0)
    # the signature (a rule param, fixed at parse time) does not hold the checkpoint's hash
    assert "0123456789abcdef" not in json.dumps(ctx.signature)
