"""``pixelwise.fit`` with a user's own network and data; one evaluation path for training and
``pixelwise evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pixelwise
from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.engine.trainer import Trainer
from two_blobs import TwoBlobs


class TinyNet(nn.Module):
    """A user's network: not in the registry, no pixelwise attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_user_network_trains_and_its_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    result = pixelwise.fit(
        net,
        TwoBlobs(16, seed=1),
        TwoBlobs(4, seed=2),
        epochs=4,
        batch_size=4,
        lr=1e-2,
        device="cpu",
        out_dir=tmp_path / "runs",
        overlays=1,
    )
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert {"best.pt", "last.pt", "metrics.csv", "loss.png", "overlays"} <= {
        p.name for p in result.run_dir.iterdir()
    }
    checkpoint = load_checkpoint(result.last_path)
    assert checkpoint.class_names == ("background", "square")  # from the data set
    assert checkpoint.num_classes == 2 and checkpoint.epoch == 4
    for key, value in net.state_dict().items():
        assert torch.equal(checkpoint.state_dict[key], value), key
    segmenter = load_model(result.last_path, network=TinyNet())
    image = TwoBlobs(1, seed=3)[0]["image"]
    expected = net(segmenter.normalize(image[None]))
    assert torch.allclose(segmenter(image[None]), expected, atol=1e-6)
    assert math.isclose(checkpoint.metrics["mean_iou"], result.metrics["mean_iou"])


def test_a_user_network_is_refused_by_load_model_without_the_module(tmp_path):
    result = pixelwise.fit(
        TinyNet(), TwoBlobs(4, seed=1), epochs=1, device="cpu", out_dir=tmp_path, overlays=0
    )
    with pytest.raises(ValueError, match="must be registered to be rebuilt") as info:
        load_model(result.last_path)
    assert "\n" not in str(info.value)


