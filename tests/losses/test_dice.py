"""Soft Dice and CE + Dice against a per-pixel numpy loop, ignored pixels and empty classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelwise.losses.cross_entropy import cross_entropy
from pixelwise.losses.dice import CEDiceLoss, DiceLoss, ce_dice_loss, soft_dice_loss

N, K, H, W = 2, 5, 7, 9
IGNORE = 255


def make_inputs(seed: int, ignore_fraction: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, K, H, W, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, K, (N, H, W), generator=g)
    target[torch.rand(N, H, W, generator=g) < ignore_fraction] = IGNORE
    return logits, target


def reference(logits, target, weight=None, smooth=1.0, per_image=False):
    """Accumulate the Dice sums pixel by pixel, then average over classes (and images)."""
    z = logits.numpy()
    t = target.numpy()
    groups = [[n] for n in range(z.shape[0])] if per_image else [list(range(z.shape[0]))]
    lam = np.ones(z.shape[1]) if weight is None else np.asarray(weight, dtype=np.float64)
    losses = []
    for images in groups:
        inter = np.zeros(z.shape[1])
        denom = np.zeros(z.shape[1])
        for n in images:
            for i in range(z.shape[2]):
                for j in range(z.shape[3]):
                    if t[n, i, j] == IGNORE:
                        continue
                    e = np.exp(z[n, :, i, j] - z[n, :, i, j].max())
                    p = e / e.sum()
                    for c in range(z.shape[1]):
                        g = 1.0 if t[n, i, j] == c else 0.0
                        inter[c] += p[c] * g
                        denom[c] += p[c] + g
        dice = [
            (2 * inter[c] + smooth) / (denom[c] + smooth) if denom[c] + smooth > 0 else 1.0
            for c in range(z.shape[1])
        ]
        losses.append(1 - float(np.dot(lam, dice) / lam.sum()))
    return float(np.mean(losses))


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_matches_per_pixel_loop(per_image, smooth):
    logits, target = make_inputs(seed=11)
    got = soft_dice_loss(logits, target, smooth=smooth, per_image=per_image)
    assert got.item() == pytest.approx(
        reference(logits, target, None, smooth, per_image), rel=1e-10
    )


def test_class_weights_weigh_the_class_average():
    logits, target = make_inputs(seed=12)
    weight = [0.5, 2.0, 0.0, 1.0, 3.0]
    got = soft_dice_loss(logits, target, weight=weight)
    assert got.item() == pytest.approx(reference(logits, target, weight), rel=1e-10)


def test_ignored_pixels_change_nothing():
    logits, target = make_inputs(seed=13, ignore_fraction=0.4)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 100, logits)
    for loss_fn in (soft_dice_loss, ce_dice_loss):
        losses, grads = [], []
        for scores in (logits, changed):
            scores = scores.clone().requires_grad_(True)
            loss = loss_fn(scores, target)
            loss.backward()
            losses.append(loss.detach())
            grads.append(scores.grad)
        torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
        assert grads[0][ignored].abs().max() == 0


def test_perfect_prediction_and_absent_class():
    # Class 4 is absent from the target; a confident correct prediction gives ~0 loss.
    target = torch.randint(0, K - 1, (N, H, W), generator=torch.Generator().manual_seed(14))
    perfect = 40.0 * torch.nn.functional.one_hot(target, K).permute(0, 3, 1, 2).double()
    assert soft_dice_loss(perfect, target).item() < 1e-12
    # Predicting the absent class at a few pixels is penalised through its Dice term only.
    wrong = perfect.clone()
    wrong[0, :, 0, :3] = 0.0
    wrong[0, K - 1, 0, :3] = 40.0
    only_absent = soft_dice_loss(wrong, target, weight=[0, 0, 0, 0, 1]).item()
    # D_4 = s / (3 + s) with s = 1.
    assert only_absent == pytest.approx(1 - 1 / 4, rel=1e-9)
    assert soft_dice_loss(wrong, target).item() > 0.15


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_all_ignored_gives_zero_with_gradient(smooth):
    logits, target = make_inputs(seed=15)
    logits.requires_grad_(True)
    loss = soft_dice_loss(logits, torch.full_like(target, IGNORE), smooth=smooth)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0
    total = ce_dice_loss(logits, torch.full_like(target, IGNORE), smooth=smooth)
    assert total.item() == 0.0 and not math.isnan(total.item())


def test_ce_dice_is_the_weighted_sum():
    logits, target = make_inputs(seed=16)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    pixel_weights = torch.rand(N, H, W, generator=torch.Generator().manual_seed(0)).double()
    got = ce_dice_loss(
        logits, target, ce_weight=0.3, dice_weight=2.0, weight=weight, pixel_weights=pixel_weights
    )
    ce = cross_entropy(logits, target, weight=weight, pixel_weights=pixel_weights)
    expected = 0.3 * ce + 2.0 * soft_dice_loss(logits, target)
    torch.testing.assert_close(got, expected)
    module = CEDiceLoss(ce_weight=0.3, dice_weight=2.0, weight=weight)
    torch.testing.assert_close(module(logits, target, pixel_weights), expected)
    dice_module = DiceLoss(weight=[1, 1, 1, 1, 2], per_image=True)
    expected = soft_dice_loss(logits, target, weight=[1, 1, 1, 1, 2], per_image=True)
    torch.testing.assert_close(dice_module.double()(logits, target), expected)


def test_errors():
    logits, target = make_inputs(seed=17)
    with pytest.raises(ValueError, match=r"^smooth must be a finite number >= 0, got -1"):
        soft_dice_loss(logits, target, smooth=-1)
    with pytest.raises(ValueError, match=r"^Dice class weight must have a positive sum"):
        soft_dice_loss(logits, target, weight=[0.0] * K)
    with pytest.raises(ValueError, match=r"^dice_weight must be a finite number >= 0"):
        ce_dice_loss(logits, target, dice_weight=float("nan"))
    with pytest.raises(ValueError, match=r"^target values must be in \[0, 5\)"):
        soft_dice_loss(logits, target.masked_fill(target == 0, 5))


def test_losses_reduce_in_float32_under_bfloat16_autocast():
    """A half-precision sum over a 1024² map loses or overflows (smp issue 463)."""
    from pixelwise.losses import ce_dice_loss, cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 1024, 1024)
    target = torch.randint(0, 3, (2, 1024, 1024))
    target[:, :8] = 255
    expected = {
        "dice": soft_dice_loss(logits, target),
        "ce": cross_entropy(logits, target),
        "ce_dice": ce_dice_loss(logits, target),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = logits.to(torch.bfloat16)
        got = {
            "dice": soft_dice_loss(half, target),
            "ce": cross_entropy(half, target),
            "ce_dice": ce_dice_loss(half, target),
        }
    for name, value in got.items():
        assert value.dtype == torch.float32, name
        # Only the bfloat16 rounding of the logits differs (relative 2^-8 per value).
        assert torch.isclose(value, expected[name], rtol=2e-3), name
