"""Training on instance labels records the post-processing chosen on the validation split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.inference.tta import DIHEDRAL


def blob_folder(root, count: int = 6, size: int = 48):
    """Images of bright discs, two of them touching, with their instance labels."""
    rng = np.random.default_rng(0)
    for sub in ("images", "instances"):
        (root / sub).mkdir(parents=True)
    rows, cols = np.ogrid[:size, :size]
    for index in range(count):
        labels = np.zeros((size, size), np.uint16)
        centres = [(14, 14), (14, 29), (34, 22 + int(rng.integers(-4, 5)))]
        for label, (r, c) in enumerate(centres, start=1):
            labels[((rows - r) ** 2 + (cols - c) ** 2 <= 64) & (labels == 0)] = label
        image = np.where(labels > 0, 200, 40) + rng.normal(0, 10, (size, size))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{index}.png")
        Image.fromarray(labels).save(root / "instances" / f"{index}.png")
    return root


def train_run(tmp_path, data, *, epochs: int, data_keys: str):
    """``pixelwise train`` of a small U-Net on the instance folder ``data``; its run folder."""
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[data]
layout = "instances"
root = "{data}"
{data_keys}
[model]
name = "unet"
options = {{ depth = 2, base_width = 4 }}
[loss]
name = "ce"
[train]
epochs = {epochs}
batch_size = 2
overlays = 0
device = "cpu"
"""
    )
    assert main(["train", str(config), "--out-dir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_a_three_class_run_records_its_instance_post_processing(tmp_path, capsys):
    data = blob_folder(tmp_path / "data")
    keys = 'instance_target = "three_class"\nboundary_width = 1\nval_fraction = 0.34'
    capsys.readouterr()
    run = train_run(tmp_path, data, epochs=2, data_keys=keys)
    printed = capsys.readouterr().out
    assert "objects (best.pt): " in printed and "chosen on the validation split" in printed
    for name in ("best.pt", "last.pt", "best.safetensors"):
        chosen = load_checkpoint(run / name).instances
        assert chosen is not None, name
        assert chosen["method"] in ("components", "watershed") and chosen["interior_class"] == 1
        assert 0.0 <= chosen["score"] <= 1.0
    assert load_checkpoint(run / "best.pt").class_names == ("background", "interior", "boundary")
    assert main(["info", str(run / "last.pt")]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("objects ")]
    assert "chosen on the validation split (score " in line


def test_a_core_run_seeds_from_the_core_class_and_says_so(tmp_path, capsys):
    data = blob_folder(tmp_path / "data")
    keys = 'instance_target = "core"\nboundary_width = 1\nval_fraction = 0.34'
    run = train_run(tmp_path, data, epochs=1, data_keys=keys)
    checkpoint = load_checkpoint(run / "best.pt")
    assert checkpoint.class_names == ("background", "interior", "boundary", "core")
    assert checkpoint.instances["interior_class"] == 3
    # What info, predict and evaluate print names the seed class.
    from pixelwise.cli.checkpoint import _instances_text

    watershed = {**checkpoint.instances, "method": "watershed", "seeds": "hmaxima", "h": 2.0}
    text = _instances_text(watershed, checkpoint.class_names)
    assert "seeds: h-maxima of the core class's regions, h = 2" in text
    assert "interior class" in _instances_text(watershed)  # no names: the generic word


def test_predict_instances_writes_labels_that_read_back_exactly(tmp_path, capsys):
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import instance_settings, read_image_file
    from pixelwise.inference.optimize import optimize_for_inference
    from pixelwise.inference.predict import objects_of
    from pixelwise.inference.tiling import predict as predict_tiled

    data = blob_folder(tmp_path / "data", count=4)
    run = train_run(tmp_path, data, epochs=1, data_keys="val_fraction = 0.25")
    out = tmp_path / "out"
    argv = ["predict", str(run / "best.pt"), str(data / "images" / "0.png"), "--out", str(out)]
    assert main([*argv, "--instances"]) == 0
    printed = capsys.readouterr().out
    assert "instances: " in printed and "chosen on the validation split" in printed
    assert "<stem>_instances.png, <stem>_contours.png" in printed
    written = np.asarray(Image.open(out / "0_instances.png"))
    segmenter = load_model(run / "best.pt")  # optimised as predict does: the same logits
    segmenter = segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))
    image = read_image_file(data / "images" / "0.png", 1)
    logits = predict_tiled(segmenter, image, tile=512)
    expected = objects_of(logits, instance_settings(segmenter))
    np.testing.assert_array_equal(written.astype(np.int64), expected.astype(np.int64))
    contours = np.asarray(Image.open(out / "0_contours.png"))
    assert contours.shape == (48, 48, 3)


