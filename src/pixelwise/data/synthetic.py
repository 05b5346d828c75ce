"""Built-in data: seeded, procedural images of touching, irregular nuclei-like blobs.

Each image holds a few isolated blobs and several touching pairs on an uneven background
(illumination gradient, smooth texture, pixel noise, blur). Touching blobs are separated in the
labels by a one-pixel background gap, and in the image that gap is only faintly darker than
the blobs: telling two touching blobs apart needs fine detail (skip connections) and a loss
that weighs the gaps (the U-Net weight map). 64 training images of 96×96 train a small U-Net
on two CPU cores in about a minute.

Every image comes from its own generator seeded by ``(seed, split, index)``: the same seed
gives identical arrays, and the training and validation images never coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pixelwise._checks import check_choice, check_positive_int, message
from pixelwise.data.datasets import (
    Sample,
    SegmentationDataset,
    Transform,
    WeightCache,
    WeightFn,
    default_weight_fn,
    separate_touching,
)
from pixelwise.data.encoding import MaskEncoding

SPLITS = ("train", "val", "test")
CLASS_NAMES = ("background", "nucleus")


@dataclass(frozen=True)
class BlobStyle:
    """Knobs of the generator; the defaults make the task hard but learnable.

    Attributes:
        radius: Range of blob radii as a fraction of the image side.
        pairs: Range (inclusive) of touching pairs per image.
        singles: Range (inclusive) of isolated blobs per image.
        border_darkening: Fraction of the blob's brightness removed on the gap between
            touching blobs, before the blur (small: the gap is faint).
        noise: Standard deviation of the pixel noise.
        blur: Gaussian blur sigma, pixels.
    """

    radius: tuple[float, float] = (0.07, 0.11)
    pairs: tuple[int, int] = (2, 3)
    singles: tuple[int, int] = (2, 4)
    border_darkening: float = 0.3
    noise: float = 0.03
    blur: float = 0.8


def _place_blobs(rng: np.random.Generator, size: int, style: BlobStyle) -> list[tuple]:
    """Centres and radii: touching pairs first, then isolated blobs that touch nothing."""
    blobs: list[tuple[float, float, float]] = []

    def free(cy: float, cx: float, r: float) -> bool:
        inside = r + 2 <= cy <= size - r - 3 and r + 2 <= cx <= size - r - 3
        return inside and all(np.hypot(cy - y, cx - x) > r + q + 3 for y, x, q in blobs)

    lo, hi = style.radius[0] * size, style.radius[1] * size
    for _ in range(int(rng.integers(style.pairs[0], style.pairs[1] + 1))):
        for _attempt in range(20):
            r1, r2 = rng.uniform(lo, hi, 2)
            cy, cx = rng.uniform(0, size, 2)
            angle = rng.uniform(0, 2 * np.pi)
            step = 0.85 * (r1 + r2)  # overlap a little, so the pair shares a border
            cy2, cx2 = cy + step * np.sin(angle), cx + step * np.cos(angle)
            if free(cy, cx, r1) and free(cy2, cx2, r2):
                blobs += [(cy, cx, r1), (cy2, cx2, r2)]
                break
    for _ in range(int(rng.integers(style.singles[0], style.singles[1] + 1))):
        for _attempt in range(20):
            r = rng.uniform(lo, hi)
            cy, cx = rng.uniform(0, size, 2)
            if free(cy, cx, r):
                blobs.append((cy, cx, r))
                break
    return blobs


def _blob_labels(rng: np.random.Generator, size: int, blobs: list[tuple]) -> np.ndarray:
    """Irregular blobs: each radius wobbles with angle; overlaps go to the relatively nearer."""
    best = np.full((size, size), np.inf)
    labels = np.zeros((size, size), dtype=np.int64)
    for label, (cy, cx, r) in enumerate(blobs, start=1):
        amplitudes = rng.uniform(0.0, 0.12, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        # The wobble stays below 1.36 r, so the blob fits in this box; the rest is untouched.
        reach = int(np.ceil(1.4 * r)) + 1
        top, left = max(int(cy) - reach, 0), max(int(cx) - reach, 0)
        box = np.s_[top : min(int(cy) + reach + 1, size), left : min(int(cx) + reach + 1, size)]
        yy, xx = np.mgrid[box].astype(np.float64)
        theta = np.arctan2(yy - cy, xx - cx)
        wobble = 1.0 + sum(
            a * np.cos(m * theta + p) for a, m, p in zip(amplitudes, (2, 3, 4), phases, strict=True)
        )
        rho = np.hypot(yy - cy, xx - cx) / (r * wobble)  # < 1 inside the blob
        closer = (rho < 1.0) & (rho < best[box])
        labels[box][closer] = label
        best[box] = np.where(closer, rho, best[box])
    return labels


def _render(
    rng: np.random.Generator, labels: np.ndarray, gaps: np.ndarray, style: BlobStyle
) -> np.ndarray:
    """Background gradient and texture, blobs of varied brightness, faint gaps, blur, noise."""
    size = labels.shape[0]
    ramp = np.linspace(-0.5, 0.5, size)
    gy, gx = rng.uniform(-0.2, 0.2, 2)
    image = 0.25 + gy * ramp[:, None] + gx * ramp[None, :]  # (H, W) illumination gradient
    image = image + 0.06 * ndimage.gaussian_filter(rng.standard_normal(labels.shape), 3.0) * 3
    brightness = rng.uniform(0.35, 0.6, int(labels.max()) + 1)
    brightness[0] = 0.0
    texture = 1.0 + 0.08 * ndimage.gaussian_filter(rng.standard_normal(labels.shape), 1.5) * 2
    image = image + brightness[labels] * texture * (1.0 - style.border_darkening * gaps)
    image = ndimage.gaussian_filter(image, style.blur)
    image = image + style.noise * rng.standard_normal(labels.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def make_blobs(
    size: int = 96,
    *,
    seed: int = 0,
    index: int = 0,
    split: str = "train",
    style: BlobStyle | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its instance labels (touching blobs already separated).

    Returns:
        image: float32 in [0, 1]; instances: int64, 0 background, 1..N one blob each.

    Shape:
        image: (H, W) with H = W = ``size``; instances: (H, W).
    """
    check_positive_int("size", size, minimum=32)
    check_choice("split", split, SPLITS)
    style = style or BlobStyle()
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    touching = _blob_labels(rng, size, _place_blobs(rng, size, style))
    instances = separate_touching(touching)
    gaps = ((touching > 0) & (instances == 0)).astype(np.float64)
    return _render(rng, touching, gaps, style), instances


