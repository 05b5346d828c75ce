"""Class colours for masks: a palette per class, colour masks and overlays on the image.

When the class names are CamVid's eleven (Sky … Bicyclist, compared without case), the palette
is the one the SegNet paper's figures use, so predictions look like the published ones.
Otherwise class ``i`` gets colour ``i`` of a fixed list of well-separated colours (Kelly's
colours of maximum contrast, without black and white); beyond that list, colours are spread
round the hue circle by the golden angle. Pixels equal to ``ignore_index`` are black in a colour
mask (CamVid's void colour) and left as the image in an overlay.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from pixelwise._checks import message

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
# SegNet's CamVid colours (its camvid11 palette), one per class in CAMVID_CLASSES order.
CAMVID_COLORS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
# Kelly (1965), colours of maximum contrast, in his order; white and black left out.
DISTINCT_COLORS = (
    (243, 195, 0),
    (135, 86, 146),
    (243, 132, 0),
    (161, 202, 241),
    (190, 0, 50),
    (194, 178, 128),
    (132, 132, 130),
    (0, 136, 86),
    (230, 143, 172),
    (0, 103, 165),
    (249, 147, 121),
    (96, 78, 151),
    (246, 166, 0),
    (179, 68, 108),
    (220, 211, 0),
    (136, 45, 23),
    (141, 182, 0),
    (101, 69, 34),
    (226, 88, 34),
    (43, 61, 38),
)
IGNORE_COLOR = (0, 0, 0)
_GOLDEN_ANGLE = 0.381966  # of a turn: successive hues never line up


def _is_camvid(names: Sequence[str]) -> bool:
    return [n.lower() for n in names] == [n.lower() for n in CAMVID_CLASSES]


def _spread_color(index: int) -> tuple[int, int, int]:
    hue = (index * _GOLDEN_ANGLE) % 1.0
    value = (0.95, 0.75, 0.55)[index % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, value)
    return round(r * 255), round(g * 255), round(b * 255)


def class_palette(classes: Sequence[str] | int) -> np.ndarray:
    """One colour per class: CamVid's for CamVid's class names, else a fixed distinct list.

    Args:
        classes: The class names, or the number of classes K.

    Shape:
        returns (K, 3) uint8.
    """
    wrong_type = isinstance(classes, bool | str) or not isinstance(classes, int | Sequence)
    if wrong_type or not classes or (isinstance(classes, int) and classes < 1):
        raise ValueError(
            message("classes", "be class names or a number of classes >= 1", repr(classes))
        )
    if not isinstance(classes, int) and _is_camvid([str(n) for n in classes]):
        return np.asarray(CAMVID_COLORS, dtype=np.uint8)
    count = classes if isinstance(classes, int) else len(classes)
    colors = [
        DISTINCT_COLORS[i] if i < len(DISTINCT_COLORS) else _spread_color(i) for i in range(count)
    ]
    return np.asarray(colors, dtype=np.uint8)


def _check_palette(palette: object) -> np.ndarray:
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] < 1:
        raise ValueError(
            message("palette", "have shape (K, 3)", f"shape {array.shape}", "use class_palette")
        )
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
        raise ValueError(message("palette", "hold integers in 0..255", f"dtype {array.dtype}"))
    return array.astype(np.uint8)


def _check_mask(mask: object, num_classes: int, ignore_index: int | None) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(
            message("mask", "be a 2-D integer array (H, W)", f"{array.dtype} shape {array.shape}")
        )
    bad = (array < 0) | (array >= num_classes)
    if ignore_index is not None:
        bad &= array != ignore_index
    if bad.any():
        shown = sorted(set(np.unique(array[bad]).tolist()))[:5]
        raise ValueError(
            message(
                "mask values",
                f"be classes 0..{num_classes - 1} or ignore_index {ignore_index}",
                f"values {shown}",
                "give a palette with a colour per class",
            )
        )
    return array


def colorize(
    mask: np.ndarray, palette: np.ndarray, *, ignore_index: int | None = 255
) -> np.ndarray:
    """Paint each class with its palette colour; ``ignore_index`` pixels are ``IGNORE_COLOR``.

    Shape:
        mask: (H, W) integer; palette: (K, 3); returns (H, W, 3) uint8.
    """
    palette = _check_palette(palette)
    mask = _check_mask(mask, len(palette), ignore_index)
    labelled = (mask >= 0) & (mask < len(palette))
    rgb = np.empty((*mask.shape, 3), dtype=np.uint8)  # (H, W, 3)
    rgb[...] = IGNORE_COLOR
    rgb[labelled] = palette[mask[labelled]]
    return rgb


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """An image as 8-bit RGB: uint8 kept, floats in [0, 1] scaled, grey repeated.

    Images with 2 or more than 3 channels are shown as the grey mean of their channels.

    Shape:
        image: (H, W) or (H, W, C); returns (H, W, 3) uint8.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]  # (H, W, 1)
    if array.ndim != 3:
        raise ValueError(message("image", "have shape (H, W) or (H, W, C)", array.shape))
    if array.dtype != np.uint8:
        array = np.rint(np.clip(array.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    if array.shape[-1] != 3:
        grey = array.mean(axis=-1, keepdims=True) if array.shape[-1] != 1 else array
        array = np.repeat(np.rint(grey).astype(np.uint8), 3, axis=-1)  # (H, W, 3)
    return array


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    *,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend the class colours over the image; ``ignore_index`` pixels show the image alone.

    Args:
        image: uint8, or float in [0, 1]; grey, RGB or any channels (shown as grey).
        mask: Classes in ``[0, K)`` or ``ignore_index``.
        palette: (K, 3) colours, e.g. from :func:`class_palette`.
        alpha: Opacity of the colours, in [0, 1].

    Shape:
        image: (H, W) or (H, W, C); mask: (H, W); returns (H, W, 3) uint8.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(message("alpha", "lie in [0, 1]", repr(alpha)))
    base = as_rgb8(image)
    colors = colorize(mask, palette, ignore_index=ignore_index)
    if base.shape[:2] != colors.shape[:2]:
        raise ValueError(
            message("mask", f"have the image's size {base.shape[:2]}", colors.shape[:2])
        )
    labelled = (np.asarray(mask) >= 0) & (np.asarray(mask) < len(palette))
    blend = (1 - alpha) * base + alpha * colors.astype(np.float64)
    out = np.where(labelled[..., None], np.rint(blend), base)
    return out.astype(np.uint8)
