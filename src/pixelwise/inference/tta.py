"""Test-time augmentation: the eight symmetries of the square (flips, 90° rotations and their
compositions), each undone on the logits, averaged.

A segmentation network is not equivariant to these transforms by construction; predicting
each transformed image, mapping each prediction back with the inverse transform and averaging
is the usual test-time ensemble (e.g. the U-Net paper's successors, nnU-Net's mirroring).
Averaging happens in logit space by default: it is linear, so it commutes with the weighted
blending of overlapping tiles (:mod:`pixelwise.inference.tiling`). ``average="probabilities"``
averages soft-max probabilities instead and returns their logarithm, which are again logits
(``softmax(log p) = p``).

Everything here works on (N, C, H, W) batches and on models whose output is smaller than
their input by a centred margin (U-Net with ``padding="valid"``): every transform maps the
centre of the input onto the centre of the output, so its inverse on the output is the same
transform undone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pixelwise._checks import check_choice, message

Forward = Callable[[torch.Tensor], torch.Tensor]

#: The eight dihedral transforms of the square, by name; "identity" first.
DIHEDRAL = (
    "identity",
    "hflip",
    "vflip",
    "rot90",
    "rot180",
    "rot270",
    "transpose",
    "antitranspose",
)
#: The transforms that keep H and W in place (no axis swap): identity and the flips.
FLIPS = ("identity", "hflip", "vflip", "rot180")
AVERAGES = ("logits", "probabilities")
_H, _W = -2, -1


def apply_transform(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply one dihedral transform to the last two axes.

    ``rot90`` turns counter-clockwise (as :func:`torch.rot90`); ``transpose`` swaps H and W;
    ``antitranspose`` mirrors across the other diagonal.

    Shape:
        x: (..., H, W) -> (..., H, W), or (..., W, H) for rot90, rot270 and the transposes.
    """
    check_choice("TTA transform", name, DIHEDRAL)
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(_W)
    if name == "vflip":
        return x.flip(_H)
    if name == "transpose":
        return x.transpose(_H, _W)
    if name == "antitranspose":
        return x.flip(_H, _W).transpose(_H, _W)
    quarter_turns = {"rot90": 1, "rot180": 2, "rot270": 3}[name]
    return torch.rot90(x, quarter_turns, dims=(_H, _W))


def invert_transform(y: torch.Tensor, name: str) -> torch.Tensor:
    """Undo :func:`apply_transform`: ``invert_transform(apply_transform(x, t), t) == x``.

    Shape:
        y: (..., H', W') in the transformed frame -> (..., H'', W'') in the original frame.
    """
    inverse = {"rot90": "rot270", "rot270": "rot90"}.get(name, name)  # the rest are involutions
    return apply_transform(y, inverse)


def check_transforms(transforms: bool | str | Sequence[str]) -> tuple[str, ...]:
    """The transforms a ``tta`` argument names: False -> none, True -> all eight (:data:`DIHEDRAL`),
    ``"flips"`` -> :data:`FLIPS`, ``"dihedral"`` -> all eight, or a sequence of names."""
    if transforms is False or transforms is None:
        return ()
    if transforms is True or transforms == "dihedral":
        return DIHEDRAL
    if transforms == "flips":
        return FLIPS
    if isinstance(transforms, str) or not isinstance(transforms, Sequence) or not transforms:
        raise ValueError(
            message(
                "tta",
                "be False, True, 'dihedral', 'flips' or a non-empty list of transform names",
                repr(transforms),
                f"choose names from {list(DIHEDRAL)}",
            )
        )
    names = tuple(check_choice("TTA transform", str(t), DIHEDRAL) for t in transforms)
    if len(set(names)) != len(names):
        raise ValueError(message("TTA transforms", "be distinct", list(names)))
    return names


def augmented_logits(
    forward: Forward,
    images: torch.Tensor,
    *,
    transforms: bool | str | Sequence[str] = True,
    average: str = "logits",
) -> torch.Tensor:
    """The average of ``forward`` over transformed copies of ``images``, each mapped back.

    Args:
        forward: A model (or any callable) mapping images to logits, e.g. ``model`` in eval
            mode; its output may be smaller than its input by a centred margin.
        images: The batch to predict.
        transforms: See :func:`check_transforms` (default: all eight).
        average: ``"logits"`` (the mean of the logits) or ``"probabilities"`` (the log of the
            mean soft-max probability over the K classes).

    Returns:
        Logits in the frame of ``images``; the sum is accumulated in float32 or wider.

    Shape:
        images: (N, C, H, W) -> (N, K, H', W'), the shape ``forward(images)`` has.
    """
    names = check_transforms(transforms) or ("identity",)
    check_choice("average", average, AVERAGES)
    total = None
    for name in names:
        logits = invert_transform(forward(apply_transform(images, name)), name)
        term = logits.softmax(dim=1) if average == "probabilities" else logits
        if total is None:
            # A copy: the first term may be a view of the images (an identity-like model).
            total = term.to(torch.promote_types(term.dtype, torch.float32), copy=True)
        else:
            total.add_(term)
    mean = total.div_(len(names))
    if average == "probabilities":
        return mean.clamp_min_(torch.finfo(mean.dtype).tiny).log_()  # finite where p underflows
    return mean