def test_info_describes_a_user_network_checkpoint(tmp_path, capsys):
    result = pixelwise.fit(
        TinyNet(), TwoBlobs(4, seed=1), epochs=1, device="cpu", out_dir=tmp_path, overlays=0
    )
    assert main(["info", str(result.last_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[1:] == [f"{__name__}.TinyNet", "(not", "in", "the", "registry)"]
    weights = sum(p.numel() for p in TinyNet().parameters())
    assert f"parameters     {weights:,} (in the saved weights)" in lines
    assert "classes        2: background, square" in lines


class Stop(Exception):
    """Stands for the run being killed after an epoch's checkpoint."""


def test_fit_resumes_a_user_network_exactly(tmp_path):
    def run(resume=None, callbacks=None):
        torch.manual_seed(0)
        return pixelwise.fit(
            TinyNet(),
            TwoBlobs(8, seed=1),
            TwoBlobs(2, seed=2),
            epochs=3,
            batch_size=4,
            deterministic=True,
            device="cpu",
            out_dir=tmp_path / "runs",
            overlays=0,
            resume=resume,
            callbacks=callbacks,
        )

    def stop_after_two(event, info):
        if event == "epoch_end" and info["args"][0] == 2:
            raise Stop

    whole = run()
    with pytest.raises(Stop):
        run(callbacks=stop_after_two)
    killed = max(p for p in (tmp_path / "runs").iterdir() if p != whole.run_dir)
    resumed = run(resume=killed / "last.pt")
    a, b = load_checkpoint(whole.last_path), load_checkpoint(resumed.last_path)
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]


def test_fit_without_validation_data_keeps_the_last_checkpoint(tmp_path):
    result = pixelwise.fit(
        TinyNet(), TwoBlobs(4, seed=1), epochs=2, device="cpu", out_dir=tmp_path, overlays=0
    )
    assert load_checkpoint(result.best_path).epoch == 2
    assert math.isnan(result.history[0]["mean_iou"])


def test_fit_reads_num_classes_off_the_model_and_takes_a_loss_callable(tmp_path):
    calls = []

    def loss(logits, target):
        calls.append(logits.shape)
        return nn.functional.cross_entropy(logits, target)

    result = pixelwise.fit(
        TinyNet(),
        TwoBlobs(4, seed=1),
        TwoBlobs(2, seed=2),
        epochs=1,
        batch_size=4,
        loss=loss,
        device="cpu",
        out_dir=tmp_path,
        overlays=0,
    )
    assert calls[0] == (4, 2, 24, 24)
    assert set(result.metrics["classes"]) == {"background", "square"}


def test_fit_names_every_problem_of_the_samples(tmp_path):
    bad = [{"image": torch.zeros(24, 24), "mask": torch.zeros(24, 24)}]
    with pytest.raises(ValueError) as info:
        pixelwise.fit(TinyNet(), bad, device="cpu", out_dir=tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert "train_data[0] 'image' must be a float tensor (C, H, W), got (24, 24)" in text
    assert "train_data[0] 'mask' must be an int64 tensor (H, W), got torch.float32" in text
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        pixelwise.fit("unet", TwoBlobs(2, seed=0), out_dir=tmp_path)


def test_fit_callbacks_see_every_event(tmp_path):
    events = []

    class Recorder(pixelwise.Progress):
        def run_start(self, info):
            events.append(("start", info["model"], info["train_size"], info["val_size"]))

        def epoch_end(self, epoch, epochs, row):
            events.append(("epoch", epoch))

    pixelwise.fit(
        TinyNet(),
        TwoBlobs(4, seed=1),
        TwoBlobs(2, seed=2),
        epochs=2,
        batch_size=4,
        device="cpu",
        out_dir=tmp_path,
        overlays=0,
        callbacks=[Recorder(), lambda event, info: events.append(event)],
    )
    assert events[:2] == [("start", "TinyNet", 4, 2), "run_start"]
    assert [e for e in events if isinstance(e, tuple) and e[0] == "epoch"] == [
        ("epoch", 1),
        ("epoch", 2),
    ]


def _write_folder(root: Path, count: int = 6, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(0, size - 16, 2)
        mask[top : top + 16, left : left + 16] = 1
        image = (255 * (0.2 + 0.6 * mask + 0.1 * rng.random((size, size)))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


def test_validation_of_a_valid_padding_unet_equals_pixelwise_evaluate(tmp_path, capsys):
    root = _write_folder(tmp_path / "data")
    config = load_config(
        None,
        [
            "data.layout=folders",
            f"data.root={root}",
            "data.encoding={kind='index', num_classes=2}",
            "data.val_fraction=0.5",
            "data.crop_size=44",
            "model.options={depth=2, base_width=4, padding='valid'}",
            "loss.name=ce",
            "train.epochs=2",
            "train.batch_size=3",
            "train.device=cpu",
            "train.overlays=0",
            f"train.out_dir={tmp_path / 'runs'}",
        ],
    )
    with Trainer(config) as trainer:
        result = trainer.fit()
    recorded = load_checkpoint(result.last_path).metrics
    assert sum(map(sum, recorded["confusion_matrix"])) == 3 * 48 * 48  # every pixel scored
    assert main(["evaluate", str(result.last_path), str(root), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_images"] == 3
    assert evaluated["mean_iou"] == pytest.approx(recorded["mean_iou"], abs=1e-12)
    assert evaluated["pixel_accuracy"] == pytest.approx(recorded["pixel_accuracy"], abs=1e-12)


def test_a_bad_file_in_either_split_stops_the_run_before_it_starts(tmp_path):
    root = _write_folder(tmp_path / "data")
    (root / "images" / "01.png").write_bytes(b"")  # 0 bytes
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(root / "masks" / "05.png")
    overrides = [
        "data.layout=folders",
        f"data.root={root}",
        "data.encoding={kind='index', num_classes=2}",
        "data.val_fraction=0.5",
        "data.shuffle_split=false",
        f"train.out_dir={tmp_path / 'runs'}",
        "train.device=cpu",
    ]
    with pytest.raises(ValueError) as info:
        Trainer(load_config(None, overrides))
    lines = str(info.value).splitlines()
    assert lines[0] == "2 problems in the data:"
    assert str(root / "images" / "01.png") in lines[1]
    assert str(root / "masks" / "05.png") in lines[2]
    assert not (tmp_path / "runs").exists()  # no run folder with only a config in it
