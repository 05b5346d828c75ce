"""The moving average of the weights (``train.ema``): the update rule, the swap in and out,
and a run that validates, saves and resumes with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelwise.config import load_config
from pixelwise.engine.average import WeightAverage, decay_after
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.engine.loaders import collate_groups
from pixelwise.engine.trainer import Trainer
from pixelwise.metrics import ConfusionMatrix
from stop_after import interrupted_and_resumed


def test_the_decay_warms_up_to_its_value():
    assert decay_after(0.99, 0) == pytest.approx(1 / 10)
    assert decay_after(0.99, 5) == pytest.approx(6 / 15)
    assert decay_after(0.99, 890) == pytest.approx(891 / 900)
    assert decay_after(0.99, 891) == 0.99  # (1 + n) / (10 + n) passes 0.99 at n = 891
    assert decay_after(0.5, 100) == 0.5


def _linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(-value)
    return layer


def test_the_average_follows_the_update_rule_exactly():
    model = _linear(1.0)
    average = WeightAverage(model, decay=0.9)
    average.update(model)  # the first update copies
    assert average.updates == 1
    expected = 1.0
    for step, value in enumerate([3.0, -2.0, 5.0, 0.5], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        average.update(model)
        d = decay_after(0.9, step)
        expected = d * expected + (1 - d) * value
        weights = average.weights()
        assert weights["weight"].flatten().tolist() == pytest.approx([expected] * 2, rel=1e-6)
        assert weights["bias"].tolist() == pytest.approx([-expected], rel=1e-6)
    assert average.updates == 5


def test_batch_norm_statistics_are_averaged_and_its_batch_count_is_the_latest():
    model = nn.BatchNorm2d(1)
    average = WeightAverage(model, decay=0.5)
    model.running_mean.fill_(2.0)
    model.num_batches_tracked.fill_(7)
    average.update(model)
    model.running_mean.fill_(4.0)
    model.num_batches_tracked.fill_(8)
    average.update(model)
    d = decay_after(0.5, 1)  # 2/11
    weights = average.weights()
    assert weights["running_mean"].item() == pytest.approx(d * 2 + (1 - d) * 4)
    assert weights["num_batches_tracked"].item() == 8


def test_applied_swaps_the_average_in_and_the_trained_weights_back():
    model = _linear(1.0)
    average = WeightAverage(model, decay=0.5)
    with average.applied(model):  # no update yet: the model as it is
        assert model.weight.tolist() == [[1.0, 1.0]]
    average.update(model)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)
    mean = decay_after(0.5, 1) * 1.0 + (1 - decay_after(0.5, 1)) * 3.0
    parameter = model.weight  # the optimizer's tensor stays the same object
    with pytest.raises(RuntimeError), average.applied(model) as trained:
        assert model.weight.flatten().tolist() == pytest.approx([mean, mean])
        assert trained["weight"].tolist() == [[3.0, 3.0]]
        raise RuntimeError("validation failed")
    assert model.weight is parameter and model.weight.tolist() == [[3.0, 3.0]]


def test_a_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay=1.0)
    with pytest.raises(ValueError, match=r"train\.ema"):
        load_config(None, ["train.ema=1.5"])


def test_a_run_validates_and_saves_the_average(tiny_config):
    with Trainer(tiny_config("train.ema=0.9", "train.overlays=0")) as trainer:
        result = trainer.fit()
        checkpoint = load_checkpoint(result.last_path)
        saved = checkpoint.training["average"]
        assert saved["updates"] == result.iterations == 4
        trained, averaged = saved["trained_weights"], checkpoint.state_dict
        assert trained.keys() == averaged.keys()
        assert any(not torch.equal(trained[k], averaged[k]) for k in averaged)
        # After the run the network holds the average, as the checkpoint does.
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value.cpu(), averaged[key]), key
        # What validation measured is what the checkpoint predicts.
        segmenter, matrix = load_model(result.last_path), ConfusionMatrix(2)
        for index in range(len(trainer.val_set)):
            batch = collate_groups([trainer.val_set[index]])[0]
            with torch.no_grad():
                matrix.update(segmenter(batch["image"]), batch["mask"])
    counted = torch.tensor(checkpoint.metrics["confusion_matrix"])
    assert (counted - matrix.matrix).abs().sum() <= 4


def test_a_run_with_the_average_resumes_exactly(tiny_config):
    config = tiny_config(
        "train.epochs=3", "train.deterministic=true", "train.overlays=0", "train.ema=0.8"
    )
    uninterrupted, _, resumed = interrupted_and_resumed(config)
    a, b = load_checkpoint(uninterrupted.last_path), load_checkpoint(resumed.last_path)
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    ta, tb = a.training["average"], b.training["average"]
    assert ta["updates"] == tb["updates"] == 6
    for key in ta["trained_weights"]:
        assert torch.equal(ta["trained_weights"][key], tb["trained_weights"][key]), key
    assert [r["mean_iou"] for r in resumed.history] == [
        r["mean_iou"] for r in uninterrupted.history
    ]


def test_a_run_without_the_average_resumes_from_the_trained_weights(tiny_config):
    averaged = tiny_config("train.epochs=1", "train.overlays=0", "train.ema=0.9")
    with Trainer(averaged) as trainer:
        first = trainer.fit()
    trained = load_checkpoint(first.last_path).training["average"]["trained_weights"]
    plain = tiny_config("train.epochs=2", "train.overlays=0")
    with Trainer(plain) as trainer:
        trainer._resume(first.last_path)
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, trained[key]), key
