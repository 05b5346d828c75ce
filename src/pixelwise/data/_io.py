"""Reading image and mask files, with one-line errors that name the file.

Pillow reads PNG, BMP, GIF and JPEG images; tifffile reads TIFF (16-bit, multi-channel and
multi-page). Masks are never read from JPEG: lossy compression changes label values along edges.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from pixelwise._checks import check_label_image, message

if TYPE_CHECKING:  # annotation only: encoding reads palette files through this module
    from pixelwise.data.encoding import MaskEncoding

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
# What Pillow and tifffile raise on damaged files; FileNotFoundError is handled before.
_READ_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


def check_exists(path: Path, what: str) -> Path:
    """Raise FileNotFoundError naming ``path`` unless it is a file."""
    if not path.is_file():
        actual = "a folder" if path.is_dir() else "a missing file"
        raise FileNotFoundError(message(f"{what} {path}", "be an existing file", actual))
    return path


def refuse_lossy_mask(path: Path) -> None:
    """Refuse a JPEG mask by its name, before anything is read."""
    if path.suffix.lower() in LOSSY_SUFFIXES:
        raise ValueError(_lossy_message(path))


def _lossy_message(path: Path) -> str:
    return message(
        f"mask {path}",
        "be stored losslessly (PNG, TIFF or BMP)",
        "JPEG",
        "JPEG compression changes label values along edges; export the masks as PNG",
    )


def _unreadable(path: Path, what: str, err: BaseException) -> ValueError:
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(
        message(
            f"{what} {path}",
            "be a readable, complete image file",
            f"{type(err).__name__}: {detail}",
            "re-export the file or remove it from the data set",
        )
    )


def open_pil(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image with Pillow; damaged or truncated files, animations
    (only their first frame would be read) and images over :func:`max_pixels` raise ValueError."""
    check_exists(path, what)
    try:
        image = _open_header(path)
    except _READ_ERRORS as err:
        raise _unreadable(path, what, err) from err
    with image:
        check_pixel_count(path, what, (image.height, image.width))  # before any pixel is decoded
        _refuse_animation(image, path, what)
        try:
            image.load()
            # load() leaves the file handle to the context manager; copy keeps the pixels.
            decoded = image.copy()
        except _READ_ERRORS as err:
            raise _unreadable(path, what, err) from err
    decoded.format = image.format  # copy() drops the format, which names JPEG masks
    return decoded


def _open_header(path: Path) -> Image.Image:
    """``Image.open`` (the header only) without Pillow's size guard, which
    :func:`check_pixel_count` applies with the size in its message; the guard stays on at
    twice the limit for what Pillow decodes later (a GIF's frames)."""
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = max_pixels()


def _refuse_animation(image: Image.Image, path: Path, what: str) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ValueError(
            message(
                f"{what} {path}",
                "be a single image",
                f"an animation of {frames} frames ({image.format})",
                "save the frame to use as its own PNG",
            )
        )


EXIF_ORIENTATION = 0x0112


def _upright(image: Image.Image, path: Path, what: str, *, labels: bool) -> Image.Image:
    """The image as viewers show it (its EXIF orientation applied); labels must need none,
    since a mask drawn in a viewer and turned on reading would no longer be what was drawn."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in (None, 1):
        return image
    if labels:
        raise ValueError(
            message(
                f"{what} {path}",
                "be stored upright (EXIF orientation 1)",
                f"EXIF orientation {orientation}",
                "save the mask again without the orientation tag",
            )
        )
    upright = ImageOps.exif_transpose(image)
    upright.format = image.format
    return upright


class _Collect(logging.Handler):
    """Keeps the warnings tifffile logs: it reports a broken page chain only that way."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _tiff_damage(tif: object, size: int, warnings: list[str]) -> str | None:
    if warnings:
        return warnings[0]
    for index, page in enumerate(tif.pages):
        end = max(
            (o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)), default=0
        )
        if end > size:
            return f"page {index} needs {end} bytes, the file has {size}"
    return None


# One limit on the pixels of an image (a TIFF page, a PNG, a JPEG), for every reader: a small
# file that declares a huge size is refused before it is decoded. Pillow's own guard refuses
# above twice its MAX_IMAGE_PIXELS, set to this limit, which open_pil checks first from the header.
DEFAULT_MAX_PIXELS = 2 * 89_478_485


