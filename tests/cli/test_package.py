"""The command line as a package: start-up without torch, progress on terminals and in logs,
and the data rules it takes from ``pixelwise.data.build``."""

from __future__ import annotations

import datetime
import io
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from pixelwise.cli import build_parser, main
from pixelwise.cli.train import _Budget, _TrainBars, _TrainLines, start_lines

INFO = {
    "run_dir": "runs/unet-1",
    "model": "unet",
    "parameters": 1234567,
    "train_size": 64,
    "val_size": 16,
    "epochs": 100000,
    "start_epoch": 0,
    "batches": 16,
    "device": "cpu",
    "world_size": 1,
    "time_limit_minutes": 60,
    "minutes_done": 0.0,
}


def test_building_the_parser_imports_no_torch():
    code = (
        "import sys, pixelwise.cli; pixelwise.cli.build_parser(); assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    version = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pixelwise.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules",
        ],
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0 and version.stdout == "pixelwise 0.1.0\n", version.stderr


def test_every_command_is_registered_once():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == [
        "models",
        "shapes",
        "weightmap",
        "evaluate",
        "predict",
        "info",
        "export",
        "check-data",
        "plan",
        "bakeoff",
        "train",
        "stylize",
        "serve",
    ]


def test_an_unknown_layout_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check-data", "somewhere", "--layout", "synthetic"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --layout: invalid choice: 'synthetic'" in err
    assert "'folders', 'camvid', 'instances', 'tiff'" in err


# --- training progress ---------------------------------------------------------------------


def test_the_start_lines_say_folder_model_data_device_and_budget():
    assert start_lines(INFO) == [
        "run folder: runs/unet-1",
        "model: unet (1,234,567 parameters)",
        "data: 64 training, 16 validation samples, 16 batches per epoch",
        "device: cpu",
        "budget: 60 min",
    ]
    epochs = {**INFO, "time_limit_minutes": 0, "epochs": 5, "start_epoch": 2, "world_size": 2}
    assert start_lines(epochs)[-2:] == [
        "device: cpu × 2 processes",
        "budget: 5 epochs, from epoch 3",
    ]
    # Keys an older engine does not send are left out, not guessed.
    old = {"run_dir": "r", "epochs": 2, "start_epoch": 0, "time_limit_minutes": None}
    assert start_lines(old) == ["run folder: r", "budget: 2 epochs"]
    resumed = {**INFO, "minutes_done": 12.5}
    assert start_lines(resumed)[-1] == "budget: 60 min (12.5 min done before the resume)"


def test_the_budget_counts_minutes_left_and_the_end_time():
    budget = _Budget(INFO)
    assert budget and not _Budget({"time_limit_minutes": 0})
    assert budget.left({"minutes": 17.5}) == 42.5 and budget.left({"minutes": 75.0}) == 0.0
    text = budget.text({"minutes": 17.5})
    ends = datetime.datetime.now() + datetime.timedelta(minutes=42.5)
    assert text.startswith("60 min budget, 42.5 min left, ends ")
    assert text[-5:] in {f"{ends:%H:%M}", f"{ends - datetime.timedelta(minutes=1):%H:%M}"}
    started = _Budget({**INFO, "minutes_done": 10.0})
    started.started = time.monotonic() - 60  # one minute into this run
    assert started.left() == pytest.approx(49.0, abs=0.01)


def test_plain_lines_one_per_validation_without_escape_codes():
    stream = io.StringIO()
    lines = _TrainLines(stream)
    lines.run_start(INFO)
    for epoch, miou in ((1, 0.5), (2, float("nan")), (3, 0.625)):
        lines.epoch_start(epoch, 100000, 16)
        lines.batch_end(epoch, 0, 16, 0.3, 10.0)
        lines.epoch_end(
            epoch, 100000, {"train_loss": 0.25, "mean_iou": miou, "minutes": 2.0 * epoch}
        )
    lines.run_end(SimpleNamespace(minutes=6.0))
    out = stream.getvalue().splitlines()
    assert out[:5] == start_lines(INFO)
    assert out[5].startswith(
        "epoch 1: train loss 0.2500, val mIoU 0.5000, 2.0 min (60 min budget, 58.0 min left, ends "
    )
    assert out[6].startswith(
        "epoch 3: train loss 0.2500, val mIoU 0.6250, 6.0 min (60 min budget, 54.0 min left"
    )
    assert out[7] == "training done after 6.0 min" and len(out) == 8
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert "100000" not in stream.getvalue()
    epochs = _TrainLines(stream := io.StringIO())
    epochs.run_start({**INFO, "time_limit_minutes": 0, "epochs": 4})
    epochs.epoch_end(1, 4, {"train_loss": 0.5, "mean_iou": 0.25})
    assert stream.getvalue().splitlines()[-1] == "epoch 1/4: train loss 0.5000, val mIoU 0.2500"


def test_bars_under_a_budget_show_minutes_left_not_an_epoch_count(capsys):
    bars = _TrainBars()
    bars.run_start(INFO)
    assert capsys.readouterr().err.splitlines()[:5] == start_lines(INFO)
    bars.epoch_start(2, 100000, 16)
    assert bars.batches.desc == "epoch 2"
    bars.epoch_end(2, 100000, {"train_loss": 0.25, "mean_iou": 0.5, "minutes": 30.0})
    assert bars.epochs.desc.startswith("train (60 min budget, 30.0 min left, ends ")
    bars.close()
    bars = _TrainBars()
    bars.run_start({**INFO, "time_limit_minutes": 0, "epochs": 4})
    bars.epoch_start(2, 4, 16)
    assert bars.batches.desc == "epoch 2/4" and bars.epochs.total == 4
    bars.close()


def test_train_in_a_log_prints_plain_lines_before_and_during_training(tmp_path):
    argv = [
        sys.executable, "-m", "pixelwise", "train", "--out-dir", str(tmp_path),
        "--set", "model.options={depth=2, base_width=4}", "--set", "data.num_train=4",
        "--set", "data.num_val=2", "--set", "data.image_size=32", "--set", "train.batch_size=2",
        "--set", "train.epochs=2", "--set", "train.device=cpu", "--set", "train.overlays=0",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    err = result.stderr.splitlines()
    assert err[0] == f"run folder: {run}"
    assert "budget: 2 epochs" in err
    assert sum(line.startswith("epoch ") for line in err) == 2
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert result.stdout.splitlines()[0] == f"run folder: {run}"