def test_evaluate_instances_scores_objects_against_the_label_files(tmp_path, capsys):
    import json

    data = blob_folder(tmp_path / "data", count=4)
    run = train_run(tmp_path, data, epochs=1, data_keys="val_fraction = 0.25")
    capsys.readouterr()
    argv = ["evaluate", str(run / "best.pt"), str(data), "--split", "all", "--instances"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == 4 and result["objects"] == 12  # three discs an image
    assert result["touching_pairs"] == 4  # the first two discs touch in every image
    assert 0 <= result["dsb_score"] <= 1 and len(result["per_image"]) == 4
    # Against a per-image loop: the mean of the per-image scores.
    per_image = [r["dsb_score"] for r in result["per_image"]]
    assert result["dsb_score"] == sum(per_image) / 4
    assert result["settings"]["method"] in ("components", "watershed")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Data Science Bowl score" in printed and "touching pairs kept apart" in printed


def test_a_damaged_interior_class_is_one_line_not_an_index_error():
    import torch

    from pixelwise.inference.predict import objects_of
    from pixelwise.instances import InstanceParameters

    logits = torch.zeros(3, 8, 8)
    settings = {**InstanceParameters().to_dict(), "interior_class": 7}
    with pytest.raises(ValueError, match=r"interior_class must be an index below .* 3 maps"):
        objects_of(logits, settings)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, ()),
        ({"hflip": True}, ("identity", "hflip")),
        ({"hflip": True, "vflip": True}, ("identity", "hflip", "vflip", "rot180")),
        ({"rot90": True}, ("identity", "rot90", "rot180", "rot270")),
        ({"rot90": True, "vflip": True}, "all"),
        ({"hflip": True, "vflip": True, "rot90": True}, "all"),
    ],
)
def test_test_time_transforms_are_the_symmetries_the_run_trained_with(flags, expected):
    from pixelwise.engine.instances import test_time_transforms
    from pixelwise.inference.tta import DIHEDRAL

    assert test_time_transforms(flags) == (DIHEDRAL if expected == "all" else expected)


@pytest.mark.parametrize(("gain", "recorded"), [(0.01, True), (0.004, False), (-0.05, False)])
def test_test_time_augmentation_is_recorded_only_when_it_pays(
    tmp_path, monkeypatch, gain, recorded
):
    from pixelwise.engine import instances as chooser
    from pixelwise.instances import InstanceParameters

    data = blob_folder(tmp_path / "data", count=4)
    run = train_run(tmp_path, data, epochs=1, data_keys="val_fraction = 0.25\nhflip = true")

    def probabilities(segmenter, dataset, tta=()):
        return ["averaged" if tta else "plain"], [None], None

    def choose(probabilities, targets, interior_class=None, grid=None):
        averaged = probabilities == ["averaged"]
        return InstanceParameters(threshold=0.3 if averaged else 0.5), 0.5 + gain * averaged

    monkeypatch.setattr(chooser, "validation_probabilities", probabilities)
    monkeypatch.setattr(chooser, "choose_parameters", choose)
    fields = chooser.choose_instances(run / "best.pt", dataset=None)
    if recorded:
        assert fields["tta"] == ["identity", "hflip"] and fields["threshold"] == 0.3
        assert fields["score"] == 0.5 + gain
        # what a prediction that turns the augmentation off uses
        assert fields["one_pass"]["threshold"] == 0.5 and fields["one_pass"]["score"] == 0.5
    else:
        assert fields["tta"] is False and fields["threshold"] == 0.5 and fields["score"] == 0.5
        assert "one_pass" not in fields


