"""Images for style transfer: reading and resizing, atomic PNG writing, the trace strip.

Images are float tensors in [0, 1], (C, H, W) with C = 3 (RGB) or 1 (grey, for feature
networks trained on one channel; colour images are converted with Pillow's ITU-R 601 luma).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise._checks import message
from pixelwise._files import save_png_atomic
from pixelwise.data._io import open_pil

GAP = 4  # pixels of white between the frames of a trace strip


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise ValueError(
            message(
                "image channels",
                "be 1 (grey) or 3 (RGB), the feature network's in_channels",
                channels,
                "use a feature network that takes grey or RGB images",
            )
        )
    return "L" if channels == 1 else "RGB"


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(h, w)`` with the longer side ``long_side`` and the aspect ratio kept (each side >= 1)."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(
    path: str | Path,
    *,
    channels: int = 3,
    long_side: int | None = None,
    what: str = "image",
) -> torch.Tensor:
    """Read an image file as floats in [0, 1], resized (Lanczos) so its longer side is ``long_side``.

    Raises:
        FileNotFoundError: ``path`` is missing (the message names it).
        ValueError: the file is not a readable image, or ``channels`` is not 1 or 3.

    Shape:
        returns (C, H, W) float32, C = ``channels``.
    """
    mode = _mode(channels)
    image = open_pil(Path(path), what).convert(mode)
    if long_side is not None:
        height, width = scaled_size(image.height, image.width, long_side)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # (H, W, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (C, H, W)


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize an image to exactly ``height × width`` (bicubic, antialiased, clamped to [0, 1]).

    Shape:
        image: (C, H, W) -> (C, height, width).
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    resized = torch.nn.functional.interpolate(
        image[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )  # (1, C, height, width)
    return resized[0].clamp(0.0, 1.0)  # (C, height, width)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Pixels in [0, 255] for Pillow.

    Shape:
        image: (C, H, W) in [0, 1] -> (H, W, 3) or (H, W) for C = 1.
    """
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pixels = pixels.transpose(1, 2, 0)  # (H, W, C)
    return pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write ``image`` as a PNG through a temporary file in the same folder, then rename.

    Shape:
        image: (C, H, W) in [0, 1], C = 1 or 3.
    """
    return save_png_atomic(path, to_uint8(image))


def trace_strip(frames: Sequence[torch.Tensor], height: int = 160) -> torch.Tensor:
    """Frames side by side at one height (at most ``height``), white gaps between them.

    Shape:
        frames: F × (C, H, W) -> (C, h, F·w + (F − 1)·GAP), h = min(H, height).
    """
    if not frames:
        raise ValueError(message("trace frames", "hold at least one image", "none"))
    channels, frame_h, frame_w = frames[0].shape
    h = min(frame_h, height)
    w = max(1, round(frame_w * h / frame_h))
    gap = torch.ones(channels, h, GAP)  # (C, h, GAP)
    pieces: list[torch.Tensor] = []
    for frame in frames:
        pieces += [resize_image(frame.detach().cpu(), h, w), gap]  # (C, h, w), (C, h, GAP)
    return torch.cat(pieces[:-1], dim=2)  # (C, h, F·w + (F − 1)·GAP)


def trace_path(out: str | Path) -> Path:
    """``OUT_trace.png`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_trace.png")


def check_outputs(
    outputs: Sequence[str | Path], inputs: Sequence[str | Path], *, overwrite: bool
) -> None:
    """Refuse to write over an input, or over an existing output without ``overwrite``.

    Raises:
        ValueError: an output is one of the inputs.
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    sources = {Path(p).resolve() for p in inputs}
    for out in map(Path, outputs):
        if out.suffix.lower() != ".png":
            raise ValueError(message("output", "be a .png file", str(out), "name it e.g. out.png"))
        if out.resolve() in sources:
            raise ValueError(
                message(
                    f"output {out}",
                    "differ from the input images",
                    "an input",
                    "choose another --out",
                )
            )
        if out.exists() and not overwrite:
            raise FileExistsError(
                message(
                    f"output {out}",
                    "not exist already",
                    "an existing file",
                    "pass --overwrite to replace it",
                )
            )
