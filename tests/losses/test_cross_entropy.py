"""Pixel-wise cross entropy against a per-pixel numpy loop and torch's own cross entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.losses.cross_entropy import CrossEntropyLoss, cross_entropy

N, K, H, W = 2, 5, 7, 9
IGNORE = 255


def make_inputs(seed: int = 0, dtype=torch.float64, ignore_fraction: float = 0.2):
    """Random logits, targets with some ignored pixels, class and pixel weights."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, K, H, W, generator=g, dtype=dtype) * 3
    target = torch.randint(0, K, (N, H, W), generator=g)
    target[torch.rand(N, H, W, generator=g) < ignore_fraction] = IGNORE
    weight = torch.rand(K, generator=g, dtype=dtype) * 2 + 0.1
    pixel_weights = torch.rand(N, H, W, generator=g, dtype=dtype) * 5
    return logits, target, weight, pixel_weights


def reference(logits, target, weight=None, pixel_weights=None, ignore_index=IGNORE):
    """Per-pixel loop: per-pixel losses, their sum, and the sum over the summed weights."""
    z = logits.detach().double().numpy()
    t = target.numpy()
    per_pixel = np.zeros(t.shape)
    total = norm = 0.0
    for n in range(z.shape[0]):
        for i in range(z.shape[2]):
            for j in range(z.shape[3]):
                label = int(t[n, i, j])
                if label == ignore_index:
                    continue
                scores = z[n, :, i, j]
                top = scores.max()
                log_p = scores[label] - top - math.log(np.exp(scores - top).sum())
                a = 1.0 if weight is None else float(weight[label])
                a *= 1.0 if pixel_weights is None else float(pixel_weights[n, i, j])
                per_pixel[n, i, j] = -a * log_p
                total += -a * log_p
                norm += a
    return per_pixel, total, (total / norm if norm > 0 else 0.0)


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("use_pixel_weights", [False, True])
def test_matches_per_pixel_loop(use_weight, use_pixel_weights):
    logits, target, weight, pixel_weights = make_inputs(seed=1)
    kwargs = {
        "weight": weight if use_weight else None,
        "pixel_weights": pixel_weights if use_pixel_weights else None,
    }
    per_pixel, total, mean = reference(logits, target, **kwargs)
    got_none = cross_entropy(logits, target, reduction="none", **kwargs)
    assert got_none.shape == (N, H, W)
    np.testing.assert_allclose(got_none.numpy(), per_pixel, rtol=1e-10, atol=1e-12)
    assert cross_entropy(logits, target, reduction="sum", **kwargs).item() == pytest.approx(
        total, rel=1e-10
    )
    assert cross_entropy(logits, target, **kwargs).item() == pytest.approx(mean, rel=1e-10)