def test_checkpoints_with_the_same_weights_are_searched_once(tmp_path, monkeypatch):
    from pixelwise.engine import instances as chooser

    data = blob_folder(tmp_path / "data", count=4)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = train_run(tmp_path / "one", data, epochs=1, data_keys="val_fraction = 0.25")
    two = train_run(tmp_path / "two", data, epochs=2, data_keys="val_fraction = 0.25")
    # One epoch: best.pt is last.pt's weights. Two runs from the same seed part after the
    # first epoch.
    assert chooser.weights_digest(one / "best.pt") == chooser.weights_digest(one / "last.pt")
    assert chooser.weights_digest(one / "last.pt") != chooser.weights_digest(two / "last.pt")
    searched = []

    def choose(path, dataset, device="cpu"):
        searched.append(path.name)
        return {"method": "components", "threshold": 0.1 * len(searched), "score": 0.5}

    monkeypatch.setattr(chooser, "choose_instances", choose)
    paths = [one / "best.pt", one / "last.pt"]
    recorded = chooser.record_chosen_instances(paths, dataset=None)
    assert searched == ["best.pt"] and recorded["best.pt"] == recorded["last.pt"]
    assert load_checkpoint(one / "last.pt").instances["threshold"] == 0.1
    chooser.record_chosen_instances([one / "last.pt", two / "last.pt"], dataset=None)
    assert searched == ["best.pt", "last.pt", "last.pt"]  # different weights: two searches
    assert load_checkpoint(two / "last.pt").instances["threshold"] == pytest.approx(0.3)


def test_predict_instances_uses_the_recorded_test_time_augmentation(tmp_path, capsys):
    from pixelwise.engine.checkpoint import load_model, record_instances
    from pixelwise.inference import read_image_file
    from pixelwise.inference.optimize import optimize_for_inference
    from pixelwise.inference.predict import objects_of
    from pixelwise.inference.tiling import predict as predict_tiled

    data = blob_folder(tmp_path / "data", count=4)
    run = train_run(tmp_path, data, epochs=1, data_keys="val_fraction = 0.25\nhflip = true")
    checkpoint = run / "best.pt"
    recorded = {**load_checkpoint(checkpoint).instances, "tta": ["identity", "hflip"]}
    recorded.update(method="components", threshold=0.5, min_size=0)
    recorded["one_pass"] = {"method": "components", "threshold": 0.7, "min_size": 0, "score": 0}
    record_instances(checkpoint, recorded)
    segmenter = load_model(checkpoint)
    segmenter = segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))
    image = read_image_file(data / "images" / "0.png", 1)
    cases = {  # flag: (transforms, threshold, printed)
        (): (("identity", "hflip"), 0.5, "mean of 2 flipped or rotated copies"),
        ("--no-tta",): (False, 0.7, None),  # the one-pass search's parameters
        ("--tta",): (True, 0.5, "mean of 8 flipped or rotated copies"),
    }
    for extra, (tta, threshold, shown) in cases.items():
        out = tmp_path / f"out{extra}"
        argv = ["predict", str(checkpoint), str(data / "images" / "0.png"), "--out", str(out)]
        assert main([*argv, "--instances", *extra]) == 0
        printed = capsys.readouterr().out
        assert f"threshold {threshold:g}" in printed
        assert ("mean of" in printed) == (shown is not None)
        assert shown is None or shown in printed
        logits = predict_tiled(segmenter, image, tile=512, tta=tta)
        settings = {"method": "components", "threshold": threshold, "min_size": 0}
        expected = objects_of(logits, settings)
        written = np.asarray(Image.open(out / "0_instances.png")).astype(np.int64)
        np.testing.assert_array_equal(written, expected.astype(np.int64))
    # evaluate --instances predicts the same way, and says what it used
    argv = ["evaluate", str(checkpoint), str(data), "--split", "all", "--instances", "--json"]
    for extra, (tta, threshold, _) in cases.items():
        assert main([*argv, *extra]) == 0
        used = json.loads(capsys.readouterr().out)["settings"]
        assert used["threshold"] == threshold and "one_pass" not in used
        assert used["tta"] == (list(DIHEDRAL) if tta is True else list(tta) if tta else False)


def test_a_damaged_tta_record_and_a_misplaced_flag_are_one_line(tmp_path, capsys):
    from pixelwise.engine.checkpoint import record_instances

    data = blob_folder(tmp_path / "data", count=4)
    run = train_run(tmp_path, data, epochs=1, data_keys="val_fraction = 0.25")
    checkpoint = run / "best.pt"
    record_instances(checkpoint, {**load_checkpoint(checkpoint).instances, "tta": ["flip"]})
    capsys.readouterr()
    argv = ["predict", str(checkpoint), str(data / "images"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--instances"]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("pixelwise: error: the recorded instances.tta must be false or a list")
    assert "got ['flip']" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    assert main(["evaluate", str(checkpoint), str(data), "--tta"]) != 0
    error = capsys.readouterr().err.strip()
    assert error == (
        "pixelwise: error: --tta goes with --instances: the per-pixel scores come from one pass"
    )
