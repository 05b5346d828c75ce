"""``pixelwise plan DATA`` and ``pixelwise train DATA --minutes M`` on a folder shaped like
users' data: JPEG images, 0/255 PNG masks."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from PIL import Image

from pixelwise import load_checkpoint
from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.data import MaskEncoding
from user_data import user_folder


def test_plan_writes_a_commented_config_that_trains(tmp_path, capsys):
    data = user_folder(tmp_path / "data")
    out = tmp_path / "plan.toml"
    assert main(["plan", str(data), "--minutes", "2", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "masks: mask values {0, 255}: binary" in printed.out
    assert "<- chosen" in printed.out and f"wrote {out}" in printed.out
    # 6 images: 1 validates, too few to trust.
    assert "warning: the validation split has 1 of 6 images (32×32)" in printed.err
    text = out.read_text()
    table = tomllib.loads(text)
    assert table["data"]["root"] == "data" and table["train"]["time_limit_minutes"] == 2.0
    config = load_config(out)
    assert config.data.root == str(data)
    assert MaskEncoding.from_config(config.data.encoding) == MaskEncoding.values({0: 0, 255: 1})
    assert config.data.crop_size is None  # one small size: whole images
    assert "  # mask values {0, 255}: binary" in text
    # An existing plan is not replaced without --overwrite.
    assert main(["plan", str(data), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_plan_refuses_masks_whose_encoding_cannot_be_told(tmp_path, capsys):
    data = user_folder(tmp_path / "data", count=2)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 200, (32, 32), dtype=np.uint8)  # a probability map, not classes
    Image.fromarray(noisy).save(data / "masks" / "photo 0.png")
    code = main(["plan", str(data), "--out", str(tmp_path / "p.toml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        f"pixelwise: error: the mask encoding of {data} cannot be told: mask values ["
    )
    assert err.rstrip().endswith("declare data.encoding in a run config")
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize("minutes", ["0", "-1", "inf", "nan"])
def test_plan_refuses_a_budget_that_is_no_budget(tmp_path, capsys, minutes):
    data = user_folder(tmp_path / "data", count=2)
    assert main(["plan", str(data), "--minutes", minutes, "--out", str(tmp_path / "p.toml")]) == 2
    assert "--minutes must be a positive number of minutes" in capsys.readouterr().err


def test_train_a_data_folder_plans_then_trains_and_keeps_the_plan(tmp_path, capsys):
    data = user_folder(tmp_path / "data")
    argv = ["train", str(data), "--minutes", "0.02", "--out-dir", str(tmp_path / "runs")]
    assert main([*argv, "--set", "train.overlays=0", "--set", "train.device=cpu"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    plan = (run / "plan.toml").read_text()
    assert plan.startswith("# Planned by pixelwise plan for 0.02 minutes on this machine.")
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint.config["train"]["time_limit_minutes"] == 0.02
    assert checkpoint.config["train"]["overlays"] == 0  # --set applies over the plan
    encoding = MaskEncoding.from_config(checkpoint.config["data"]["encoding"])
    assert encoding == MaskEncoding.values({0: 0, 255: 1})
    assert "run folder:" in capsys.readouterr().out


def test_minutes_bounds_a_config_run_too(tmp_path):
    argv = ["train", "--minutes", "0.001", "--set", "train.epochs=50", "--set", "train.overlays=0"]
    assert main([*argv, "--out-dir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint.config["train"]["time_limit_minutes"] == 0.001
    assert checkpoint.epoch < 50
    assert not (run / "plan.toml").exists()
