"""Test-time augmentation: the eight dihedral transforms, their inverses, and the average."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.inference.tiling import predict
from pixelwise.inference.tta import (
    DIHEDRAL,
    FLIPS,
    apply_transform,
    augmented_logits,
    check_transforms,
    invert_transform,
)
from pixelwise.models import create_model


def grid(height: int = 5, width: int = 7) -> torch.Tensor:
    """(1, 2, H, W) with every value distinct, so a misplaced pixel shows."""
    return torch.arange(2 * height * width, dtype=torch.float32).reshape(1, 2, height, width)


# Peer definitions on numpy arrays (H, W): out[i, j] for each transform.
NUMPY = {
    "identity": lambda a: a,
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1, :],
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "transpose": lambda a: a.T,
    "antitranspose": lambda a: a[::-1, ::-1].T,
}


@pytest.mark.parametrize("name", DIHEDRAL)
def test_transform_matches_numpy(name):
    x = grid()
    got = apply_transform(x, name)
    for c in range(2):
        np.testing.assert_array_equal(got[0, c].numpy(), NUMPY[name](x[0, c].numpy()))


@pytest.mark.parametrize("name", DIHEDRAL)
def test_inverse_undoes_the_transform(name):
    x = grid()
    assert torch.equal(invert_transform(apply_transform(x, name), name), x)
    assert torch.equal(apply_transform(invert_transform(x, name), name), x)


def test_the_eight_transforms_are_distinct_and_close_under_composition():
    x = grid(4, 4)
    images = {name: apply_transform(x, name) for name in DIHEDRAL}
    keys = {tuple(v.flatten().tolist()) for v in images.values()}
    assert len(keys) == 8
    for a in DIHEDRAL:
        for b in DIHEDRAL:
            composed = tuple(apply_transform(apply_transform(x, a), b).flatten().tolist())
            assert composed in keys


def symmetric_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3×3 convolution whose kernels are invariant under the eight transforms."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(sum(apply_transform(w, name) for name in DIHEDRAL) / 8)
    return conv


def test_an_equivariant_model_gives_the_same_output_with_and_without_tta():
    torch.manual_seed(0)
    # Symmetric kernels, zero padding and pointwise layers: equivariant by construction.
    model = nn.Sequential(symmetric_conv(2, 6), nn.ReLU(), symmetric_conv(6, 3)).eval()
    x = torch.randn(2, 2, 11, 17)
    with torch.no_grad():
        plain = model(x)
        augmented = augmented_logits(model, x, transforms=True)
    torch.testing.assert_close(augmented, plain, atol=1e-5, rtol=1e-5)


def manual_average(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eight predictions mapped back, spelled out without the module under test."""
    r = (2, 3)
    outs = [
        model(x),
        model(x.flip(3)).flip(3),
        model(x.flip(2)).flip(2),
        torch.rot90(model(torch.rot90(x, 1, r)), -1, r),
        torch.rot90(model(torch.rot90(x, 2, r)), -2, r),
        torch.rot90(model(torch.rot90(x, 3, r)), -3, r),
        model(x.transpose(2, 3)).transpose(2, 3),
        model(x.flip(2, 3).transpose(2, 3)).transpose(2, 3).flip(2, 3),
    ]
    return torch.stack(outs).mean(dim=0)


def test_a_non_equivariant_model_gives_the_manual_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 5)).eval()
    x = torch.randn(2, 2, 13, 9)
    with torch.no_grad():
        plain = model(x)
        augmented = augmented_logits(model, x, transforms=True)
        expected = manual_average(model, x)
    assert augmented.shape == plain.shape == (2, 3, 9, 5)  # a shrinking output, not square
    torch.testing.assert_close(augmented, expected, atol=1e-6, rtol=1e-6)
    assert (augmented - plain).abs().max() > 1e-3  # TTA changed something


def test_averaging_probabilities_returns_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 3, padding=1).eval()
    x = torch.randn(1, 2, 6, 8)
    with torch.no_grad():
        got = augmented_logits(model, x, transforms=FLIPS, average="probabilities")
        probabilities = [
            invert_transform(model(apply_transform(x, t)), t).softmax(dim=1) for t in FLIPS
        ]
    expected = torch.stack(probabilities).mean(dim=0).log()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.softmax(dim=1), got.exp())  # already normalised


def test_a_subset_averages_only_those_transforms():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, 3, padding=1).eval()
    x = torch.randn(1, 1, 5, 5)
    with torch.no_grad():
        got = augmented_logits(model, x, transforms=["identity", "hflip"])
        expected = (model(x) + model(x.flip(3)).flip(3)) / 2
    torch.testing.assert_close(got, expected)


def test_an_identity_model_leaves_the_images_untouched():
    x = torch.randn(1, 2, 4, 6)
    before = x.clone()
    augmented_logits(nn.Identity(), x, transforms=True)
    assert torch.equal(x, before)


def test_check_transforms_names_and_errors():
    assert check_transforms(False) == ()
    assert check_transforms(True) == DIHEDRAL
    assert check_transforms("flips") == FLIPS
    assert check_transforms(["rot90", "identity"]) == ("rot90", "identity")
    with pytest.raises(ValueError, match=r"TTA transform must be one of .*got 'rot45'"):
        check_transforms(["rot45"])
    with pytest.raises(ValueError, match=r"^tta must be False, True, 'dihedral', 'flips' or a"):
        check_transforms("mirror")
    with pytest.raises(ValueError, match=r"^TTA transforms must be distinct"):
        check_transforms(["hflip", "hflip"])
    with pytest.raises(ValueError, match=r"^average must be one of"):
        augmented_logits(nn.Identity(), grid(), average="median")


def test_tiled_prediction_with_tta_uses_the_transforms_per_tile():
    torch.manual_seed(0)
    model = create_model("patch_classifier", num_classes=3, in_channels=2, patch_size=13, width=4)
    image = torch.rand(2, 23, 19)
    with torch.no_grad():
        expected = manual_average(model.eval(), image[None])[0]
    # One tile covers the image, so per-tile TTA is whole-image TTA.
    got = predict(model, image, tile=64, tta=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
