"""Small colour maps in numpy: scalar images to RGB without a plotting library.

Each map is a handful of anchor colours at evenly spaced positions, linearly interpolated into
a lookup table. ``viridis`` follows the perceptually ordered blue-green-yellow map (dark to
bright, readable in greyscale print); ``jet`` the blue-cyan-yellow-red rainbow of the U-Net
paper's figure 3; ``gray`` black to white.
"""

from __future__ import annotations

import numpy as np

from pixelwise._checks import check_choice, check_positive_int, message

# Anchor colours (uint8 RGB) at positions 0, 1/(m-1), ..., 1.
_ANCHORS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "viridis": (
        (68, 1, 84),
        (72, 40, 120),
        (62, 73, 137),
        (49, 104, 142),
        (38, 130, 142),
        (31, 158, 137),
        (53, 183, 121),
        (110, 206, 88),
        (253, 231, 37),
    ),
    "jet": (
        (0, 0, 128),
        (0, 0, 255),
        (0, 128, 255),
        (0, 255, 255),
        (128, 255, 128),
        (255, 255, 0),
        (255, 128, 0),
        (255, 0, 0),
        (128, 0, 0),
    ),
    "gray": ((0, 0, 0), (255, 255, 255)),
}

COLORMAPS = tuple(_ANCHORS)

# Colour of NaN and infinite values.
BAD_COLOR = (0, 0, 0)


def colormap_lut(name: str = "viridis", size: int = 256) -> np.ndarray:
    """Return the lookup table of colour map ``name`` with ``size`` entries.

    Entry 0 is the first anchor colour and entry ``size - 1`` the last.

    Shape:
        output: (size, 3) uint8
    """
    name = check_choice("colormap", name, COLORMAPS)
    size = check_positive_int("size", size, minimum=2)
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)  # (m, 3)
    where = np.linspace(0.0, 1.0, len(anchors))  # (m,)
    t = np.linspace(0.0, 1.0, size)  # (size,)
    channels = [np.interp(t, where, anchors[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=1)).astype(np.uint8)  # (size, 3)


def _limit(given: float | None, finite_values: np.ndarray, pick) -> float:
    """Return ``given``, or ``pick`` of the finite values (0 when there are none)."""
    if given is not None:
        return float(given)
    return float(pick(finite_values)) if finite_values.size else 0.0


def apply_colormap(
    values: np.ndarray,
    *,
    name: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Map a scalar image to RGB through colour map ``name``.

    Values are scaled linearly from ``[vmin, vmax]`` (default: the finite minimum and maximum)
    to the 256-entry table and clipped outside it; NaN and infinite values get ``BAD_COLOR``.
    A constant image (``vmax == vmin``) maps to the first colour.

    Raises:
        ValueError: ``values`` not 2-D, or ``vmax < vmin``.

    Shape:
        values: (H, W); output: (H, W, 3) uint8
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(message("values", "be a 2-D image (H, W)", f"shape {values.shape}"))
    lut = colormap_lut(name)  # (256, 3)
    finite = np.isfinite(values)
    lo = _limit(vmin, values[finite], np.min)
    hi = _limit(vmax, values[finite], np.max)
    if hi < lo:
        raise ValueError(message("vmax", f"be >= vmin = {lo}", hi, "swap vmin and vmax"))
    span = hi - lo if hi > lo else 1.0
    scaled = np.clip((np.where(finite, values, lo) - lo) / span, 0.0, 1.0)  # (H, W)
    rgb = lut[np.rint(scaled * (len(lut) - 1)).astype(np.intp)]  # (H, W, 3)
    rgb[~finite] = BAD_COLOR
    return rgb
