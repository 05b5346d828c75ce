"""``pixelwise train``: a tiny run end to end, resume, one-line errors, --nproc."""

from __future__ import annotations

import csv
import re
import sys

import pytest

from pixelwise.cli import main
from pixelwise.engine import distributed

TINY = [
    "model.options={depth=2, base_width=4}",
    "data.num_train=8",
    "data.num_val=4",
    "data.image_size=48",
    "train.batch_size=4",
    "train.epochs=2",
    "train.device=cpu",
    "train.overlays=1",
]


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_train_writes_a_run_folder_and_reports_it(tmp_path, capsys):
    assert main(["train", *sets(*TINY), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    (run,) = tmp_path.iterdir()
    assert out[0] == f"run folder: {run}"
    assert out[1].startswith("validation mean IoU 0.") and "after epoch 2" in out[1]
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.csv", "best.pt", "last.pt", "loss.png", "miou.png"} <= names
    assert {"best.safetensors", "last.safetensors", "overlays"} <= names


def test_a_time_budget_run_reports_iterations_not_epoch_zero(tmp_path, capsys):
    argv = ["train", *sets(*TINY, "train.time_limit_minutes=1e-6"), "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    line = capsys.readouterr().out.splitlines()[1]
    # The minutes it stopped at depend on the machine's load; the words do not.
    pattern = r"after 1 iterations \(0 full epochs; stopped by the time budget at \d+\.\d min\)"
    assert re.search(pattern, line), line


def test_progress_bars_keep_the_last_validation_and_drop_the_eta_under_a_budget():
    from pixelwise.cli import _TrainBars

    bars = _TrainBars()
    bars.run_start({"epochs": 100000, "start_epoch": 0, "time_limit_minutes": 60})
    assert bars.epochs.total is None and bars.epochs.desc == "train (60 min budget)"
    for epoch, miou in enumerate((0.5, float("nan"))):
        bars.epoch_start(epoch + 1, 100000, 1)
        bars.epoch_end(epoch + 1, 100000, {"train_loss": 0.25, "mean_iou": miou})
        assert bars.epochs.postfix == "loss=0.2500, val_mIoU=0.5000"
    bars.close()


def test_config_file_then_resume_in_a_new_folder(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        "[model]\noptions = { depth = 2, base_width = 4 }\n"
        "[data]\nnum_train = 8\nnum_val = 4\nimage_size = 48\n"
        '[train]\nbatch_size = 4\nepochs = 1\ndevice = "cpu"\noverlays = 0\n'
    )
    out = tmp_path / "runs"
    assert main(["train", str(config), "--out-dir", str(out)]) == 0
    (first,) = out.iterdir()
    # Without a config file, --resume continues with the checkpoint's own config.
    code = main(
        [
            "train",
            "--resume",
            str(first / "last.pt"),
            *sets("train.epochs=2"),
            "--out-dir",
            str(out),
        ]
    )
    assert code == 0
    second = next(p for p in out.iterdir() if p != first)
    with (second / "metrics.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    assert "after epoch 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "pieces"),
    [
        (["train", "--set", "train.epcohs=3"], ["key of [train]", "did you mean 'epochs'?"]),
        (["train", "--set", "optim.lr=0"], ["optim.lr (--set) must be a finite number > 0.0"]),
        (["train", "missing.toml"], ["config file missing.toml must exist"]),
        (["train", "--resume", "missing.pt"], ["checkpoint missing.pt must be an existing file"]),
    ],
)
def test_errors_are_one_line(argv, pieces, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pixelwise: error: ")
    for piece in pieces:
        assert piece in err


def test_encoding_errors_show_the_one_spelling(tmp_path, capsys):
    folder = ["data.layout=folders", f"data.root={tmp_path}"]
    assert main(["train", *sets(*folder, "data.encoding=values")]) == 2
    assert capsys.readouterr().err == (
        "pixelwise: error: data.encoding (--set) must be a table (a TOML inline table or "
        'JSON), got \'values\'; e.g. { kind = "values", value_map = { "0" = 0, "255" = 1 } }\n'
    )
    assert main(["train", *sets(*folder)]) == 2
    assert capsys.readouterr().err == (
        "pixelwise: error: the mask encoding of layout 'folders' must be declared, got nothing; "
        'e.g. encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }\n'
    )


def test_nproc_relaunches_under_torchrun(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(
        distributed.subprocess, "call", lambda command, **kwargs: calls.append(command) or 0
    )
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "run.toml"
    config.write_text("[train]\nepochs = 3\n")
    # The config is checked before any process starts.
    assert main(["train", str(config), "--set", "train.epcohs=1", "--nproc", "2"]) == 2
    assert calls == [] and "did you mean 'epochs'?" in capsys.readouterr().err
    argv = ["train", str(config), "--set", "train.epochs=1", "--nproc", "2"]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 0
    (command,) = calls
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
    ]
    assert command[5:] == [
        "-m",
        "pixelwise.cli",
        "train",
        str(config),
        "--set",
        "train.epochs=1",
        "--out-dir",
        str(tmp_path),
    ]


def test_an_interrupted_run_ends_with_the_resume_command(capsys):
    from pathlib import Path

    from pixelwise.cli.train import _print_result
    from pixelwise.engine.events import FitResult

    run = Path("runs/20261201-120000")
    result = FitResult(
        run_dir=run,
        epochs=0,
        metric="mean_iou",
        best_value=0.5,
        best_epoch=1,
        metrics={"mean_iou": 0.5},
        history=[],
        best_path=run / "best.pt",
        last_path=run / "last.pt",
        stopped_by="interrupted",
        iterations=3,
    )
    _print_result(result)
    assert capsys.readouterr().out.splitlines() == [
        f"run folder: {run}",
        "validation mean IoU 0.5000 after 3 iterations (stopped by Ctrl-C) "
        "(best mean_iou 0.5000 at epoch 1: best.pt)",
        f"resume with: pixelwise train --resume {run / 'last.pt'}",
    ]
