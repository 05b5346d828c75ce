"""The training clock: a wall-clock budget, snapshots at minute marks, validation every n
epochs, and exact resume from a run stopped mid-epoch.

Most tests drive the clock with a fake timer that advances one minute per optimizer step, so
"minute m" means "after iteration m" and nothing depends on the machine's speed. The tiny run
has 8 training images in batches of 4: 2 iterations per epoch.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from ddp_runs import train_two_ranks
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.engine.loaders import ResumableSampler
from pixelwise.engine.saver import snapshot_name
from pixelwise.engine.schedule import TrainingClock
from pixelwise.engine.trainer import Trainer


def minute_per_iteration(trainer: Trainer) -> None:
    """Replace the trainer's clock by one whose minutes are its optimizer steps."""
    train = trainer.config.train
    trainer.clock = TrainingClock(
        train.time_limit_minutes,
        train.snapshot_minutes,
        timer=lambda: 60.0 * trainer.scheduler.last_epoch,
    )


def fit(config, resume=None, fake_clock: bool = True):
    with Trainer(config) as trainer:
        if fake_clock:
            minute_per_iteration(trainer)
        return trainer.fit(resume=resume)


def test_a_tiny_budget_stops_after_the_first_iteration_and_validates(tiny_config):
    # 1e-6 minutes: any real iteration crosses it, so the run stops after iteration 1.
    result = fit(tiny_config("train.time_limit_minutes=1e-6"), fake_clock=False)
    assert (result.stopped_by, result.iterations, result.epochs) == ("time_limit", 1, 0)
    assert 0 < result.minutes < 5
    (row,) = result.history
    assert row["epoch"] == 0.5 and row["iteration"] == 1  # half of the first epoch
    assert math.isfinite(row["mean_iou"]) and math.isfinite(result.metrics["mean_iou"])
    last = load_checkpoint(result.last_path)
    assert last.epoch == 0  # no epoch completed
    assert last.training["position"]["epoch"] == 0 and last.training["position"]["batch"] == 1
    assert load_checkpoint(result.best_path).metrics["mean_iou"] == row["mean_iou"]
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"metrics.csv", "loss.png", "miou.png", "overlays"} <= names


def test_snapshots_at_the_first_iteration_past_each_mark(tiny_config):
    config = tiny_config(
        "train.epochs=4", "train.snapshot_minutes=[1, 2.5, 3]", "train.time_limit_minutes=5"
    )
    result = fit(config)
    assert (result.stopped_by, result.iterations, result.epochs) == ("time_limit", 5, 2)
    assert sorted(result.snapshots) == [1.0, 2.5, 3.0]
    for minutes, iteration in ((1.0, 1), (2.5, 3), (3.0, 3)):
        path = result.run_dir / snapshot_name(minutes)
        assert result.snapshots[minutes] == path
        snapshot = load_checkpoint(path)
        assert snapshot.metrics["iteration"] == iteration
        assert snapshot.metrics["minutes"] == float(iteration)
        assert snapshot.epoch == iteration // 2  # epochs completed
        model = load_model(path)  # a snapshot is a checkpoint like any other
        assert sum(p.numel() for p in model.parameters()) > 0
    assert snapshot_name(2.5) == "snapshot_2.5min.pt" and snapshot_name(15) == "snapshot_15min.pt"
    # Epochs 1 and 2 ran whole, then one iteration of epoch 3: a row at epoch 2.5.
    assert [row["epoch"] for row in result.history] == [1, 2, 2.5]
    assert [row["iteration"] for row in result.history] == [2, 4, 5]


def test_marks_past_the_end_of_the_run_write_nothing(tiny_config):
    result = fit(tiny_config("train.snapshot_minutes=[3, 100]"))
    assert result.stopped_by == "epochs" and result.epochs == 2 and result.iterations == 4
    assert list(result.snapshots) == [3.0]
    assert not (result.run_dir / snapshot_name(100)).exists()


def test_validation_every_second_epoch_and_after_the_last(tiny_config):
    result = fit(tiny_config("train.epochs=3", "train.val_every=2"), fake_clock=False)
    assert [math.isnan(row["mean_iou"]) for row in result.history] == [True, False, False]
    assert math.isnan(result.history[0]["val_loss"])
    assert load_checkpoint(result.last_path).epoch == 3
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["mean_iou"] == "nan" for r in rows] == [True, False, False]
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    assert all(float(r["minutes"]) > 0 for r in rows)
    assert result.best_epoch in (2, 3)


def test_an_epoch_whose_validation_ends_past_the_limit_ends_the_run(tiny_config):
    # The limit falls on the last iteration of epoch 1: no partial epoch follows.
    result = fit(tiny_config("train.epochs=3", "train.time_limit_minutes=2"))
    assert (result.stopped_by, result.epochs, result.iterations) == ("time_limit", 1, 2)
    assert [row["epoch"] for row in result.history] == [1]
    assert load_checkpoint(result.last_path).training["position"] is None


def _assert_same_weights(a, b) -> None:
    a, b = load_checkpoint(a), load_checkpoint(b)
    assert a.state_dict.keys() == b.state_dict.keys()
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key


