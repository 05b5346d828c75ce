"""One evaluation function: data sets and batches score the same pixels as a hand loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.inference import Segmenter, evaluate, evaluate_dataset, predict_logits
from pixelwise.metrics import ConfusionMatrix, boundary_f1_scores
from pixelwise.metrics.boundary import image_mean
from pixelwise.models import create_model

NORM = {"mean": [0.5], "std": [0.25]}
SIZES = ((20, 24), (20, 24), (17, 19), (20, 24), (17, 19))


def valid_unet() -> Segmenter:
    torch.manual_seed(0)
    net = create_model("unet", num_classes=2, in_channels=1, padding="valid", depth=2, base_width=4)
    return Segmenter(net.eval(), NORM, class_names=("bg", "cell"), ignore_index=255)


def samples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    out = []
    for height, width in SIZES:
        mask = torch.randint(0, 2, (height, width), generator=generator)
        mask[0, :3] = 255  # a few ignored pixels
        out.append(
            {
                "image": torch.rand(1, height, width, generator=generator),
                "mask": mask,
                "weight": torch.rand(height, width, generator=generator) + 0.5,
            }
        )
    return out


class Samples(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.num_classes = 2

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def weighted_ce(logits, target, weight):
    if weight is None:
        return None
    losses = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    return (losses * weight).sum() / (weight * (target != 255)).sum()


def hand_loop(segmenter: Segmenter, items: list[dict]) -> dict:
    matrix, losses, scores = ConfusionMatrix(2, 255), [], []
    for item in items:
        logits = predict_logits(segmenter, item["image"])[None]  # (1, K, H, W)
        target = item["mask"][None]
        matrix.update(logits, target)
        losses.append(float(weighted_ce(logits, target, item["weight"][None])))
        scores.append(boundary_f1_scores(logits, target, 2, ignore_index=255))
    result = matrix.summary(("bg", "cell"))
    result["loss"] = float(np.mean(losses))
    result["confusion_matrix"] = matrix.matrix.tolist()
    result["boundary_f1"] = image_mean(np.concatenate(scores))
    return result


def batches(items: list[dict]) -> list[dict]:
    """The batches a loader of batch size 2 with size groups yields, as lists of groups."""
    out = []
    for start in range(0, len(items), 2):
        chunk = items[start : start + 2]
        groups: dict = {}
        for item in chunk:
            groups.setdefault(tuple(item["image"].shape), []).append(item)
        out.append(
            [
                {k: torch.stack([s[k] for s in g]) for k in ("image", "mask", "weight")}
                for g in groups.values()
            ]
        )
    return out


def test_a_data_set_batches_and_a_hand_loop_score_the_same_pixels():
    segmenter, items = valid_unet(), samples()
    expected = hand_loop(segmenter, items)
    calls = []
    by_dataset = evaluate(
        segmenter,
        Samples(items),
        batch_size=2,
        loss=weighted_ce,
        progress=lambda done, total: calls.append((done, total)),
    )
    by_batches = evaluate(segmenter, batches(items), loss=weighted_ce)
    flat = [group for batch in batches(items) for group in batch]  # plain batch dicts
    by_dicts = evaluate(segmenter, iter(flat), loss=weighted_ce)
    by_list = evaluate(segmenter, items, batch_size=3, loss=weighted_ce)  # a list of samples
    assert calls == [(2, 5), (4, 5), (5, 5)]
    for result in (by_dataset, by_batches, by_dicts, by_list):
        assert result["confusion_matrix"] == expected["confusion_matrix"]
        assert result["num_images"] == 5
        assert result["mean_iou"] == pytest.approx(expected["mean_iou"])
        assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert result["boundary_f1"] == pytest.approx(expected["boundary_f1"])
        assert set(result["classes"]) == {"bg", "cell"}
    # Every labelled pixel is scored: the valid U-Net's margin is mirror-padded, not cropped.
    labelled = sum(int((item["mask"] != 255).sum()) for item in items)
    assert sum(map(sum, by_dataset["confusion_matrix"])) == labelled


def test_reduce_sums_every_total_before_the_summary():
    segmenter, items = valid_unet(), samples()
    seen = []

    def double(tensor: torch.Tensor) -> None:
        seen.append(tensor.dtype)
        tensor.mul_(2)

    plain = evaluate(segmenter, Samples(items), loss=weighted_ce)
    doubled = evaluate(segmenter, Samples(items), loss=weighted_ce, reduce=double)
    assert np.array_equal(
        np.array(doubled["confusion_matrix"]), 2 * np.array(plain["confusion_matrix"])
    )
    assert seen == [torch.int64, torch.float64, torch.float64]  # matrix, loss, boundary sums
    # Ratios of doubled sums are unchanged.
    assert doubled["mean_iou"] == pytest.approx(plain["mean_iou"])
    assert doubled["loss"] == pytest.approx(plain["loss"])
    assert doubled["boundary_f1"] == pytest.approx(plain["boundary_f1"])
    for name in ("bg", "cell"):
        assert (
            doubled["classes"][name]["target_pixels"] == 2 * plain["classes"][name]["target_pixels"]
        )


def test_without_boundary_or_loss_the_keys_say_so():
    segmenter, items = valid_unet(), samples()
    result = evaluate(segmenter, Samples(items), boundary=False)
    assert "boundary_f1" not in result and math.isnan(result["loss"])
    assert "boundary_f1" not in result["classes"]["bg"]
    # The loss is skipped where it returns None (no weight map here).
    no_weights = [{k: v for k, v in item.items() if k != "weight"} for item in items]
    assert math.isnan(evaluate(segmenter, Samples(no_weights), loss=weighted_ce)["loss"])


def test_the_model_mode_is_restored_and_a_bare_network_is_wrapped():
    segmenter, items = valid_unet(), samples()
    network = segmenter.network.train()
    result = evaluate_dataset(network, Samples(items))  # bare: identity normalisation
    assert network.training
    raw = Segmenter(network.eval(), None, class_names=("bg", "cell"))
    assert result["confusion_matrix"] == evaluate(raw, Samples(items))["confusion_matrix"]
    assert list(result["classes"]) == ["0", "1"]
