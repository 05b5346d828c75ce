"""The trainer on tiny runs: the loss falls, the run folder is complete, resume is exact."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.config import load_config
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.engine.loaders import collate_groups, single_group
from pixelwise.engine.recipe import image_statistics
from pixelwise.engine.saver import CheckpointSaver
from pixelwise.engine.schedule import schedule_factor
from pixelwise.engine.task import center_crop
from pixelwise.engine.trainer import Trainer
from pixelwise.metrics import ConfusionMatrix
from stop_after import interrupted_and_resumed


def test_loss_falls_and_the_run_folder_is_complete(tiny_config):
    config = tiny_config("train.epochs=3")
    with Trainer(config) as trainer:
        result = trainer.fit()
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    run = result.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.csv", "best.pt", "last.pt", "loss.png", "miou.png"} <= names
    assert {"best.safetensors", "last.safetensors", "overlays"} <= names
    assert load_config(run / "config.toml") == config
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "mean_iou", "iou_nucleus", "dice_background"} <= rows[
        0
    ].keys()
    for png in ("loss.png", "miou.png"):
        assert Image.open(run / png).size[0] > 100
    overlays = sorted((run / "overlays").iterdir())
    assert len(overlays) == 2
    width, height = Image.open(overlays[0]).size
    assert width == 3 * 192 + 2 * 4  # 4× image | truth | prediction
    assert height > 192  # panel titles and the class legend
    last = load_checkpoint(run / "last.pt")
    assert last.epoch == 3 and last.training is not None
    assert math.isclose(last.metrics["mean_iou"], result.metrics["mean_iou"])
    assert load_checkpoint(run / "best.pt").epoch == result.best_epoch


def test_checkpoint_predicts_what_validation_measured(tiny_config):
    with Trainer(tiny_config()) as trainer:
        result = trainer.fit()
        segmenter, checkpoint = load_model(result.last_path), load_checkpoint(result.last_path)
        matrix = ConfusionMatrix(2)
        for index in range(len(trainer.val_set)):
            batch = collate_groups([trainer.val_set[index]])[0]
            with torch.no_grad():
                logits = segmenter(batch["image"])  # normalised by the segmenter
            matrix.update(logits, batch["mask"])
    assert checkpoint.normalisation == trainer.normalisation
    assert checkpoint.class_names == ("background", "nucleus")
    # Batch-of-one predictions may differ from batched ones in the last float bits.
    counted = torch.tensor(checkpoint.metrics["confusion_matrix"])
    assert int(counted.sum()) == int(matrix.matrix.sum()) == 4 * 48 * 48
    assert (counted - matrix.matrix).abs().sum() <= 4


def test_resume_continues_exactly(tiny_config):
    config = tiny_config(
        "train.epochs=3", "train.deterministic=true", "train.overlays=0", "data.elastic_std=2.0"
    )
    uninterrupted, killed, resumed = interrupted_and_resumed(config)
    assert load_checkpoint(killed / "last.pt").epoch == 2
    assert len({uninterrupted.run_dir, killed, resumed.run_dir}) == 3  # never overwritten
    a, b = load_checkpoint(uninterrupted.last_path), load_checkpoint(resumed.last_path)
    assert a.state_dict.keys() == b.state_dict.keys()
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in uninterrupted.history
    ]
    with (resumed.run_dir / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3


def test_resume_needs_more_epochs_and_a_training_state(tiny_config, tmp_path):
    config = tiny_config("train.epochs=1", "train.overlays=0")
    with Trainer(config) as trainer:
        result = trainer.fit()
    with Trainer(config) as trainer, pytest.raises(ValueError, match=r"train\.epochs=11"):
        trainer.fit(resume=result.last_path)
    with (
        Trainer(tiny_config("train.epochs=2")) as trainer,
        pytest.raises(ValueError, match="hold the training state"),
    ):
        trainer.fit(resume=result.last_path.with_suffix(".safetensors"))


def test_valid_padding_unet_trains_on_crops_and_validates_every_pixel(tiny_config):
    # depth 2, valid padding: input 44 → output 4 (the training loss sees the centre 4×4 of
    # each crop); validation mirror-pads the 48×48 images, as pixelwise evaluate does.
    config = tiny_config(
        "model.options={depth=2, base_width=4, padding='valid'}",
        "data.crop_size=44",
        "train.epochs=1",
    )
    with Trainer(config) as trainer:
        result = trainer.fit()
    assert math.isfinite(result.history[0]["train_loss"])
    assert sum(map(sum, result.metrics["confusion_matrix"])) == 4 * 48 * 48


@pytest.mark.parametrize(
    "overrides",
    [
        ("loss.name=ce", "loss.class_weights=median_frequency", "optim.name=sgd"),
        ("loss.name=dice", "schedule.name=cosine", "train.grad_clip=1.0"),
        ("loss.name=ce_dice", "loss.class_weights=inverse_frequency", "schedule.name=none"),
    ],
)
def test_losses_optimizers_and_schedules_train(tiny_config, overrides):
    config = tiny_config(
        "train.epochs=1", "train.overlays=0", "train.channels_last=true", *overrides
    )
    with Trainer(config) as trainer:
        result = trainer.fit()
    assert math.isfinite(result.history[0]["train_loss"])
    assert 0.0 <= result.metrics["mean_iou"] <= 1.0


def test_weighted_ce_needs_weight_maps(tiny_config):
    with pytest.raises(ValueError, match="loss 'weighted_ce' must have weight maps") as info:
        Trainer(tiny_config("data.weights=false"))
    assert "\n" not in str(info.value) and "loss.name = 'ce'" in str(info.value)


def test_progress_events_in_order(tiny_config):
    events = []

    def progress(event, info):
        events.append(event)

    with Trainer(tiny_config("train.overlays=0"), progress=progress) as trainer:
        trainer.fit()
    batch = ["batch_end", "batch_end"]  # 8 images in batches of 4
    epoch = ["epoch_start", *batch, "epoch_end"]
    assert events == ["run_start", *epoch, *epoch, "run_end"]


def test_an_explicit_run_folder_is_never_overwritten(tiny_config, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("keep")
    with (
        Trainer(tiny_config(), run_dir=taken) as trainer,
        pytest.raises(FileExistsError, match="never overwritten"),
    ):
        trainer.fit()
    assert (taken / "keep.txt").read_text() == "keep"


def test_schedules():
    poly, cosine = schedule_factor("poly", 10, 0.9), schedule_factor("cosine", 10, 0.9)
    assert poly(0) == cosine(0) == 1.0
    assert math.isclose(poly(5), 0.5**0.9) and math.isclose(cosine(5), 0.5)
    assert poly(10) == 0.0 and math.isclose(cosine(10), 0.0, abs_tol=1e-12)
    assert schedule_factor("none", 10, 0.9)(7) == 1.0


def test_image_statistics_match_numpy():
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.random((2, 5, 7), dtype=np.float32)) for _ in range(3)]
    stats = image_statistics([{"image": image} for image in images])
    stacked = np.stack([i.numpy() for i in images]).astype(np.float64)  # (3, 2, 5, 7)
    assert np.allclose(stats["mean"], stacked.mean(axis=(0, 2, 3)))
    assert np.allclose(stats["std"], stacked.std(axis=(0, 2, 3)))


def test_collate_groups_by_size_and_center_crop():
    samples = [
        {"image": torch.zeros(1, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.int64), "path": "a"},
        {"image": torch.ones(1, 5, 6), "mask": torch.ones(5, 6, dtype=torch.int64), "path": "b"},
        {"image": torch.zeros(1, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.int64), "path": "c"},
    ]
    groups = collate_groups(samples)
    assert [tuple(g["image"].shape) for g in groups] == [(2, 1, 4, 6), (1, 1, 5, 6)]
    assert set(groups[0]) == {"image", "mask", "paths"} and groups[0]["paths"] == ["a", "c"]
    with pytest.raises(ValueError) as info:  # a training batch of two sizes names a file of each
        single_group(groups)
    assert str(info.value) == (
        "training images in one batch must share one size, got 4×6 (a), 5×6 (b); "
        "set data.crop_size, or train.batch_size = 1"
    )
    x = torch.arange(35).reshape(5, 7)
    assert torch.equal(center_crop(x, (3, 3)), x[1:4, 2:5])


def test_a_resumed_run_folder_has_the_best_checkpoint_so_far(tiny_config):
    first = Trainer(tiny_config("train.epochs=2", "train.overlays=0")).fit()
    config = tiny_config("train.epochs=3", "train.overlays=0")
    resumed = Trainer(config).fit(resume=first.last_path)
    best = load_checkpoint(resumed.run_dir / "best.pt")
    assert best.epoch == resumed.best_epoch
    assert (resumed.run_dir / "best.safetensors").is_file()


def test_the_saver_adopts_the_earlier_best_only_when_it_is_the_best_so_far(tiny_config, tmp_path):
    run = Trainer(tiny_config("train.epochs=1", "train.overlays=0")).fit()
    best = load_checkpoint(run.best_path)
    new = tmp_path / "resumed"
    new.mkdir()
    saver = CheckpointSaver(new, dict)
    assert not saver.adopt_best(run.last_path, best.epoch + 1)  # a later best: not this file
    assert not (new / "best.pt").exists()
    assert saver.adopt_best(run.last_path, best.epoch)
    assert (new / "best.pt").read_bytes() == run.best_path.read_bytes()
    assert (new / "best.safetensors").read_bytes() == (
        run.best_path.with_suffix(".safetensors").read_bytes()
    )


def test_killed_saves_leave_no_temporaries_once_the_run_folder_is_used_again(tiny_config):
    run = Trainer(tiny_config("train.epochs=1", "train.overlays=0")).fit()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    leftover = run.run_dir / f".last.pt.{int(gone.stdout)}.k1ll3d00.tmp"
    leftover.write_bytes(b"half a checkpoint")
    Trainer(tiny_config("train.epochs=2", "train.overlays=0")).fit(resume=run.last_path)
    assert not leftover.exists()
    assert (run.run_dir / "last.pt").is_file()


def test_ctrl_c_stops_after_the_iteration_with_last_pt_and_the_report(tiny_config):
    def interrupt_at_first_batch(event, info):
        if event == "batch_end":
            os.kill(os.getpid(), signal.SIGINT)

    config = tiny_config("train.epochs=5")
    before = signal.getsignal(signal.SIGINT)  # default, or ignored in a background job
    result = Trainer(config, progress=interrupt_at_first_batch).fit()
    assert (result.stopped_by, result.iterations) == ("interrupted", 1)
    last = load_checkpoint(result.last_path)
    assert last.training["position"]["batch"] == 1  # resumable mid-epoch
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"best.pt", "last.pt", "metrics.csv", "loss.png", "overlays"} <= names
    assert signal.getsignal(signal.SIGINT) is before  # put back
    resumed = Trainer(tiny_config("train.epochs=1", "train.overlays=0")).fit(
        resume=result.last_path
    )
    assert (resumed.stopped_by, resumed.iterations) == ("epochs", 2)


def test_a_second_ctrl_c_stops_at_once(tiny_config):
    def interrupt_twice(event, info):
        if event == "batch_end":
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config("train.overlays=0"), progress=interrupt_twice).fit()
    assert signal.getsignal(signal.SIGINT) is before
