"""ConfusionMatrix against a per-pixel numpy loop, hand-computed examples and the NaN rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelwise.metrics import ConfusionMatrix

IGNORE = 255


def loop_matrix(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """Reference: visit every pixel once."""
    m = np.zeros((k, k), np.int64)
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist(), strict=True):
        if t != IGNORE:
            m[t, p] += 1
    return m


def loop_metrics(m: np.ndarray) -> dict[str, object]:
    """Reference: the FCN formulas written class by class, NaN for 0/0, means skip NaN."""
    k = m.shape[0]
    acc, iou, dice = [], [], []
    for i in range(k):
        t_i = sum(m[i, j] for j in range(k))
        p_i = sum(m[j, i] for j in range(k))
        acc.append(m[i, i] / t_i if t_i else math.nan)
        union = t_i + p_i - m[i, i]
        iou.append(m[i, i] / union if union else math.nan)
        dice.append(2 * m[i, i] / (t_i + p_i) if t_i + p_i else math.nan)
    total = m.sum()
    fw = sum(m[i].sum() * iou[i] for i in range(k) if m[i].sum()) / total
    return {
        "pixel_accuracy": np.trace(m) / total,
        "mean_accuracy": np.nanmean(acc),
        "mean_iou": np.nanmean(iou),
        "frequency_weighted_iou": fw,
        "mean_dice": np.nanmean(dice),
        "accuracy": acc,
        "iou": iou,
        "dice": dice,
    }


def random_batch(seed: int, n: int = 2, k: int = 5, h: int = 67, w: int = 45):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g)
    target = torch.randint(0, k, (n, h, w), generator=g)
    # Bias predictions towards the target so that every metric lands strictly between 0 and 1.
    logits.scatter_add_(1, target.unsqueeze(1), torch.full((n, 1, h, w), 1.5))
    target[torch.rand(n, h, w, generator=g) < 0.1] = IGNORE
    return logits, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_pixel_loop(seed: int) -> None:
    logits, target = random_batch(seed)
    cm = ConfusionMatrix(5).update(logits, target)
    expected = loop_matrix(logits.argmax(1).numpy(), target.numpy(), 5)
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    ref = loop_metrics(expected)
    for name in (
        "pixel_accuracy",
        "mean_accuracy",
        "mean_iou",
        "frequency_weighted_iou",
        "mean_dice",
    ):
        assert getattr(cm, name)() == pytest.approx(ref[name], rel=1e-12), name
    np.testing.assert_allclose(cm.iou().numpy(), ref["iou"], rtol=1e-12)
    np.testing.assert_allclose(cm.class_accuracy().numpy(), ref["accuracy"], rtol=1e-12)
    np.testing.assert_allclose(cm.dice().numpy(), ref["dice"], rtol=1e-12)


def test_hand_computed_example() -> None:
    # target  0 0 1 1 2 255     pred  0 1 1 1 0 2
    target = torch.tensor([[[0, 0, 1, 1, 2, IGNORE]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0, 2]]])
    cm = ConfusionMatrix(3).update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.class_accuracy().tolist() == pytest.approx([1 / 2, 1.0, 0.0])
    assert cm.mean_accuracy() == pytest.approx(1 / 2)
    # IoU: class 0 -> 1 / (2 + 2 - 1), class 1 -> 2 / (2 + 3 - 2), class 2 -> 0 / (1 + 0 - 0)
    assert cm.iou().tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert cm.mean_iou() == pytest.approx(1 / 3)
    assert cm.frequency_weighted_iou() == pytest.approx((2 * 1 / 3 + 2 * 2 / 3 + 1 * 0) / 5)
    assert cm.dice().tolist() == pytest.approx([2 / 4, 4 / 5, 0.0])


def test_absent_missed_and_spurious_classes() -> None:
    # class 0 correct; class 1 missed (predicted as 0); class 2 spurious (predicted, no target);
    # class 3 absent from both.
    target = torch.tensor([[[0, 0, 1, 1, 0]]])
    pred = torch.tensor([[[0, 0, 0, 0, 2]]])
    cm = ConfusionMatrix(4).update(pred, target)
    iou, acc, dice = cm.iou(), cm.class_accuracy(), cm.dice()
    assert iou[1] == 0 and dice[1] == 0 and acc[1] == 0  # missed: counts as 0
    assert iou[2] == 0 and dice[2] == 0 and math.isnan(acc[2])  # spurious: IoU 0, accuracy NaN
    assert math.isnan(iou[3]) and math.isnan(acc[3]) and math.isnan(dice[3])  # absent
    # class 0: n_00 = 2, t_0 = 3, predicted 0 = 4 -> IoU 2 / 5; mean over classes 0, 1, 2 only
    assert cm.mean_iou() == pytest.approx((2 / 5 + 0 + 0) / 3)
    assert cm.mean_accuracy() == pytest.approx((2 / 3 + 0) / 2)
    assert cm.mean_dice() == pytest.approx((4 / 7 + 0 + 0) / 3)


def test_empty_matrix_is_nan() -> None:
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.pixel_accuracy()) and math.isnan(cm.mean_iou())
    assert math.isnan(cm.frequency_weighted_iou()) and math.isnan(cm.mean_accuracy())
    cm.update(torch.zeros(1, 1, 3, dtype=torch.long), torch.full((1, 1, 3), IGNORE))
    assert int(cm.matrix.sum()) == 0


def test_streaming_merge_and_reset() -> None:
    logits, target = random_batch(3, n=5, h=19, w=23)
    whole = ConfusionMatrix(5).update(logits, target)
    streamed = ConfusionMatrix(5)
    for i in range(5):
        streamed.update(logits[i : i + 1], target[i : i + 1])
    assert torch.equal(streamed.matrix, whole.matrix)
    first, second = (
        ConfusionMatrix(5).update(logits[:2], target[:2]),
        ConfusionMatrix(5).update(logits[2:], target[2:]),
    )
    assert torch.equal((first + second).matrix, whole.matrix)
    assert torch.equal(first.merge(second).matrix, whole.matrix)
    assert int(first.matrix.sum()) < int(whole.matrix.sum())  # merging did not touch its inputs
    # What an all_reduce does: sum the plain tensors in place.
    first.matrix += second.matrix
    assert first.mean_iou() == whole.mean_iou()
    whole.reset()
    assert int(whole.matrix.abs().sum()) == 0 and whole.matrix.shape == (5, 5)


def test_logits_and_labels_agree_and_no_ignore() -> None:
    logits, target = random_batch(4)
    target[target == IGNORE] = 0
    a = ConfusionMatrix(5, ignore_index=None).update(logits, target)
    b = ConfusionMatrix(5, ignore_index=None).update(logits.argmax(1), target)
    assert torch.equal(a.matrix, b.matrix) and int(a.matrix.sum()) == target.numel()


def test_summary_with_class_names() -> None:
    target = torch.tensor([[[0, 1, 1]]])
    cm = ConfusionMatrix(3).update(torch.tensor([[[0, 1, 2]]]), target)
    s = cm.summary(["sky", "road", "car"])
    assert s["mean_iou"] == pytest.approx(0.5) and s["pixel_accuracy"] == pytest.approx(2 / 3)
    assert s["classes"]["road"] == {
        "iou": 0.5,
        "accuracy": 0.5,
        "dice": pytest.approx(2 / 3),
        "target_pixels": 2,
        "predicted_pixels": 1,
    }
    assert math.isnan(s["classes"]["car"]["accuracy"]) and s["classes"]["car"]["iou"] == 0
    assert list(cm.summary()["classes"]) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="class_names must be 3 distinct names"):
        cm.summary(["sky", "road"])


@pytest.mark.parametrize(
    ("pred", "target", "error", "pattern"),
    [
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.tensor([[[0, 300], [7, 255]]]),
            ValueError,
            r"target values must be in \[0, 3\) or ignore_index 255, got 7, 300 \(2 pixels\); map",
        ),
        (
            torch.tensor([[[0, -1], [5, 1]]]),
            torch.zeros(1, 2, 2, dtype=torch.long),
            ValueError,
            r"predicted label values must be in \[0, 3\), got -1, 5 \(2 pixels\)",
        ),
        (
            torch.zeros(1, 4, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            ValueError,
            r"logits must have shape \(1, 3, 2, 2\) to match target, got shape \(1, 4, 2, 2\)",
        ),
        (
            torch.zeros(1, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            TypeError,
            r"predicted labels must be an integer tensor, got torch.float32",
        ),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(2, 2, dtype=torch.long),
            ValueError,
            r"target must have 3 dimensions \(N, H, W\), got shape \(2, 2\); add a batch axis",
        ),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(1, 2, 2),
            TypeError,
            r"target must be an integer tensor of class indices, got torch.float32",
        ),
    ],
)
def test_invalid_inputs_name_the_problem(pred, target, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        ConfusionMatrix(3).update(pred, target)


def test_constructor_and_merge_checks() -> None:
    with pytest.raises(
        ValueError, match=r"ignore_index must lie outside the class range \[0, 3\), got 2"
    ):
        ConfusionMatrix(3, ignore_index=2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="merged matrices must share num_classes and ignore_index"):
        ConfusionMatrix(3) + ConfusionMatrix(4)
    assert ConfusionMatrix(3, ignore_index=-100).ignore_index == -100


@pytest.mark.gpu
def test_cuda_counts_equal_cpu_counts() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    logits, target = random_batch(5)
    cpu = ConfusionMatrix(5).update(logits, target)
    on_gpu = ConfusionMatrix(5, device="cuda").update(logits.cuda(), target.cuda())
    mixed = ConfusionMatrix(5).update(logits.cuda(), target.cuda())  # counted on GPU, kept on CPU
    assert on_gpu.matrix.device.type == "cuda" and mixed.matrix.device.type == "cpu"
    assert torch.equal(on_gpu.matrix.cpu(), cpu.matrix) and torch.equal(mixed.matrix, cpu.matrix)


def test_summary_keys_are_the_scalar_scores_in_order() -> None:
    from pixelwise.metrics import SUMMARY_KEYS

    assert (
        SUMMARY_KEYS
        == ConfusionMatrix.SUMMARY_KEYS
        == (
            "pixel_accuracy",
            "mean_accuracy",
            "mean_iou",
            "frequency_weighted_iou",
            "mean_dice",
        )
    )
    cm = ConfusionMatrix(3).update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]]))
    summary = cm.summary()
    assert list(summary) == [*SUMMARY_KEYS, "classes"]
    assert summary["mean_iou"] == 0.5 and summary["pixel_accuracy"] == pytest.approx(2 / 3)