class SyntheticNuclei(SegmentationDataset):
    """The built-in data set: :func:`make_blobs` images, generated once when built.

    Samples hold ``image`` (1, H, W), ``mask`` (0 background, 1 nucleus), ``instances`` and,
    with ``weights``, the U-Net weight map (computed on first access, then cached).

    Args:
        num_images: How many images.
        size: Image side, pixels.
        seed: Same seed, same images.
        split: ``"train"``, ``"val"`` or ``"test"``: disjoint streams of images.
        weights: Add the ``weight`` map to each sample.
        weight_fn: ``instances → weights``; default the paper's U-Net weight map.
        style: Generator knobs.
        transform: Applied to each sample by ``__getitem__``.

    Shape:
        sample["image"]: (1, H, W) float32; sample["mask"], ["instances"], ["weight"]: (H, W).
    """

    def __init__(
        self,
        num_images: int = 64,
        *,
        size: int = 96,
        seed: int = 0,
        split: str = "train",
        weights: bool = True,
        weight_fn: WeightFn | None = None,
        style: BlobStyle | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(MaskEncoding.index(2), CLASS_NAMES, transform)
        check_positive_int("num_images", num_images)
        self.split, self.seed = split, seed
        pairs = [
            make_blobs(size, seed=seed, index=i, split=split, style=style)
            for i in range(num_images)
        ]
        self.images = np.stack([p[0] for p in pairs])  # (N, H, W)
        self.instances = np.stack([p[1] for p in pairs])  # (N, H, W)
        # The labels are separated already; the cache only adds the weight maps.
        self.weights = WeightCache((weight_fn or default_weight_fn) if weights else None, False)

    def __len__(self) -> int:
        return len(self.images)

    def sample_id(self, index: int) -> str:
        return f"{self.split}_{index:03d}"

    def load_sample(self, index: int) -> Sample:
        target = self.weights.target(index, self.instances[index])
        image = torch.from_numpy(self.images[index][None].copy())  # (1, H, W)
        return {"image": image, **target, "path": f"synthetic:{self.split}:{self.seed}:{index}"}


def synthetic_splits(
    num_train: int = 64,
    num_val: int = 16,
    *,
    size: int = 96,
    seed: int = 0,
    weights: bool = True,
    transforms: Sequence[Transform | None] = (None, None),
) -> tuple[SyntheticNuclei, SyntheticNuclei]:
    """The built-in training and validation sets, with their transforms (train, val)."""
    if len(transforms) != 2:
        raise ValueError(message("transforms", "be a (train, val) pair", len(transforms)))
    train = SyntheticNuclei(
        num_train, size=size, seed=seed, split="train", weights=weights, transform=transforms[0]
    )
    val = SyntheticNuclei(
        num_val, size=size, seed=seed, split="val", weights=weights, transform=transforms[1]
    )
    return train, val
