"""``pixelwise bakeoff``: several models, one data folder, split and budget, one table."""

from __future__ import annotations

import json

import pytest

from pixelwise.cli import main
from pixelwise.plan.bakeoff import check_models
from user_data import user_folder


def test_models_are_checked_all_at_once():
    with pytest.raises(ValueError) as info:
        check_models(["unet", "segnet_basik", "nonsense"])
    text = str(info.value)
    assert text.startswith("--models must name registered models, each once, from deeplabv3, ")
    assert text.endswith(
        "got unet, segnet_basik, nonsense; segnet_basik: did you mean 'segnet_basic'?; "
        "nonsense: did you mean 'segnet'?"
    )
    with pytest.raises(ValueError, match="each once"):
        check_models(["unet", "unet"])
    assert check_models(["fcn8s", "unet"]) == ["fcn8s", "unet"]


def test_every_bad_option_is_said_in_one_line(tmp_path, capsys):
    data = user_folder(tmp_path / "data", count=2)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("the user's")
    argv = ["bakeoff", str(data), "--models", "unet,segnet_basik", "--minutes", "0"]
    assert main([*argv, "--jobs", "0", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for part in (
        "--models must name registered models",
        "segnet_basik: did you mean 'segnet_basic'?",
        "--minutes must be a positive number of minutes, got 0.0",
        "--jobs must be >= 1, got 0",
        f"--out {taken} must be a new or empty folder",
    ):
        assert part in err
    assert (taken / "keep.txt").read_text() == "the user's"


def test_a_bakeoff_trains_each_model_on_the_same_split_and_scores_them(tmp_path, capsys):
    data = user_folder(tmp_path / "data", count=8)
    out = tmp_path / "out"
    argv = ["bakeoff", str(data), "--minutes", "0.02", "--models", "unet,segnet_basic"]
    assert main([*argv, "--jobs", "2", "--out", str(out), "--set", "train.overlays=0"]) == 0
    printed = capsys.readouterr().out
    assert "model         mean IoU  boundary F1" in printed
    report = json.loads((out / "bakeoff.json").read_text())
    assert list(report["models"]) == ["unet", "segnet_basic"] and report["jobs"] == 2
    for model, entry in report["models"].items():
        assert 0 <= entry["mean_iou"] <= 1 and entry["parameters"] > 0
        assert set(entry["class_iou"]) == {"class_0", "class_1"}
        assert entry["iterations"] >= 1 and entry["run_dir"].startswith(str(out / "runs" / model))
        assert (out / "plans" / f"{model}.toml").is_file()
    plans = [(out / "plans" / f"{m}.toml").read_text() for m in ("unet", "segnet_basic")]
    split = [
        [line for line in p.splitlines() if line.startswith(("val_fraction", "seed"))]
        for p in plans
    ]
    assert split[0] == split[1]  # one split for all
    assert (out / "curves.png").stat().st_size > 0
    # The folder is never reused.
    assert main([*argv, "--out", str(out)]) == 2
    assert "must be a new or empty folder" in capsys.readouterr().err
