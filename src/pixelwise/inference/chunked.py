"""Prediction of one giant image over a Dask cluster, chunk by chunk (``pixelwise[dask]``).

:func:`predict_chunked` reads the image lazily (a NumPy, Dask or Zarr array, a ``.zarr``
folder, or a TIFF read through tifffile's Zarr store, so nothing is loaded whole), and maps
every chunk through the in-process tiled prediction
(:func:`pixelwise.inference.tiling.predict`) with ``dask.array.map_overlap``: each chunk is
given ``depth`` pixels of its neighbours on every side, predicted, and cut back to its own
pixels. The result is a lazy Dask array of classes (or logits) with the image's chunks;
``compute()`` it, or :func:`predict_chunked_to_zarr` writes it to a Zarr folder chunk by chunk.

When it equals the in-process prediction of the whole image. A U-Net with valid padding
(the overlap-tile case) computes each output pixel from the ``output_margin`` pixels around
it, at a phase on the pooling grid given by its position: with ``depth`` at least the margin,
and chunk sides and ``depth`` multiples of the pooling factor ``2**depth`` (both rounded here),
every pixel sees exactly the input and the phase it sees in the whole-image run, so the
result equals :func:`pixelwise.inference.tiling.predict` of the whole image to float rounding
(tested on a local cluster). The image border is not padded by Dask (``boundary="none"``):
the tiled prediction mirrors there itself, as it does for the whole image; Dask's
``boundary="reflect"`` repeats the edge pixel (NumPy's ``symmetric``), the U-Net paper's
mirroring does not, so letting Dask pad would change the pixels along the border. For
every other model the chunks behave like larger tiles: close to, not equal to, the whole-image
prediction, with ``depth`` (default half the tiles' overlap, as the tiles themselves discard)
bounding the seam.

The model travels to the workers as a checkpoint path (each worker process loads it once) or,
on a threaded or in-process cluster, as the Segmenter itself.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelwise._checks import message
from pixelwise.data._io import to_float
from pixelwise.inference._model import model_in_channels, output_margin, unwrap_model
from pixelwise.inference.predict import index_dtype
from pixelwise.inference.tiling import predict as predict_tiled

OUTPUTS = ("mask", "logits")


def _dask():
    try:
        import dask.array as da
    except ImportError:
        raise ImportError("chunked prediction needs Dask: pip install 'pixelwise[dask]'") from None
    return da


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> nn.Module:
    """A checkpoint's Segmenter, optimised for inference, loaded once per process."""
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference.optimize import optimize_for_inference

    segmenter = load_model(path, device=device)
    return segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))


def _model(model: nn.Module | str | os.PathLike, device: str) -> nn.Module:
    return model if isinstance(model, nn.Module) else _load(os.fspath(model), device)


def pooling_factor(model: nn.Module) -> int:
    """The stride chunk sides and ``depth`` are multiples of: the network's ``size_divisor``
    (``2**depth`` for U-Net), 1 when it has none."""
    network = unwrap_model(getattr(model, "network", model))
    return max(int(getattr(network, "size_divisor", 1) or 1), 1)


def default_depth(model: nn.Module, tile: int, overlap: float = 0.25) -> int:
    """The context each chunk borrows from its neighbours: the output margin of a valid U-Net,
    else half the tiles' overlap (what the tiled prediction discards at a tile's side), rounded
    up to a multiple of :func:`pooling_factor`."""
    margin = output_margin(getattr(model, "network", model))
    context = margin if margin > 0 else int(overlap * tile) // 2
    factor = pooling_factor(model)
    return max(factor, math.ceil(context / factor) * factor)


