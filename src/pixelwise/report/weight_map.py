"""The U-Net weight map drawn as a colour image, and the PNG that ``pixelwise weightmap`` writes.

The map itself is computed by :mod:`pixelwise.losses.weight_map`; this module only renders it
(through :mod:`pixelwise.report.colormap`) and reads and writes the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelwise._checks import message
from pixelwise._files import save_png_atomic
from pixelwise.data._io import read_labels
from pixelwise.losses.weight_map import unet_weight_map, weight_map_from_semantic
from pixelwise.report.colormap import apply_colormap

logger = logging.getLogger(__name__)


def weight_map_to_rgb(
    weights: np.ndarray,
    *,
    colormap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Render a weight map as a colour image, as in the U-Net paper's figure 3d.

    The map is scaled from ``[vmin, vmax]`` (default: its minimum and maximum) onto the colour
    map (``"viridis"``, ``"jet"`` or ``"gray"``; see :mod:`pixelwise.report.colormap`).

    Shape:
        weights: (H, W); output: (H, W, 3) uint8
    """
    return apply_colormap(weights, name=colormap, vmin=vmin, vmax=vmax)


def _check_out_path(mask: Path, out: Path) -> None:
    """The output must be a .png that is not the mask itself."""
    if out.suffix.lower() != ".png":
        raise ValueError(
            message("output path", "end in .png", repr(str(out)), "the map is written as PNG")
        )
    same = out.resolve() == mask.resolve() or (out.exists() and os.path.samefile(out, mask))
    if same:
        raise ValueError(
            message(
                "output path",
                "differ from the mask file",
                repr(str(out)),
                "choose another --out; the mask is never overwritten",
            )
        )


def save_weight_map_png(
    mask_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    semantic: bool = False,
    background: int = 0,
    connectivity: int = 1,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] = "balanced",
    border: str = "background",
    colormap: str = "viridis",
) -> np.ndarray:
    """Read a label PNG, compute its U-Net weight map and save it as a colour PNG.

    What ``pixelwise weightmap MASK --out PNG`` runs. The output is written atomically and is
    never the input file.

    Args:
        mask_path: instance labels (0 = background), or a semantic mask with ``semantic=True``
            whose connected components (``connectivity``) of non-``background`` values become
            the objects.
        out_path: the colour PNG to write (must end in .png; missing folders are created).
        w0, sigma, class_weights, border: as in :func:`unet_weight_map`.
        colormap: ``"viridis"``, ``"jet"`` or ``"gray"``.

    Returns:
        The weight map itself (float32), for summaries.

    Raises:
        FileNotFoundError: the mask does not exist.
        ValueError: the mask is unreadable or not a label image, the output path is the mask
            or not a .png, or a parameter is invalid; each message names the file or value.

    Shape:
        output: (H, W) for a mask of H × W pixels
    """
    mask_path, out_path = Path(mask_path), Path(out_path)
    _check_out_path(mask_path, out_path)
    labels = read_labels(mask_path, "mask file")
    if semantic:
        weights = weight_map_from_semantic(
            labels,
            background=background,
            connectivity=connectivity,
            w0=w0,
            sigma=sigma,
            class_weights=class_weights,
            border=border,
        )
    else:
        weights = unet_weight_map(
            labels, w0=w0, sigma=sigma, class_weights=class_weights, border=border
        )
    save_png_atomic(out_path, weight_map_to_rgb(weights, colormap=colormap))
    logger.info(
        "weight map of %s (%.3g to %.3g) written to %s",
        mask_path,
        weights.min(),
        weights.max(),
        out_path,
    )
    return weights


def describe_labels(labels: np.ndarray, *, semantic: bool, background: int = 0) -> str:
    """How ``pixelwise weightmap`` read a label image, in one line: as instance labels (each
    non-zero value one object) or as a semantic mask (connected components of each class).
    A two-valued image read as instances (e.g. a 0/255 mask) gets the hint to pass
    ``--semantic``: every foreground pixel would otherwise be one object."""
    values = np.unique(labels)
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    if semantic:
        return f"read as a semantic mask (values {shown}; background {background})"
    objects = int((values != 0).sum())
    line = (
        f"read as instance labels: {objects} object{'s' if objects != 1 else ''} (values {shown})"
    )
    if objects == 1:
        line += "; a semantic mask (e.g. 0/255) needs --semantic to separate its objects"
    return line
