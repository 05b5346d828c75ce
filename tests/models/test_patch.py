"""The patch classifier: its two evaluation modes agree, and it is a function of the patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.models import create_model
from pixelwise.models.patch import MIN_PATCH_SIZE, PatchClassifier
from pixelwise.nn.padding import mirror_pad
from pixelwise.nn.trace import trace_stages


def _model(*, patch_size: int = 13, width: int = 4, num_classes: int = 3, **kw) -> PatchClassifier:
    torch.manual_seed(0)
    return PatchClassifier(num_classes=num_classes, patch_size=patch_size, width=width, **kw)


def _images(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("shape", "chunk_size"),
    [((1, 3, 23, 17), 1024), ((3, 3, 23, 17), 100), ((2, 3, 5, 4), 7)],
)
def test_patches_and_dense_give_the_same_logits(shape, chunk_size):
    # Default patch size (25): pad 12 is wider than the 5×4 image, so the mirror repeats.
    model = _model(patch_size=25, width=8, chunk_size=chunk_size).eval()
    x = _images(*shape)
    with torch.no_grad():
        dense = model(x)
        model.mode = "patches"
        patches = model(x)
    assert dense.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(patches, dense, rtol=1e-4, atol=1e-5)


def test_each_pixel_is_its_own_patch_classified_alone():
    # Oracle: pad with numpy, crop the patch by hand, run the network on it alone.
    model = _model(patch_size=15).eval()
    x = _images(1, 3, 11, 9)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (7, 7), (7, 7)), mode="reflect")
    with torch.no_grad():
        out = model(x)
        for i, j in [(0, 0), (10, 8), (0, 8), (5, 4), (10, 0)]:
            patch = torch.from_numpy(padded[:, :, i : i + 15, j : j + 15].copy())
            torch.testing.assert_close(model.body(patch)[0, :, 0, 0], out[0, :, i, j])


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (5, 4), (13, 17)])
def test_mirror_pad_matches_numpy_reflect_at_any_size(h, w):
    x = _images(2, 3, h, w)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (12, 12), (12, 12)), mode="reflect")
    torch.testing.assert_close(mirror_pad(x, 12), torch.from_numpy(expected))


def test_output_depends_on_the_patch_and_nothing_else():
    model = _model(patch_size=13).eval()
    x = _images(8, 3, 41, 37).requires_grad_()
    i, j, r = 20, 18, 6
    model(x)[:, :, i, j].sum().backward()
    # Max-pooling routes each image's gradient through a few pixels; over eight images the
    # support of the gradient spans exactly the 13×13 patch centred on (i, j).
    rows, cols = x.grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (i - r, i + r, j - r, j + r)
    outside = x.detach().clone()
    outside[0, :, i + r + 1, j - r - 1 : j + r + 2] += 10.0  # the row just below the patch
    outside[0, :, i - r : i + r + 1, j + r + 1] += 10.0  # the column just right of it
    with torch.no_grad():
        assert torch.equal(model(x)[0, :, i, j], model(outside)[0, :, i, j])


def test_contract_at_odd_size_through_the_registry():
    torch.manual_seed(0)
    model = create_model("patch_classifier", num_classes=5).eval()
    with torch.no_grad():
        out = model(_images(2, 3, 67, 45))
    assert out.shape == (2, 5, 67, 45)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.size_divisor == 1 and model.mode == "dense"
    stages = trace_stages(model, (1, 3, 31, 29))
    assert [s.name for s in stages] == list(model.stage_names)
    assert stages[-1].shape == (1, 5, 31, 29)
    assert stages[1].shape == (1, 32, 31 + 24 - 12, 29 + 24 - 12)


def test_parameter_count_by_hand():
    c, d, k, p = 3, 16, 5, 25
    rest = p - 12
    expected = (
        (c * d * 9 + d)
        + (d * d * 9 + d)
        + (d * 2 * d * 9 + 2 * d)
        + (2 * d * 2 * d * 9 + 2 * d)
        + (2 * d * 4 * d * rest * rest + 4 * d)
        + (4 * d * 4 * d + 4 * d)
        + (4 * d * k + k)
    )
    model = create_model("patch_classifier", num_classes=k, patch_size=p, width=d)
    assert sum(t.numel() for t in model.parameters()) == expected == 367_317


@pytest.mark.parametrize("mode", ["dense", "patches"])
def test_gradients_are_finite_and_the_same_in_both_modes(mode):
    x = _images(2, 3, 9, 7).requires_grad_()
    target = torch.randint(0, 3, (2, 9, 7), generator=torch.Generator().manual_seed(2))
    grads = {}
    for m in ("dense", mode):
        model = _model(mode=m).train()
        x.grad = None
        torch.nn.functional.cross_entropy(model(x), target).backward()
        grads[m] = [x.grad.clone()] + [p.grad for p in model.parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads[mode])
    for got, want in zip(grads[mode], grads["dense"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_mode_switch_changes_how_the_network_is_called():
    model = _model(patch_size=13, chunk_size=50).eval()
    seen = []
    model.body.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape)))
    with torch.no_grad():
        model(_images(1, 3, 11, 9))
        model.mode = "patches"
        model(_images(1, 3, 11, 9))
    assert seen[0] == (1, 3, 23, 21)  # the whole padded image once
    assert seen[1:] == [(50, 3, 13, 13), (49, 3, 13, 13)]  # 99 pixels in chunks of 50


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (
            24,
            ValueError,
            "patch_size must be an odd integer >= 13, got 24; an odd size has a centre pixel; use 25",
        ),
        (11, ValueError, "patch_size must be an odd integer >= 13, got 11; the feature layers"),
        (-3, ValueError, "patch_size must be an odd integer >= 13, got -3; the feature"),
        (25.0, TypeError, "patch_size must be an odd integer >= 13, got 25.0; pass an int"),
        (True, TypeError, "patch_size must be an odd integer >= 13, got True; pass an int"),
    ],
)
def test_bad_patch_size_is_rejected_in_one_line(value, error, text):
    with pytest.raises(error) as info:
        create_model("patch_classifier", num_classes=2, patch_size=value)
    assert str(info.value).startswith(text) and "\n" not in str(info.value)
    assert MIN_PATCH_SIZE == 13


def test_bad_mode_width_and_images_are_rejected():
    model = _model()
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \['dense', 'patches'\], got 'dens'; did you mean 'dense'\?",
    ):
        model.mode = "dens"
    assert model.mode == "dense"
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        create_model("patch_classifier", num_classes=2, width=0)
    with pytest.raises(ValueError, match="add a batch axis"):
        model(_images(3, 11, 9))
    with pytest.raises(ValueError, match="have 3 channels"):
        model(_images(1, 1, 11, 9))
