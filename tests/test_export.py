"""Using a found model: load_model rebuilds it with its preprocessing and reproduces the recorded
test accuracy; `layernas export` writes TorchScript and ONNX that equal the eager model on every
backbone with a torch builder, and a card whose MAdds/params are the analytic cost; bad input is
one error line and writes nothing; the workflow exports its final models (docs/export.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import layernas
from layernas.cli.main import main
from layernas.core.cost import cost_of
from layernas.core.space import format_arch, load_space, parse_arch
from layernas.evaluate.counting import count_madds_params
from layernas.evaluate.export import TOLERANCE, export_final_dir, export_model, formats_of
from layernas.evaluate.final import run_final
from layernas.evaluate.loading import Preprocess, find_final, preprocessing_record
from layernas.evaluate.models import build_model
from layernas.evaluate.trial import save_weights
from layernas.store.files import atomic_write_json
from layernas.store.keys import final_key
from layernas.store.layout import EXPORT_CARD, EXPORT_ONNX, EXPORT_TORCHSCRIPT, Layout
from layernas.workflow.config import exports_final

KEY = "0123456789abcdef"
# Every backbone with a torch builder; the nb201 archs use every edge op, the nats arch both
# width-keeping and width-changing cells.
BACKBONES = [("mobilenet-tiny", "3-5-0-2-4-0-2"), ("nb201-topology", "1-7-30"), ("nb201-topology", "2-12-77"),
             ("nats-size", "3-0-5-2-7")]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def fake_run(root: Path, space_name: str, arch: str, key: str = KEY, status: str = "ok") -> Path:
    """A results directory with one final model as the final stage leaves it: random weights
    (BN statistics from a few random batches), preprocessing.json, metrics.json, summary.json."""
    space = load_space(space_name)
    arch = format_arch(parse_arch(arch, space))
    torch.manual_seed(0)
    model = build_model(space, arch)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, space.input_channels, space.input_size, space.input_size))
    layout = Layout(root)
    d = layout.final_dir(key)
    save_weights(model, layout.final_weights(key))
    g = torch.Generator().manual_seed(1)
    mean, std = torch.rand(space.input_channels, generator=g), 0.2 + torch.rand(space.input_channels, generator=g)
    atomic_write_json(layout.final_preprocessing(key), preprocessing_record(
        space, arch, dataset="cifar10" if space.input_channels == 3 else "fashion-mnist", data_dir=None,
        num_classes=space.num_classes, input_size=space.input_size, input_channels=space.input_channels,
        mean=mean, std=std))
    atomic_write_json(d / "trial.json", {"space": space.name, "arch": arch, "seed": 0, "train": {"lr": 0.1},
                                         "final": {"epochs": 2.0}})
    atomic_write_json(d / "metrics.json", {"status": status, "arch": arch, "test_accuracy": 0.5,
                                           "error": None if status == "ok" else "RuntimeError: boom"})
    atomic_write_json(layout.summary, {"top": [{"arch": arch, "key": "f" * 16, "final_key": key, "cost": 1.0,
                                                "accuracy": 0.42}]})
    return root


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("space_name,arch", BACKBONES)
def test_export_round_trip_equals_the_eager_model(tmp_path, space_name, arch):
    import onnxruntime as ort

    res = fake_run(tmp_path / "results", space_name, arch)
    card = export_model(res, formats="both")
    out = Layout(res).export_dir(KEY)
    assert card["dir"] == str(out) and files(out) == sorted([EXPORT_CARD, EXPORT_ONNX, EXPORT_TORCHSCRIPT])
    assert json.loads((out / EXPORT_CARD).read_text())["checks"] == card["checks"]
    for check in card["checks"].values():
        assert check["max_abs_diff"] < TOLERANCE
    assert card["checks"]["onnx"]["checker"].startswith("passed")

    model, pre = layernas.load_model(res, rank=1)
    images = torch.randint(0, 256, (3, pre.input_size, pre.input_size, pre.input_channels), dtype=torch.uint8)
    x = pre(images)  # NHWC uint8, as images come from files
    with torch.no_grad():
        eager = model(x)
        scripted = torch.jit.load(str(out / EXPORT_TORCHSCRIPT))(x)
    onnx_out = ort.InferenceSession(str(out / EXPORT_ONNX), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    assert (scripted - eager).abs().max() < TOLERANCE
    assert np.abs(onnx_out - eager.numpy()).max() < TOLERANCE


def test_card_reads_as_words_and_its_cost_is_the_analytic_cost(tmp_path):
    res = fake_run(tmp_path / "results", "mobilenet-tiny", "3-5-0-2-4-0-2")
    card = export_model(res, out=tmp_path / "out", formats="onnx")
    space = load_space("mobilenet-tiny")
    arch = parse_arch(card["arch"], space)
    c = cost_of(space, [arch], input_size=28, num_classes=10, input_channels=1)
    assert (card["madds"], card["params"]) == (int(c["madds"][0]), int(c["params"][0]))
    counted = count_madds_params(build_model(space, arch), 28, 1)
    assert (card["madds"], card["params"]) == (counted["madds"], counted["params"])
    assert files(tmp_path / "out") == [EXPORT_CARD, EXPORT_ONNX]
    assert card["space"] == {"name": "mobilenet-tiny", "id": space.space_id, "backbone": "mobilenet"}
    assert [layer["choice"] for layer in card["layers"]] == space.describe(arch)
    assert any(layer["words"].startswith("kernel ") and "expanded filters" in layer["words"] for layer in card["layers"])
    assert card["input"]["input_size"] == 28 and card["input"]["input_channels"] == 1
    assert len(card["input"]["mean"]) == len(card["input"]["std"]) == 1
    assert card["classes"]["count"] == 10 and card["classes"]["names"][0] == "T-shirt/top"
    assert card["accuracy"] == {"proxy_val": 0.42, "final_test": 0.5, "proxy_trial_key": "f" * 16}
    assert card["recipe"]["final"] == {"epochs": 2.0} and card["key"] == KEY and card["rank"] == 1
    assert {"layernas", "torch", "onnx", "onnxruntime"} <= set(card["versions"])


def test_nb201_card_names_each_edge_op(tmp_path):
    res = fake_run(tmp_path / "results", "nb201-topology", "0-0-0")
    card = export_model(res, out=tmp_path / "out", formats="torchscript")
    assert card["layers"][2]["words"] == ("node 0 -> 3: nor_conv_3x3, node 1 -> 3: nor_conv_3x3, "
                                          "node 2 -> 3: nor_conv_3x3")


# --------------------------------------------------------------------------- bad input


def cli(*argv: str, capsys) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", ["not-results", "missing", "unknown-key", "rank", "failed", "no-final",
                                  "no-preprocessing", "final-dir-with-rank"])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, case):
    res = tmp_path / "results"
    args = [str(res)]
    if case == "not-results":
        (tmp_path / "elsewhere").mkdir()
        args = [str(tmp_path / "elsewhere")]
        needle = "is not a results directory"
    elif case == "missing":
        args = [str(tmp_path / "nothing-here")]
        needle = "does not exist"
    else:
        fake_run(res, "mobilenet-tiny", "min", status="failed" if case == "failed" else "ok")
        if case == "unknown-key":
            args += ["--key", "fedcba9876543210"]
            needle = f"no final model with key 'fedcba9876543210' in {res} (the search's final models: {KEY})"
        elif case == "rank":
            args += ["--rank", "2"]
            needle = "rank 2 is out of range: " + str(res) + " has 1 final model(s) (rank 1..1)"
        elif case == "failed":
            needle = "failed its final retraining (RuntimeError: boom)"
        elif case == "no-final":
            (Layout(res).final_metrics(KEY)).unlink()
            needle = "is not finished"
        elif case == "no-preprocessing":
            Layout(res).final_preprocessing(KEY).unlink()
            needle = "run the workflow again to retrain it"
        else:
            args = [str(Layout(res).final_dir(KEY)), "--rank", "1"]
            needle = "give its results directory"
    out = tmp_path / "out"
    rc, stdout, err = cli("export", *args, "--out", str(out), capsys=capsys)
    assert rc == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("layernas: error: ") and needle in err, err
    assert not out.exists() and not (res / "export").exists()


def test_an_export_that_differs_from_pytorch_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    import layernas.evaluate.export as ex

    res = fake_run(tmp_path / "results", "mobilenet-tiny", "min")
    monkeypatch.setattr(ex, "TOLERANCE", 0.0)  # any rounding difference now counts as a mismatch
    with pytest.raises(ex.ExportError, match=r"onnx export of .* differs from the PyTorch model by .* must be < 0"):
        export_model(res, out=tmp_path / "out", formats="onnx")
    assert not (tmp_path / "out").exists()
    # the workflow's export records why instead of stopping the run
    card = export_final_dir(Layout(res).final_dir(KEY), tmp_path / "wf", formats="onnx")
    assert card["status"] == "failed" and "differs from the PyTorch model" in card["error"]
    assert files(tmp_path / "wf") == [EXPORT_CARD]


def test_formats_and_rank_and_key_arguments():
    assert formats_of("both") == formats_of(["onnx", "torchscript"]) == ("torchscript", "onnx")
    with pytest.raises(ValueError, match="export format must be one of"):
        formats_of("tflite")
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        find_final(".", rank=0)
    with pytest.raises(ValueError, match="not both"):
        find_final(".", rank=1, key=KEY)


# --------------------------------------------------------------------------- loading


def test_preprocess_takes_any_image_layout_with_the_training_arithmetic():
    pre = Preprocess((0.25, 0.5, 0.75), (0.2, 0.3, 0.4), 8, 3)
    img = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    want = (img.float() / 255.0 - torch.tensor([0.25, 0.5, 0.75]).reshape(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.3, 0.4]).reshape(1, 3, 1, 1)
    assert torch.equal(pre(img), want)                                   # exactly the trainer's operations
    assert torch.equal(pre(img.permute(0, 2, 3, 1).numpy()), want)       # NHWC numpy
    assert torch.equal(pre(img[0]), want[:1])                            # one CHW image
    assert torch.allclose(pre(img.float() / 255), want)                  # floats in 0..1
    assert pre(torch.zeros(1, 3, 16, 12, dtype=torch.uint8)).shape == (1, 3, 8, 8)  # resized + centre crop
    with pytest.raises(ValueError, match="3 channel"):
        pre(torch.zeros(1, 2, 8, 8, dtype=torch.uint8))


def test_importing_layernas_does_not_import_torch():
    code = "import sys, layernas; assert 'torch' not in sys.modules; f = layernas.load_model; print(f.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "layernas.evaluate.loading", proc.stderr


def test_load_model_reproduces_the_recorded_final_test_accuracy(tmp_path):
    """A real (tiny) final retraining on digits: the loaded model, fed the test split through its
    preprocessing, scores exactly the test accuracy its metrics recorded."""
    from layernas.evaluate.data import load_dataset

    space = load_space("mobilenet-tiny")
    key = KEY
    layout = Layout(tmp_path / "results")
    m = run_final(space, "3-7-7-3-7-7-2", {"dataset": "digits", "threads": 1, "eval_batch_size": 256},
                  {"epochs": 1, "batch_size": 64}, 0, layout.final_dir(key))
    assert m["status"] == "ok", m.get("error")
    atomic_write_json(layout.summary, {"top": [{"arch": "3-7-7-3-7-7-2", "key": "f" * 16, "final_key": key}]})
    model, pre = layernas.load_model(layout.root, rank=1)
    assert not model.training and pre.classes == tuple("0123456789")
    test = load_dataset("digits", None, 0.1, None).test
    with torch.no_grad():
        pred = torch.cat([model(pre(test.images[i:i + 256])).argmax(1) for i in range(0, len(test), 256)])
    assert abs(float((pred == test.labels).float().mean()) - m["test_accuracy"]) <= 1e-6
    # the same model through its final directory and through its key
    again, _ = layernas.load_model(layout.final_dir(key))
    assert torch.equal(again(pre(test.images[:8])), model(pre(test.images[:8])))
    assert layernas.load_model(layout.root, key=key).model.arch == "3-7-7-3-7-7-2"


# --------------------------------------------------------------------------- workflow


def test_final_export_switch_changes_no_final_key():
    base = {"evaluator": "train", "seed": 0, "train": {"lr": 0.1}, "final": {"epochs": 2}}
    off = base | {"final": {"epochs": 2, "export": False}}
    on = base | {"final": {"epochs": 2, "export": True}}
    assert final_key("s@v1", "0-1", base) == final_key("s@v1", "0-1", off) == final_key("s@v1", "0-1", on)
    assert exports_final(base) and exports_final(on) and not exports_final(off)
    assert not exports_final(base | {"evaluator": "tabular"})
    assert not exports_final(base | {"final": {"activate": False}})


@pytest.mark.slow
def test_workflow_exports_each_final_model_and_the_report_lists_the_files(tmp_path):
    """A real training run (digits, 6 trials, 1 final model): rule export writes the card and
    both formats, the report's final models table names the files, and load_model(results)
    reproduces the recorded test accuracy."""
    import pandas as pd
    import yaml

    from layernas.evaluate.data import load_dataset

    root = Path(__file__).resolve().parents[1]
    cfg = {"space": "mobilenet-tiny", "evaluator": "train", "target": {"metric": "madds", "min": 4.0e6, "max": 5.5e6},
           "search": {"buckets": 4, "replicas": 1, "per_sweep": 1, "budget": 6},
           "train": {"dataset": "digits", "epochs": 1, "batch_size": 64},
           "final": {"activate": True, "top_n": 1, "epochs": 1}, "transfer": {"activate": False}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--cores", "2", "-d",
           str(tmp_path / "run"), "--configfile", str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "run" / "results"
    (metrics,) = res.glob("final/*/metrics.json")
    key = metrics.parent.name
    card = json.loads(Layout(res).export_card(key).read_text())
    assert card["status"] == "ok" and card["rank"] == 1 and card["checks"]["onnx"]["max_abs_diff"] < TOLERANCE
    assert files(Layout(res).export_dir(key)) == sorted([EXPORT_CARD, EXPORT_ONNX, EXPORT_TORCHSCRIPT])
    assert card["latency"]["measured_ms"] > 0 and card["latency"]["threads"] == 1  # and no table: no prediction
    assert "predicted_ms" not in card["latency"]
    table = pd.read_csv(res / "report" / "final_models.csv")
    assert table["latency_measured_ms"].iloc[0] == card["latency"]["measured_ms"]
    assert "latency_predicted_ms" not in table
    assert table["export"].iloc[0].split() == [str(Path("results/export") / key / n)
                                               for n in (EXPORT_TORCHSCRIPT, EXPORT_ONNX, EXPORT_CARD)]
    model, pre = layernas.load_model(res)
    test = load_dataset("digits", None, 0.1, None).test
    with torch.no_grad():
        acc = float((model(pre(test.images)).argmax(1) == test.labels).float().mean())
    assert abs(acc - json.loads(metrics.read_text())["test_accuracy"]) <= 1e-6