def open_array(source: object) -> object:
    """``source`` as a lazy Dask array: a Dask array as it is, a NumPy or Zarr array wrapped, a
    ``.zarr`` folder opened with Zarr, a ``.tif``/``.tiff`` file through tifffile's Zarr store.

    Raises:
        FileNotFoundError, ValueError: a missing path or one of another kind, in one line.
    """
    da = _dask()
    if isinstance(source, da.Array):
        return source
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(message(f"image {path}", "exist", "a missing path"))
        if path.suffix.lower() in (".tif", ".tiff"):
            reader = TiffRegions(path)
            return da.from_array(reader, chunks=reader.chunks, lock=False, asarray=True)
        if path.suffix.lower() == ".zarr" or path.is_dir():
            return da.from_zarr(str(path))
        raise ValueError(
            message(
                f"image {path}",
                "be a .zarr folder or a .tif/.tiff file",
                path.suffix or "no suffix",
            )
        )
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return da.from_array(source, chunks="auto")
    raise TypeError(message("image", "be an array, a Dask array or a path", type(source).__name__))


class TiffRegions:
    """A TIFF file's first series as an array-like that reads only the regions asked for,
    through tifffile's Zarr store, opening the file per read: it pickles as its path, so Dask
    can send it to worker processes (an open store cannot travel).

    Attributes:
        path, shape, dtype, ndim, chunks (the file's own tiles or strips along H and W).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        self.path = Path(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                page = series.pages[0]
                self.shape = tuple(int(n) for n in series.shape)
                self.dtype = np.dtype(series.dtype)
                rows = int(getattr(page, "tilelength", 0) or getattr(page, "rowsperstrip", 0) or 0)
                cols = int(getattr(page, "tilewidth", 0) or 0)
        except (OSError, ValueError, IndexError) as exc:
            raise ValueError(
                message(f"image {self.path}", "be a readable TIFF", f"{type(exc).__name__}: {exc}")
            ) from None
        self.ndim = len(self.shape)
        rows = min(rows or 1024, self.shape[0]) if self.ndim else 1
        cols = min(cols or self.shape[1], self.shape[1]) if self.ndim > 1 else 1
        self.chunks = (max(rows, 256), max(cols, 256), *self.shape[2:])[: self.ndim]

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        import tifffile
        import zarr

        with tifffile.imread(self.path, aszarr=True) as store:
            array = zarr.open(store, mode="r")
            array = array if hasattr(array, "shape") else array["0"]  # a pyramid's full level
            return np.asarray(array[region])


def _check_layout(array: object, channels: int | None, name: str) -> None:
    if array.ndim not in (2, 3):
        raise ValueError(message(name, "be (H, W) or (H, W, C)", f"shape {tuple(array.shape)}"))
    found = 1 if array.ndim == 2 else int(array.shape[2])
    if channels is not None and found != channels:
        raise ValueError(
            message(
                name, f"have the model's {channels} channel(s) last", f"shape {tuple(array.shape)}"
            )
        )


def _block(
    block: np.ndarray,
    block_info: dict | None = None,
    *,
    model: object,
    device: str,
    context: int,
    tile: int,
    kind: str,
    source: str,
) -> np.ndarray:
    """Predict one chunk with its borrowed context and return its own pixels."""
    info = block_info[0]
    where, count = info["chunk-location"], info["num-chunks"]
    # boundary="none": context was added only on sides with a neighbour.
    top = context if where[0] > 0 else 0
    bottom = context if where[0] < count[0] - 1 else 0
    left = context if where[1] > 0 else 0
    right = context if where[1] < count[1] - 1 else 0
    pixels = to_float(np.asarray(block), Path(source))
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels  # (h, w, C)
    image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (C, h, w)
    logits = predict_tiled(_model(model, device), image, tile=tile, device=device)  # (K, h, w)
    height, width = logits.shape[-2:]
    core = logits[:, top : height - bottom, left : width - right]
    if kind == "logits":
        return core.permute(1, 2, 0).contiguous().numpy()  # (h', w', K)
    return core.argmax(dim=0).numpy().astype(index_dtype(logits.shape[0]))


def predict_chunked(
    model: nn.Module | str | os.PathLike,
    image: object,
    *,
    chunk: int = 2048,
    depth: int | None = None,
    tile: int = 512,
    output: str = "mask",
    device: str = "cpu",
) -> object:
    """Lazy prediction of a giant image, chunk by chunk with ``dask.array.map_overlap``.

    Args:
        model: A Segmenter (e.g. :func:`pixelwise.engine.checkpoint.load_model`; travels in the
            task graph) or a checkpoint path (each worker loads it once).
        image: (H, W) or (H, W, C) pixels: a NumPy, Dask or Zarr array, a ``.zarr`` folder or
            a TIFF file (:func:`open_array`); 8-bit, 16-bit or float in [0, 1].
        chunk: Chunk side, rounded down to a multiple of :func:`pooling_factor` (the pixels
            one task predicts; memory per task is about its (chunk + 2·depth)² area times the
            classes, plus one batch of tiles).
        depth: Context borrowed from each neighbour; default :func:`default_depth` (exact
            for a valid U-Net, see the module docstring). Rounded up to the pooling factor.
        tile: Tile side of the tiled prediction inside each chunk.
        output: ``"mask"``: classes, uint8 (uint16 above 256 classes); ``"logits"``: float32
            (H, W, K).
        device: Where each worker runs the model.

    Returns:
        A Dask array (H, W) or (H, W, K), chunked like the (re-chunked) image.
    """
    if output not in OUTPUTS:
        raise ValueError(message("output", f"be one of {', '.join(OUTPUTS)}", repr(output)))
    loaded = _model(model, device)
    name = os.fspath(image) if isinstance(image, str | os.PathLike) else "image array"
    array = open_array(image)
    _check_layout(array, model_in_channels(loaded), name)
    factor = pooling_factor(loaded)
    depth = default_depth(loaded, tile) if depth is None else int(depth)
    if depth < 0:
        raise ValueError(message("depth", "be >= 0", depth))
    depth = math.ceil(depth / factor) * factor
    side = max(factor, (int(chunk) // factor) * factor, depth)
    side = math.ceil(side / factor) * factor
    chunks = (side, side) + ((array.shape[2],) if array.ndim == 3 else ())
    array = array.rechunk(chunks)
    # A last chunk thinner than depth cannot lend depth pixels: fold it into its neighbour.
    array = array.rechunk(tuple(_fold_thin(c, depth) for c in array.chunks))
    num_classes = int(getattr(loaded, "num_classes", None) or 0)
    out_chunks = array.chunks[:2]
    kwargs: dict[str, object] = {}
    if output == "logits":
        out_chunks = (*out_chunks, (num_classes,))
        if array.ndim == 2:
            kwargs["new_axis"] = 2  # (H, W) -> (H, W, K); (H, W, C) -> (H, W, K) as it is
        dtype = np.float32
    else:
        if array.ndim == 3:
            kwargs["drop_axis"] = 2  # (H, W, C) -> (H, W)
        dtype = index_dtype(num_classes)
    da = _dask()
    return da.map_overlap(
        _block,
        array,
        depth={0: depth, 1: depth, **({2: 0} if array.ndim == 3 else {})},
        boundary="none",
        trim=False,
        chunks=out_chunks,
        dtype=dtype,
        meta=np.empty((0,) * len(out_chunks), dtype),
        model=model if not isinstance(model, nn.Module) else loaded,
        device=device,
        context=depth,
        tile=tile,
        kind=output,
        source=name,
        **kwargs,
    )


def _fold_thin(sizes: tuple[int, ...], depth: int) -> tuple[int, ...]:
    sizes = list(sizes)
    if len(sizes) > 1 and sizes[-1] < depth:
        sizes[-2] += sizes.pop()
    return tuple(sizes)


def predict_chunked_to_zarr(
    model: nn.Module | str | os.PathLike,
    image: object,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    **options: object,
) -> Path:
    """:func:`predict_chunked` written to the Zarr folder ``out``, chunk by chunk, into a
    temporary folder beside it that is renamed when complete (an existing ``out`` is kept
    unless ``overwrite``). Returns ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(
            message(f"output {out}", "not exist already", "an existing path", "pass overwrite=True")
        )
    result = predict_chunked(model, image, **options)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result.to_zarr(str(partial), overwrite=True)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return out
