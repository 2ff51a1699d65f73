"""Detection transfer: torchvision SSDLite on a found backbone, trained on the generated COCO-format
set and scored by pycocotools COCOeval; the reference backbone is matched on MAdds; bad inputs
are clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from layernas.cli.main import main as cli
from layernas.core.space import load_space, parse_arch
from layernas.detect.data import GenConfig, generate, load_coco, split_paths
from layernas.detect.recipe import TransferConfig
from layernas.detect.ssdlite import build_detector, found_features, match_reference_width, tap_backbone
from layernas.detect.train_eval import coco_metrics
from layernas.detect.transfer import run_transfer
from layernas.evaluate.models import build_model

SET = GenConfig(seed=1, source="digits", num_train=160, num_val=40, canvas=64, min_size=16, max_size=40)
RECIPE = TransferConfig(canvas=64, epochs=8, batch_size=16, lr=3e-3, threads=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "set"
    generate(out, SET)
    return out


@pytest.fixture(scope="module")
def space():
    return load_space("mobilenet-tiny")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir, space):
    """One transfer of the cheapest arch with weights saved by build_model (as the final stage does)."""
    out = tmp_path_factory.mktemp("transfer")
    arch = parse_arch("min", space)
    torch.manual_seed(0)
    weights = out / "model.pt"
    torch.save(build_model(space, arch).state_dict(), weights)
    metrics = run_transfer(space, arch, weights, data_dir, RECIPE, out)
    return out, metrics


@pytest.mark.slow
def test_training_beats_the_untrained_detector(trained_run):
    _, m = trained_run
    assert m["status"] == "ok"
    assert m["map"] > 0.0
    assert m["map"] > m["untrained_map"] + 0.005, (m["map"], m["untrained_map"])
    assert m["ap50"] >= m["map"]
    assert m["pretrained"] is True


@pytest.mark.slow
def test_metrics_are_cocoeval_on_the_written_detections(trained_run, data_dir):
    from pycocotools.cocoeval import COCOeval

    out, m = trained_run
    gt = load_coco(split_paths(data_dir, "val")[0])
    dets = json.loads((out / "detections.json").read_text())
    assert len(dets) == m["num_detections"] > 0
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert m["map"] == pytest.approx(float(ev.stats[0]), abs=1e-12)
    assert m["ap50"] == pytest.approx(float(ev.stats[1]), abs=1e-12)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["map"] == m["map"] and on_disk["config"]["epochs"] == RECIPE.epochs


@pytest.mark.slow
def test_reference_is_a_mobilenet_v3_of_similar_madds(trained_run):
    _, m = trained_run
    ref = m["reference"]
    assert ref["name"] == "mobilenet_v3_small" and ref["pretrained"] is False
    assert abs(ref["backbone_madds"] - m["backbone_madds"]) / m["backbone_madds"] < 0.25
    assert (trained_run[0] / "detections_reference.json").is_file()
    assert ref["map"] is not None and ref["untrained_map"] is not None


def test_no_detections_is_ap_zero_not_a_crash(data_dir):
    gt = load_coco(split_paths(data_dir, "val")[0])
    m = coco_metrics(gt, [], gt.getImgIds())
    assert m["map"] == 0.0 and m["num_detections"] == 0


def test_reference_width_is_the_closest_in_madds(space):
    from layernas.detect.ssdlite import backbone_madds, reference_features

    cfg = TransferConfig(canvas=64)
    features, _ = found_features(space, parse_arch("default", space), None)
    target = backbone_madds(tap_backbone(features, 64, cfg.strides, cfg.extra_channels), 64)
    w, madds = match_reference_width(target, cfg)
    for other in (round(w - 0.05, 2), round(w + 0.05, 2)):
        if other > 0:
            m2 = backbone_madds(tap_backbone(reference_features(other), 64, cfg.strides, cfg.extra_channels), 64)
            assert abs(madds - target) <= abs(m2 - target), (w, other)


def test_detector_returns_one_map_per_stride(space):
    features, info = found_features(space, parse_arch("default", space), None)
    assert info["pretrained"] is False and "scratch" in info["note"]
    tb = tap_backbone(features, 64, (8, 16, 32), 32)
    maps = tb(torch.zeros(2, 3, 64, 64))
    assert [m.shape[-1] for m in maps.values()] == [8, 4, 2]
    det = build_detector(tb, 11, TransferConfig(canvas=64)).eval()
    with torch.no_grad():
        out = det([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_weights_of_another_arch_are_a_clear_error(tmp_path, space):
    w = tmp_path / "model.pt"
    torch.save(build_model(space, parse_arch("default", space)).state_dict(), w)
    with pytest.raises(ValueError, match="do not fit arch"):
        found_features(space, parse_arch("min", space), w)


@pytest.mark.parametrize("raw, needle", [
    ({"epoch": 3}, "unknown transfer setting"),
    ({"strides": [8, 12]}, "powers of two"),
    ({"canvas": 0}, "positive integer"),
    ({"min_ratio": 0.9, "max_ratio": 0.2}, "min_ratio"),
])
def test_bad_recipe_is_a_clear_error(raw, needle):
    with pytest.raises(ValueError, match=needle):
        TransferConfig.from_dict(raw)


def test_cli_missing_data_is_one_error_line(tmp_path, capsys):
    rc = cli(["transfer", "--space", "mobilenet-tiny", "--arch", "min", "--data", str(tmp_path / "nope"),
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()