def test_float32_matches_loop():
    logits, target, weight, pixel_weights = make_inputs(seed=2, dtype=torch.float32)
    _, _, mean = reference(logits, target, weight, pixel_weights)
    got = cross_entropy(logits, target, weight=weight, pixel_weights=pixel_weights)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(mean, rel=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_class_weights_equal_torch(reduction):
    logits, target, weight, _ = make_inputs(seed=3)
    expected = F.cross_entropy(
        logits, target, weight=weight, ignore_index=IGNORE, reduction=reduction
    )
    got = cross_entropy(logits, target, weight=weight, reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_uniform_pixel_weights_equal_plain_cross_entropy():
    logits, target, weight, _ = make_inputs(seed=4)
    uniform = torch.full((N, H, W), 3.7, dtype=torch.float64)
    plain = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(cross_entropy(logits, target, pixel_weights=uniform), plain)
    with_class = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    got = cross_entropy(logits, target, weight=weight, pixel_weights=uniform)
    torch.testing.assert_close(got, with_class)


def test_ignored_pixels_change_nothing():
    logits, target, weight, pixel_weights = make_inputs(seed=5, ignore_fraction=0.4)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 100, logits)
    losses, grads = [], []
    for scores in (logits, changed):
        scores = scores.clone().requires_grad_(True)
        loss = cross_entropy(scores, target, weight=weight, pixel_weights=pixel_weights)
        loss.backward()
        losses.append(loss.detach())
        grads.append(scores.grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    assert grads[0][ignored].abs().max() == 0
    assert grads[0][~ignored].abs().max() > 0


@pytest.mark.parametrize("case", ["all_ignored", "zero_weights"])
def test_nothing_counted_gives_zero_with_gradient(case):
    logits, target, _, _ = make_inputs(seed=6)
    logits.requires_grad_(True)
    if case == "all_ignored":
        loss = cross_entropy(logits, torch.full_like(target, IGNORE))
    else:
        loss = cross_entropy(logits, target, pixel_weights=torch.zeros(N, H, W))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0


def test_module_matches_functional_and_moves_weight():
    logits, target, weight, pixel_weights = make_inputs(seed=7, dtype=torch.float32)
    module = CrossEntropyLoss(weight=weight.tolist(), ignore_index=IGNORE)
    assert "weight" in module.state_dict()
    expected = cross_entropy(logits, target, weight=weight, pixel_weights=pixel_weights)
    torch.testing.assert_close(module(logits, target, pixel_weights), expected)
    assert module.double().weight.dtype == torch.float64


def test_other_ignore_index_and_integer_dtypes():
    logits, target, _, _ = make_inputs(seed=8)
    target = target.masked_fill(target == IGNORE, -1)
    expected = F.cross_entropy(logits, target, ignore_index=-1)
    torch.testing.assert_close(cross_entropy(logits, target, ignore_index=-1), expected)
    small = target.clamp(min=0).to(torch.uint8)
    torch.testing.assert_close(cross_entropy(logits, small), F.cross_entropy(logits, small.long()))


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        (
            lambda lg, t: (lg, t.masked_fill(t == 0, 7).masked_fill(t == 1, 5)),
            ValueError,
            r"^target values must be in \[0, 5\) or ignore_index 255, got 5, 7 \(\d+ pixels\); check",
        ),
        (
            lambda lg, t: (lg, t.masked_fill(t == 1, -3)),
            ValueError,
            r"got -3 \(\d+ pixels\)",
        ),
        (
            lambda lg, t: (lg, t.float()),
            TypeError,
            r"^target must be an integer tensor of class indices, got torch.float32; convert with target.long\(\)",
        ),
        (
            lambda lg, t: (lg, t[:, :, :-1]),
            ValueError,
            r"^target must have shape \(N, H, W\) = \(2, 7, 9\) to match logits \(2, 5, 7, 9\), "
            r"got shape \(2, 7, 8\)",
        ),
        (
            lambda lg, t: (lg[0], t),
            ValueError,
            r"^logits must have 4 dimensions \(N, K, H, W\), got shape \(5, 7, 9\); add a batch",
        ),
        (
            lambda lg, t: (lg.long(), t),
            TypeError,
            r"^logits must be a floating-point tensor, got torch.int64",
        ),
        (
            lambda lg, t: (lg.numpy(), t),
            TypeError,
            r"^logits must be a torch.Tensor of shape \(N, K, H, W\), got ndarray",
        ),
    ],
)
def test_input_errors(change, error, pattern):
    logits, target, _, _ = make_inputs(seed=9)
    logits, target = change(logits, target)
    with pytest.raises(error, match=pattern):
        cross_entropy(logits, target)


def test_weight_errors():
    logits, target, _, _ = make_inputs(seed=10)
    with pytest.raises(ValueError, match=r"^class weight must have shape \(5,\), one weight"):
        cross_entropy(logits, target, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"^class weight must be finite and >= 0"):
        cross_entropy(logits, target, weight=[1.0, -2.0, 1.0, 1.0, 1.0])
    bad = torch.ones(N, H, W)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"^pixel_weights must be finite and >= 0"):
        cross_entropy(logits, target, pixel_weights=bad)
    with pytest.raises(ValueError, match=r"^pixel_weights must have the target's shape"):
        cross_entropy(logits, target, pixel_weights=torch.ones(N, H, W + 1))
    with pytest.raises(TypeError, match=r"torch.from_numpy"):
        cross_entropy(logits, target, pixel_weights=np.ones((N, H, W)))
    with pytest.raises(ValueError, match=r"^reduction must be one of .*did you mean 'mean'\?"):
        cross_entropy(logits, target, reduction="meen")
