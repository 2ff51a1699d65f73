"""Final retraining: the paper's recipe (RMSProp, linear lr scaling, warm-up + cosine, EMA)
evaluates on the test split and saves weights."""

from __future__ import annotations

import pytest

from layernas.core.space import load_space
from layernas.evaluate.final import run_final
from layernas.evaluate.recipe import FinalConfig


def test_lr_scales_linearly_from_the_paper():
    assert FinalConfig(batch_size=4096).lr == pytest.approx(2.64)
    assert FinalConfig(batch_size=128).lr == pytest.approx(2.64 * 128 / 4096)


def test_final_run_reports_test_accuracy_and_saves_weights(tmp_path):
    m = run_final(load_space("mobilenet-tiny"), "3-7-7-3-7-7-2", {"dataset": "digits", "threads": 1},
                  {"epochs": 2, "batch_size": 64}, 0, tmp_path / "f")
    assert m["status"] == "ok", m.get("error")
    assert m["test_accuracy"] > 0.5
    assert (tmp_path / "f" / "model.pt").stat().st_size > 0


def test_unknown_final_field_is_a_config_error_not_a_failed_model(tmp_path):
    """A misspelt recipe field is the user's input, not the model's failure: it raises before
    anything is written, so no 'failed' record hides it."""
    with pytest.raises(ValueError, match="epoch"):
        run_final(load_space("mobilenet-tiny"), "min", {"dataset": "digits"}, {"epoch": 2}, 0, tmp_path / "f")
    assert not (tmp_path / "f").exists()
