"""Class masks drawn over images, and the image | target | prediction panels of a run.

Plain numpy and Pillow: each class has a colour from a fixed qualitative palette, blended
with the image at ``alpha``; pixels of ``ignore_index`` and of the ``background`` class (when
given) keep the image as it is.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from pixelwise._checks import message
from pixelwise._files import write_bytes_atomic

# Distinct, readable colours (RGB); classes beyond the list cycle through it.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def class_colors(num_classes: int) -> np.ndarray:
    """One RGB colour per class from :data:`PALETTE`.

    Shape:
        output: (K, 3) uint8
    """
    return np.array([PALETTE[i % len(PALETTE)] for i in range(num_classes)], dtype=np.uint8)


def to_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image in [0, 1] as uint8 RGB: grey is repeated, more than 3 channels keep the first 3.

    Shape:
        image: (C, H, W) tensor or array (channels first), or (H, W); output: (H, W, 3) uint8.
    """
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else image
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]  # (1, H, W)
    if array.ndim != 3:
        raise ValueError(message("image", "have shape (C, H, W) or (H, W)", array.shape))
    array = array[:3] if array.shape[0] >= 3 else np.repeat(array[:1], 3, axis=0)  # (3, H, W)
    return np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def overlay_mask(
    rgb: np.ndarray,
    mask: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    alpha: float = 0.45,
    background: int | None = None,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend each class's colour into ``rgb`` where ``mask`` holds that class.

    Shape:
        rgb: (H, W, 3) uint8; mask: (H, W) integer; output: (H, W, 3) uint8.
    """
    mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(message("mask", f"have the image's size {rgb.shape[:2]}", mask.shape))
    colors = class_colors(num_classes).astype(np.float32)  # (K, 3)
    tint = (mask >= 0) & (mask < num_classes)  # (H, W)
    if background is not None:
        tint &= mask != background
    if ignore_index is not None:
        tint &= mask != ignore_index
    out = rgb.astype(np.float32)
    out[tint] = (1 - alpha) * out[tint] + alpha * colors[mask[tint]]
    return np.rint(out).astype(np.uint8)


def save_overlay(
    path: str | Path,
    image: np.ndarray | torch.Tensor,
    prediction: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor | None = None,
    *,
    num_classes: int,
    background: int | None = None,
    ignore_index: int | None = 255,
    min_size: int = 192,
) -> Path:
    """Write image | target overlay | prediction overlay side by side as a PNG (atomically).

    Without ``target`` the panels are image | prediction. Small images are enlarged by an
    integer factor (nearest neighbour, at most 4×) until their shorter side reaches
    ``min_size``, so that single pixels stay visible.

    Shape:
        image: (C, H, W) in [0, 1]; prediction, target: (H, W) class indices.
    """
    from PIL import Image

    rgb = to_rgb(image)  # (H, W, 3)
    options = {"background": background, "ignore_index": ignore_index}
    panels = [rgb]
    if target is not None:
        panels.append(overlay_mask(rgb, target, num_classes, **options))
    panels.append(overlay_mask(rgb, prediction, num_classes, **options))
    factor = int(min(4, max(1, -(-min_size // min(rgb.shape[:2])))))
    panels = [p.repeat(factor, axis=0).repeat(factor, axis=1) for p in panels]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)  # white separator
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(row).save(buffer, format="PNG")
    return write_bytes_atomic(Path(path), buffer.getvalue())
