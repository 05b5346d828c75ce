"""Class colours for masks: a palette per class, colour masks, overlays and the run's panels.

This is the one palette of pixelwise: ``pixelwise predict`` (colour masks and overlays) and the
training overlays of a run (:func:`save_overlay`) both draw with :func:`class_palette`, so a class
has the same colour everywhere.

When the class names are CamVid's eleven (Sky … Bicyclist, compared without case), the palette
is the one the SegNet paper's figures use, so predictions look like the published ones.
Otherwise class ``i`` gets colour ``i`` of a fixed list of well-separated colours (Kelly's
colours of maximum contrast, without black and white); beyond that list, colours are spread
round the hue circle by the golden angle. Pixels equal to ``ignore_index`` are black in a colour
mask (CamVid's void colour) and left as the image in an overlay.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelwise._checks import message
from pixelwise._files import write_bytes_atomic

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
# Panel titles and legend entries (pixels): strip heights, swatch side and spacing.
_TITLE_HEIGHT = 18
_LINE_HEIGHT = 18
_SWATCH = 12
_SPACE = 6
_PANEL_GAP = 4
_WHITE = (255, 255, 255)
_INK = (0, 0, 0)
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


def to_rgb(image: object) -> np.ndarray:
    """A channels-first image (a tensor or an array) as 8-bit RGB, drawn as :func:`as_rgb8` does.

    Shape:
        image: (C, H, W) or (H, W), float in [0, 1] or uint8; returns (H, W, 3) uint8.
    """
    if hasattr(image, "detach"):  # a torch tensor; torch itself is not needed to draw
        image = image.detach().cpu().float().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]  # (1, H, W)
    if array.ndim != 3:
        raise ValueError(message("image", "have shape (C, H, W) or (H, W)", array.shape))
    return as_rgb8(array.transpose(1, 2, 0))


def check_alpha(alpha: object) -> float:
    """An overlay opacity: a number in [0, 1]; returns it."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(message("alpha", "lie in [0, 1]", repr(alpha)))
    return float(alpha)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    *,
    ignore_index: int | None = 255,
    background: int | None = None,
) -> np.ndarray:
    """Blend the class colours over the image; ``ignore_index`` pixels show the image alone.

    Pixels of class ``background`` (when given) show the image alone too, so that only the
    objects are tinted.

    Args:
        image: uint8, or float in [0, 1]; grey, RGB or any channels (shown as grey).
        mask: Classes in ``[0, K)`` or ``ignore_index``.
        palette: (K, 3) colours, e.g. from :func:`class_palette`.
        alpha: Opacity of the colours, in [0, 1].
        background: A class left untinted, or None to tint every class.

    Shape:
        image: (H, W) or (H, W, C); mask: (H, W); returns (H, W, 3) uint8.
    """
    check_alpha(alpha)
    base = as_rgb8(image)
    colors = colorize(mask, palette, ignore_index=ignore_index)
    if base.shape[:2] != colors.shape[:2]:
        raise ValueError(
            message("mask", f"have the image's size {base.shape[:2]}", colors.shape[:2])
        )
    labelled = (np.asarray(mask) >= 0) & (np.asarray(mask) < len(palette))
    if background is not None:
        labelled &= np.asarray(mask) != background
    blend = (1 - alpha) * base + alpha * colors.astype(np.float64)
    out = np.where(labelled[..., None], np.rint(blend), base)
    return out.astype(np.uint8)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` under a white strip with ``title`` centred in it.

    Shape:
        panel: (H, W, 3) uint8; returns (H + title height, W, 3) uint8.
    """
    strip = Image.new("RGB", (panel.shape[1], _TITLE_HEIGHT), _WHITE)
    centre = (panel.shape[1] / 2, _TITLE_HEIGHT / 2)
    ImageDraw.Draw(strip).text(centre, title, fill=_INK, font=_font(), anchor="mm")
    return np.concatenate([np.asarray(strip), panel], axis=0)


def legend(
    class_names: Sequence[str], palette: np.ndarray, width: int, *, skip: int | None = None
) -> np.ndarray:
    """A white strip of class swatches, each followed by its name, wrapped to ``width``.

    Args:
        class_names: One name per palette colour.
        palette: (K, 3) colours, e.g. from :func:`class_palette`.
        width: The strip's width in pixels; entries wrap onto further lines.
        skip: A class left out (the untinted background of an overlay), or None.

    Shape:
        palette: (K, 3); returns (H, width, 3) uint8.
    """
    palette = _check_palette(palette)
    if len(class_names) != len(palette):
        raise ValueError(
            message("class_names", f"name the palette's {len(palette)} classes", len(class_names))
        )
    font = _font()
    places, x, y = [], _SPACE, _SPACE
    for index, name in enumerate(class_names):
        if index == skip:
            continue
        size = _SWATCH + _SPACE + round(font.getlength(str(name))) + 2 * _SPACE
        if x > _SPACE and x + size > width:
            x, y = _SPACE, y + _LINE_HEIGHT  # wrap: the next entry starts a new line
        places.append((x, y, index, str(name)))
        x += size
    canvas = Image.new("RGB", (width, y + _LINE_HEIGHT + _SPACE), _WHITE)
    draw = ImageDraw.Draw(canvas)
    for x, y, index, name in places:
        color = tuple(int(c) for c in palette[index])
        draw.rectangle([x, y, x + _SWATCH - 1, y + _SWATCH - 1], fill=color)
        where = (x + _SWATCH + _SPACE, y + _SWATCH / 2)
        draw.text(where, name, fill=_INK, font=font, anchor="lm")
    return np.asarray(canvas)


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            message("class_names", f"name the {num_classes} classes", len(class_names))
        )
    return [str(name) for name in class_names]


def save_overlay(
    path: str | Path,
    image: object,
    prediction: object,
    target: object | None = None,
    *,
    num_classes: int,
    background: int | None = None,
    ignore_index: int | None = 255,
    min_size: int = 192,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write titled panels image | truth | prediction and a class legend as a PNG (atomically).

    Without ``target`` the panels are image | prediction. Classes get their
    :func:`class_palette` colour (from ``class_names`` when given, so CamVid's names get CamVid's
    colours, as in ``pixelwise predict``). Small images are enlarged by an integer factor
    (nearest neighbour, at most 4×) until their shorter side reaches ``min_size``, so that single
    pixels stay visible.

    Args:
        class_names: One name per class for the palette and the legend; default "0".."K-1".
        alpha: Opacity of the class colours over the image, in [0, 1].

    Shape:
        image: (C, H, W) in [0, 1]; prediction, target: (H, W) class indices (tensors or arrays).
    """
    names = _class_names(class_names, num_classes)
    palette = class_palette(names if class_names is not None else num_classes)
    rgb = to_rgb(image)  # (H, W, 3)
    options = {"ignore_index": ignore_index, "background": background}
    panels = [("image", rgb)]
    if target is not None:
        panels.append(("truth", overlay(rgb, _as_array(target), palette, alpha, **options)))
    panels.append(("prediction", overlay(rgb, _as_array(prediction), palette, alpha, **options)))
    factor = int(min(4, max(1, -(-min_size // min(rgb.shape[:2])))))
    titled = [_titled(p.repeat(factor, axis=0).repeat(factor, axis=1), t) for t, p in panels]
    gap = np.full((titled[0].shape[0], _PANEL_GAP, 3), 255, dtype=np.uint8)  # white separator
    row = np.concatenate([p for panel in titled for p in (panel, gap)][:-1], axis=1)
    key = legend(names, palette, row.shape[1], skip=background)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([row, key], axis=0)).save(buffer, format="PNG")
    return write_bytes_atomic(Path(path), buffer.getvalue())


def _as_array(mask: object) -> np.ndarray:
    return mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