def test_resume_mid_epoch_continues_exactly(tiny_config):
    common = ("train.epochs=3", "train.deterministic=true", "train.overlays=0")
    common += ("data.elastic_std=2.0",)
    uninterrupted = fit(tiny_config(*common))
    # Stopped by the budget after iteration 3 (half-way through epoch 2), a snapshot after 1.
    stopped = fit(tiny_config(*common, "train.time_limit_minutes=3", "train.snapshot_minutes=[1]"))
    assert stopped.history[-1]["epoch"] == 1.5
    for checkpoint in (stopped.last_path, stopped.snapshots[1.0]):
        resumed = fit(tiny_config(*common), resume=checkpoint)
        assert resumed.run_dir not in (uninterrupted.run_dir, stopped.run_dir)
        _assert_same_weights(uninterrupted.last_path, resumed.last_path)
        whole = [row for row in resumed.history if float(row["epoch"]).is_integer()]
        assert [row["train_loss"] for row in whole] == [
            row["train_loss"] for row in uninterrupted.history
        ]
        assert resumed.iterations == 6 and resumed.epochs == 3
    assert resumed.minutes == pytest.approx(6.0)  # the clock continues across the resume


def test_resume_needs_time_left(tiny_config):
    config = tiny_config("train.time_limit_minutes=1")
    stopped = fit(config)
    with pytest.raises(ValueError) as info:
        fit(config, resume=stopped.last_path)
    text = str(info.value)
    assert text.startswith("train.time_limit_minutes must exceed the 1.00 minutes checkpoint")
    assert "--set train.time_limit_minutes=16, or 0 for none" in text and "\n" not in text
    longer = fit(tiny_config("train.time_limit_minutes=3"), resume=stopped.last_path)
    assert (longer.stopped_by, longer.iterations) == ("time_limit", 3)


def test_clock_marks_and_offset():
    now = [0.0]
    clock = TrainingClock(2.0, [0.5, 1.0, 1.5], timer=lambda: now[0])
    clock.start(offset=45.0)  # resumed after 45 s: the 0.5-minute mark is behind it
    assert clock.active and clock.pending == [1.0, 1.5]
    now[0] = 20.0
    assert clock.seconds() == 65.0 and clock.due(65.0) == [1.0] and clock.due(65.0) == []
    assert not clock.over(119.0) and clock.over(120.0)
    assert not TrainingClock(0.0, []).active


def test_resumable_sampler_skips_within_the_same_order():
    data = list(range(10))
    whole = list(ResumableSampler(RandomSampler(data, generator=torch.Generator().manual_seed(3))))
    sampler = ResumableSampler(RandomSampler(data, generator=torch.Generator().manual_seed(3)))
    sampler.skip = 4
    assert len(sampler) == 6
    assert list(sampler) == whole[4:]
    assert sampler.skip == 0 and len(sampler) == 10  # one pass only


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_stop_at_the_same_iteration(tmp_path: Path):
    # Rank 0's clock decides for both: with a budget every iteration crosses, each rank
    # stops after its first iteration and both validate and reach the end (no hang).
    out = tmp_path / "runs"
    overrides = [
        "model.options={depth=2, base_width=4}",
        "data.num_train=16",
        "data.num_val=4",
        "data.image_size=48",
        "train.batch_size=4",
        "train.epochs=3",
        "train.device=cpu",
        "train.overlays=0",
        "train.time_limit_minutes=1e-6",
        "train.snapshot_minutes=[1e-7]",
    ]
    train_two_ranks(overrides, out)
    (run,) = out.iterdir()
    last = load_checkpoint(run / "last.pt")
    assert last.training["world_size"] == 2 and last.training["position"]["batch"] == 1
    assert load_checkpoint(run / snapshot_name(1e-7)).metrics["iteration"] == 1
    with (run / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["epoch"]) == 0.5 and int(row["iteration"]) == 1  # 2 of 4 batches per rank


def test_a_schedule_over_time_ends_with_the_budget(tiny_config):
    # poly, power 1, over a 4-minute budget; the fake clock makes minute k iteration k, so
    # the learning rate after iteration k is lr · (1 − k / 4), whatever train.epochs says.
    config = tiny_config(
        "train.epochs=100",
        "train.time_limit_minutes=4",
        "schedule.name=poly",
        "schedule.power=1.0",
        "schedule.over=time",
        "optim.lr=0.01",
    )
    with Trainer(config) as trainer:
        minute_per_iteration(trainer)
        result = trainer.fit()
        final_lr = trainer.optimizer.param_groups[0]["lr"]
    assert (result.stopped_by, result.iterations) == ("time_limit", 4)
    with (result.run_dir / "metrics.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    # Two iterations an epoch; a row's lr is the one its epoch started with (after 0 and 2).
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.005])
    assert final_lr == pytest.approx(0.0)  # after iteration 4, the end of the budget


def test_a_schedule_over_time_needs_a_budget(tiny_config):
    with pytest.raises(ValueError, match=r'^schedule.over = "time" must come with a time budget'):
        Trainer(tiny_config("schedule.over=time"))