def max_pixels() -> int:
    """The pixel limit per image: ``PIXELWISE_MAX_PIXELS`` when set, else the default."""
    value = os.environ.get("PIXELWISE_MAX_PIXELS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_PIXELS


class TooManyPixels(ValueError):
    """An image larger than the pixel limit (raised as it is, not as an unreadable file)."""


def check_pixel_count(path: Path, what: str, size: tuple[int, ...]) -> None:
    """Refuse an image whose declared height × width exceeds :func:`max_pixels`."""
    if len(size) == 2 and size[0] * size[1] > max_pixels():
        raise _too_many(path, what, f"{size[0]}×{size[1]} = {size[0] * size[1]:,}")


def _too_many(path: Path, what: str, pixels: str) -> TooManyPixels:
    return TooManyPixels(
        message(
            f"{what} {path}",
            f"have at most {max_pixels():,} pixels (the image size limit)",
            f"{pixels} pixels",
            "split the image, or raise the limit with PIXELWISE_MAX_PIXELS",
        )
    )


def read_tiff_pages(path: Path, what: str) -> list[np.ndarray]:
    """Read every page of a (multi-page) TIFF file as its own array; damage raises ValueError.

    Shape:
        returns P arrays of (H, W) or (H, W, C).
    """
    import tifffile

    check_exists(path, what)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(message(f"{what} {path}", "be a TIFF file (.tif, .tiff)", path.suffix))
    collect, logger = _Collect(), logging.getLogger("tifffile")
    logger.addHandler(collect)
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:  # the declared size, before any pixel is decoded
                check_pixel_count(path, what, tuple(page.shape)[:2])
            pages = [_channels_last(np.asarray(page.asarray())) for page in tif.pages]
            damage = _tiff_damage(tif, path.stat().st_size, collect.messages)
    except TooManyPixels:
        raise
    except _READ_ERRORS as err:
        raise _unreadable(path, what, err) from err
    finally:
        logger.removeHandler(collect)
    if damage:
        raise _unreadable(path, what, OSError(f"truncated or damaged TIFF ({damage})"))
    if not pages:
        raise ValueError(message(f"{what} {path}", "hold at least one page", "none"))
    return pages


def read_pixels(
    path: Path, what: str, *, lossless: bool = False, expand_palette: bool = True
) -> tuple[np.ndarray, str]:
    """Raw pixels of a single image and a description of its storage (Pillow mode or dtype).

    An image is turned as its EXIF orientation says (as every viewer shows it); labels with
    an orientation other than the identity are refused. Alpha is dropped (it carries no data
    here). Palette ("P") images are expanded to RGB unless
    ``expand_palette`` is false: the indices of an index mask are its values.

    Args:
        path: The file.
        what: Names the file in error messages ("image", "mask", ...).
        lossless: Refuse JPEG content (labels), whatever the file is called.
        expand_palette: Expand palette images to RGB.

    Shape:
        returns (H, W) or (H, W, C).
    """
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _tiff_pixels(path, what), "TIFF"
    image = _upright(open_pil(path, what), path, what, labels=lossless)
    if lossless and image.format == "JPEG":
        raise ValueError(_lossy_message(path))
    mode = image.mode
    if mode == "LA":
        image = image.convert("L")
    elif mode in ("PA", "RGBA", "CMYK", "YCbCr", "HSV", "LAB") or (mode == "P" and expand_palette):
        image = image.convert("RGB")
    return np.asarray(image), mode


def _channels_last(array: np.ndarray) -> np.ndarray:
    """(C, H, W) planar TIFF data to (H, W, C); (H, W, 1) to (H, W)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) → (H, W, C)
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


def _tiff_pixels(path: Path, what: str) -> np.ndarray:
    pages = read_tiff_pages(path, what)
    if len(pages) > 1 or pages[0].ndim not in (2, 3):
        actual = f"{len(pages)} pages" if len(pages) > 1 else f"shape {pages[0].shape}"
        raise ValueError(
            message(
                f"{what} {path}",
                "be a single (H, W[, C]) image",
                actual,
                "read multi-page stacks with TiffStackDataset",
            )
        )
    return pages[0]


def to_float(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Scale integer pixels to [0, 1]: 8-bit by 255, 16-bit by 65535; float is kept as is
    (NaN and infinity refused).

    Shape:
        (H, W[, C]) → same.
    """
    kind, size = pixels.dtype.kind, pixels.dtype.itemsize
    if kind == "b":
        return pixels.astype(np.float32)
    if kind == "f":
        with np.errstate(over="ignore"):  # float64 beyond float32's range: refused as infinite
            return _finite(pixels.astype(np.float32, copy=False), path)
    if kind in "ui" and size == 1:
        return pixels.astype(np.float32) / 255.0
    if kind in "ui" and (size == 2 or (pixels.size and pixels.min() >= 0 and pixels.max() < 65536)):
        # Pillow opens some 16-bit files as 32-bit mode "I"; their range says what they are.
        return pixels.astype(np.float32) / 65535.0
    raise ValueError(
        message(f"image {path}", "hold 8-bit, 16-bit or float pixels", f"dtype {pixels.dtype}")
    )


def _finite(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Float pixels if every one is finite; NaN or infinity (a float TIFF's no-data value, or
    float64 beyond float32's range) would make the loss and the prediction NaN."""
    bad = ~np.isfinite(pixels)
    if bad.any():
        count = int(bad.sum())
        raise ValueError(
            message(
                f"image {path}",
                "hold finite pixel values",
                f"{count} NaN or infinite pixel{'s' * (count != 1)} of {pixels.size}",
                "replace them (e.g. with numpy.nan_to_num) and save the image again",
            )
        )
    return pixels


def _channels(pixels: np.ndarray) -> int:
    return 1 if pixels.ndim == 2 else int(pixels.shape[-1])


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """Read an image as float32 in [0, 1], checking its channel count when one is expected.

    Shape:
        returns (H, W, C).
    """
    pixels, mode = read_pixels(path, "image")
    found = _channels(pixels)
    if channels is not None and found != channels:
        raise ValueError(
            message(
                f"image {path}",
                f"have {channels} channel{'s' * (channels != 1)} (channels={channels})",
                f"{found} (mode {mode})",
                f"convert the images, or set channels={found} and the model's in_channels to match",
            )
        )
    return to_float(pixels if pixels.ndim == 3 else pixels[..., None], path)


def read_mask(path: Path, encoding: MaskEncoding) -> np.ndarray:
    """Read a mask file and decode it to classes with ``encoding``.

    Shape:
        returns (H, W) int64 in ``[0, K)`` or ``ignore_index``.
    """
    refuse_lossy_mask(path)
    palette = encoding.kind == "palette"
    pixels, mode = read_pixels(path, "mask", lossless=True, expand_palette=palette)
    found = _channels(pixels)
    if found != encoding.channels:
        if palette:
            fix = "colour masks need RGB; declare MaskEncoding.index or .values for index masks"
        elif found == 3 and (pixels[..., :1] == pixels).all():
            fix = "its channels are equal: save it as a single-channel (mode L) PNG"
        else:
            fix = "save index masks as single-channel PNGs, or declare MaskEncoding.palette(...)"
        raise ValueError(
            message(
                f"mask {path}",
                f"have {encoding.channels} channel{'s' * palette} for the {encoding.kind} encoding",
                f"{found} (mode {mode})",
                fix,
            )
        )
    return encoding.decode(pixels, source=str(path))


def read_labels(path: str | os.PathLike, what: str = "instance image") -> np.ndarray:
    """Read a label image: one non-negative integer per pixel (e.g. 0 background, 1..N objects).

    8-, 16- and 32-bit greyscale, palette (its indices) and 1-bit images and single-channel
    TIFFs are read; JPEG content is refused, since compression changes labels along edges.

    Args:
        path: The file.
        what: Names the file in error messages ("instance image", "mask file").

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, lossy, or not a label image (e.g. RGB); the message names the file.

    Shape:
        returns (H, W) int64.
    """
    path = Path(path)
    if not path.is_file():
        actual = "a folder" if path.is_dir() else "no such file"
        raise FileNotFoundError(message(f"{what} {path}", "exist", actual, "check the path"))
    refuse_lossy_mask(path)
    pixels, mode = _label_pixels(path, what)
    if pixels.ndim != 2 or pixels.dtype.kind not in "iub":
        raise ValueError(
            message(
                f"{what} {path}",
                "be a single-channel 8- or 16-bit label image",
                f"mode {mode!r} with {_channels(pixels)} channels",
                "save one integer label per pixel as a greyscale (L) or 16-bit PNG",
            )
        )
    return check_label_image(pixels, f"labels in {path}", allow_bool=True, nonnegative=True)


def _label_pixels(path: Path, what: str) -> tuple[np.ndarray, str]:
    """The stored values of a label file (palette indices kept) and its Pillow mode or "TIFF"."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _tiff_pixels(path, what), "TIFF"
    image = _upright(open_pil(path, what), path, what, labels=True)
    if image.format == "JPEG":
        raise ValueError(_lossy_message(path))
    return np.array(image), image.mode
