"""The generated COCO-format detection set: COCO tools read it, it is deterministic and cached,
and bad inputs fail with a clear ValueError."""

from __future__ import annotations

import json

import pytest

from layernas.detect.data import (
    GenConfig,
    category_maps,
    detection_set,
    generate,
    is_current,
    load_coco,
    resolve_source,
    split_paths,
)

SMALL = GenConfig(seed=3, source="digits", num_train=12, num_val=6, canvas=48, min_size=12, max_size=28)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "set"
    meta = generate(out, SMALL)
    return out, meta


def test_pycocotools_loads_both_splits(small_set):
    out, meta = small_set
    for split, n in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        ann, images = split_paths(out, split)
        coco = load_coco(ann)  # pycocotools.coco.COCO
        assert len(coco.getImgIds()) == n == meta["counts"][split]["images"]
        assert len(coco.getAnnIds()) == meta["counts"][split]["boxes"]
        assert sorted(coco.getCatIds()) == list(range(1, 11))
        for img in coco.loadImgs(coco.getImgIds()):
            assert (images / img["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert SMALL.min_objects <= len(anns) <= SMALL.max_objects
            for a in anns:
                x, y, w, h = a["bbox"]
                assert w >= 1 and h >= 1 and x >= 0 and y >= 0
                assert x + w <= img["width"] and y + h <= img["height"]
                assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0


def test_loadres_and_cocoeval_accept_the_set(small_set):
    """Ground truth scored as detections gives AP 1: the set is well-formed for COCOeval."""
    from pycocotools.cocoeval import COCOeval

    from layernas.detect.data import quiet_stdout

    coco = load_coco(split_paths(small_set[0], "val")[0])
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in coco.loadAnns(coco.getAnnIds())]
    with quiet_stdout():
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_deterministic_and_cached(small_set, tmp_path):
    out, _ = small_set
    generate(tmp_path / "again", SMALL)
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json", "train/000003.png"):
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    assert is_current(out, SMALL) and generate(out, SMALL)["cached"] is True
    other = generate(tmp_path / "other", GenConfig(**{**SMALL.__dict__, "seed": 4}))
    assert other["cached"] is False
    assert (tmp_path / "other/annotations/instances_train.json").read_bytes() != \
        (out / "annotations/instances_train.json").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_existing_directory_needs_overwrite(small_set, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something.txt").write_text("user data")
    with pytest.raises(ValueError, match="overwrite"):
        generate(target, SMALL)
    generate(target, SMALL, overwrite=True)
    assert is_current(target, SMALL) and not (target / "something.txt").exists()


def test_dataset_targets(small_set):
    coco = load_coco(split_paths(small_set[0], "train")[0])
    to_label, to_cat, names = category_maps(coco)
    assert to_label == {c: c for c in range(1, 11)} and len(names) == 10
    ds = detection_set(small_set[0], "train", to_label, max_images=5)
    assert len(ds) == 5
    img, tgt = ds[0]
    assert img.shape == (3, 48, 48) and img.dtype.is_floating_point and 0 <= img.min() and img.max() <= 1
    assert tgt["boxes"].shape[1] == 4 and tgt["labels"].dtype.is_signed
    assert (tgt["boxes"][:, 2:] > tgt["boxes"][:, :2]).all()
    assert tgt["labels"].min() >= 1


def test_non_contiguous_category_ids_are_mapped(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "x").mkdir()
    ann = {"images": [], "annotations": [],
           "categories": [{"id": 7, "name": "a"}, {"id": 90, "name": "b"}, {"id": 3, "name": "c"}]}
    (tmp_path / "annotations/instances_x.json").write_text(json.dumps(ann))
    to_label, to_cat, names = category_maps(load_coco(split_paths(tmp_path, "x")[0]))
    assert to_label == {3: 1, 7: 2, 90: 3} and to_cat == {1: 3, 2: 7, 3: 90} and names == ["c", "a", "b"]


def test_missing_paths_are_clear_errors(tmp_path, small_set):
    with pytest.raises(ValueError, match="does not exist"):
        split_paths(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match="instances_train2017.json is missing.*instances_train.json"):
        split_paths(small_set[0], "train2017")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text("{}")
    with pytest.raises(ValueError, match="image directory"):
        split_paths(tmp_path, "val")


@pytest.mark.parametrize("bad", [{"source": "cifar"}, {"num_train": 0}, {"min_objects": 3, "max_objects": 2},
                                 {"min_size": 60, "max_size": 70, "canvas": 64}, {"colour": 1}])
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        GenConfig.from_dict(bad)


def test_fashion_source_when_installed(tmp_path):
    if resolve_source("auto") != "fashion-mnist":
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    cfg = GenConfig(seed=0, source="fashion-mnist", num_train=4, num_val=2, canvas=48, min_size=16, max_size=28)
    meta = generate(tmp_path / "f", cfg)
    assert meta["resolved_source"] == "fashion-mnist"
    coco = load_coco(split_paths(tmp_path / "f", "val")[0])
    assert coco.loadCats(1)[0]["name"] == "t-shirt"


def test_auto_source_is_fashion_mnist_exactly_when_the_trials_find_it():
    """`auto` must fall back to digits only when Fashion-MNIST is not installed: a broad except
    once turned a missing function into "not installed", and every default run used digits."""
    from layernas.evaluate.data import DataError, check_source

    try:
        check_source("fashion-mnist", None)
        installed = True
    except DataError:
        installed = False
    assert resolve_source("auto") == ("fashion-mnist" if installed else "digits")
