"""Overlap-tile prediction of images of any size, in memory bounded by the tile batch and the
output rather than by the image.

Two strategies, chosen from the model:

* **Blended tiles** (every model whose output has the input's size). Tiles of ``tile`` pixels
  are laid out evenly with at least ``overlap · tile`` pixels shared by neighbours; tiles
  never leave the image (an axis shorter than the tile is one tile of the axis's length, the
  whole-image prediction along it). At a tile side inside the image, half the overlap
  (``margin = ⌊overlap · tile⌋ // 2`` pixels) is discarded, since that side sees the model's
  padding instead of the image; the rest is averaged with a Gaussian importance map
  (σ = tile / 8, as nnU-Net and MONAI do) or with constant weights.

  Exact condition: let every output pixel be the same function of the input pixels within
  distance r of it (a stack of stride-1 convolutions and pointwise layers in eval mode, like
  the patch classifier: receptive field R = 2r + 1), and let the model treat the image border
  the same wherever it meets it (its own zero or mirror padding: tile sides on the image
  border are the image border). Then every kept tile pixel equals the whole-image prediction
  when r ≤ margin, that is ``⌊overlap · tile⌋ ≥ R − 1`` (one pixel less, and the kept pixels
  next to an inner side see the tile's padding); the blend is then an average of equal
  values, so tiled equals whole-image prediction with any blending (to float rounding). Pooling strides (the result depends on the tile's phase on the pooling grid),
  global pooling (DeepLab's image branch) or a receptive field beyond the margin give close
  but not identical results.

* **Overlap-tile** (U-Net with ``padding="valid"``: a model with ``is_valid_input_size``
  whose output is smaller than its input; a same-padding U-Net gets blended tiles): the
  U-Net paper's strategy (Fig. 2). Each input tile is a size the network accepts, its output
  tile plus the network's context margin on every side, mirror-extrapolated where it leaves
  the image; output tiles abut (seamless by construction: no blending, every pixel written
  once). Tiles step by the largest multiple of the pooling factor ``2**depth`` that fits in
  an output tile, so every tile sees the pooling grid where a whole-image pass would: the
  result equals the whole-image prediction of the mirror-padded image
  (:func:`pixelwise.inference.whole_image_logits`) to float rounding. ``overlap`` and
  ``blend`` do not apply.

Memory (float32, K classes, H × W image): the output K·H·W·4 bytes plus the tile batch
(``batch_size`` tiles, their logits, and the model's activations on them), plus O(H + W):
the weight sum is separable (tile windows are outer products of per-axis windows laid out on
a grid), so no H × W weight buffer is kept, and tiles are cut from the image (mirrored where
needed) one at a time, never a padded copy of the whole image. Measured on CPU
(``benchmarks/tiling_memory.py``, a fresh process per run) for an 8192 × 8192 single-channel
image, K = 2, U-Net (same padding, depth 4, base width 8), 512² tiles, overlap 0.25, batch 4:
peak RSS 1.85 GiB = 0.93 GiB before predicting (Python and torch 0.7 GiB, the 0.25 GiB image)
+ 0.5 GiB output + 0.42 GiB for the tile batch, which is the same (0.35 GiB) for a 2048²
image; one whole-image pass of a 2048² image already needs 1.03 GiB above the baseline.
With the full-width U-Net (base width 64, 31M parameters; ``benchmarks/inference.py``) the
same 8192² prediction peaks at 3.12 GiB: 0.80 GiB process, 0.25 GiB image, 0.5 GiB output and
about 1.6 GiB for the batch of four 512² tiles (MONAI's sliding window: 3.69 GiB).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message
from pixelwise.inference._model import (
    eval_mode,
    model_device,
    model_in_channels,
    model_parts,
    output_margin,
    unwrap_model,
)
from pixelwise.inference.optimize import optimize_for_inference
from pixelwise.inference.tta import augmented_logits, check_transforms
from pixelwise.nn.padding import mirror_indices

Progress = Callable[[int, int], None]
BLENDS = ("gaussian", "constant")
GAUSSIAN_SIGMA = 1 / 8  # σ as a fraction of the tile side (nnU-Net's choice)


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis.

    Attributes:
        start: first input pixel of the tile (negative, or beyond the axis, where it is
            mirror-extrapolated).
        length: input pixels of the tile.
        src: first pixel of the tile's output that is kept.
        dst: the image pixel it lands on; ``len(weights)`` pixels are kept.
        weights: blending weight of each kept pixel (all positive).
    """

    start: int
    length: int
    src: int
    dst: int
    weights: torch.Tensor

    @property
    def kept(self) -> int:
        """Number of output pixels kept."""
        return len(self.weights)


@dataclass(frozen=True)
class TilePlan:
    """The tiles of an image: the Cartesian product of ``rows`` and ``cols``.

    Attributes:
        strategy: ``"blend"`` or ``"overlap-tile"`` (see the module docstring).
        height, width: the image size.
        rows, cols: the tiles along H and along W.
    """

    strategy: str
    height: int
    width: int
    rows: tuple[AxisTile, ...]
    cols: tuple[AxisTile, ...]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def tiles(self) -> Iterator[tuple[AxisTile, AxisTile]]:
        """(row, col) pairs in row-major order."""
        return ((r, c) for r in self.rows for c in self.cols)

    def weight_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per axis, the sum of the tiles' weights at each pixel; the 2-D sum is their outer
        product, since every tile's window is ``row.weights ⊗ col.weights``.

        Shape:
            returns (H,), (W,) float32.
        """
        return _axis_sum(self.rows, self.height), _axis_sum(self.cols, self.width)


def _axis_sum(tiles: Sequence[AxisTile], size: int) -> torch.Tensor:
    total = torch.zeros(size)
    for t in tiles:
        total[t.dst : t.dst + t.kept] += t.weights
    return total


def window(length: int, blend: str) -> torch.Tensor:
    """The 1-D blending window of a tile: a Gaussian (σ = length / 8, peak 1) or ones.

    Shape:
        returns (length,) float32.
    """
    check_choice("blend", blend, BLENDS)
    if blend == "constant":
        return torch.ones(length)
    centre = (length - 1) / 2
    sigma = max(length * GAUSSIAN_SIGMA, 1e-3)
    offsets = torch.arange(length, dtype=torch.float64) - centre
    return torch.exp(-0.5 * (offsets / sigma) ** 2).float()  # ≥ e^-8 per axis: no zeros


def blend_axis(size: int, tile: int, overlap: float, blend: str) -> tuple[AxisTile, ...]:
    """Evenly spaced tiles of ``min(tile, size)`` pixels inside ``[0, size)``, neighbours
    sharing at least ``⌊overlap · tile⌋`` pixels; half of that is dropped at inner sides."""
    tile = min(tile, size)
    shared = min(math.floor(overlap * tile + 1e-9), tile - 1)  # 1e-9: 0.29·100 is 28.999…
    margin = shared // 2
    count = 1 if tile == size else math.ceil((size - tile) / (tile - shared)) + 1
    starts = [round(i * (size - tile) / max(count - 1, 1)) for i in range(count)]
    # One tile alone needs no weights: ones keep it bit-identical to a whole-image pass.
    full = window(tile, blend) if count > 1 else torch.ones(tile)
    tiles = []
    for i, start in enumerate(starts):
        low = 0 if i == 0 else margin
        high = tile if i == count - 1 else tile - margin
        tiles.append(AxisTile(start, tile, low, start + low, full[low:high]))
    return tuple(tiles)


def valid_axis(model: nn.Module, size: int, tile: int) -> tuple[AxisTile, ...]:
    """Overlap-tile layout along one axis for a network with a shrinking output.

    The input tile is the largest accepted size ≤ ``tile`` (the smallest accepted one if none
    is), or the smallest accepted size whose output covers the whole axis if that is smaller.
    Tiles step by a multiple of ``model.size_divisor`` (the pooling factor).
    """
    margin = output_margin(model)
    step_unit = getattr(model, "size_divisor", 1)
    lower, upper = model.valid_input_sizes_near(tile)
    length = lower if lower is not None else upper
    while model.output_size(length) < step_unit:
        length = model.valid_input_sizes_near(length + 1)[1]
    cover = model.valid_input_sizes_near(size + 2 * margin)[1]
    if cover <= length:
        return (AxisTile(-margin, cover, 0, 0, torch.ones(size)),)
    step = model.output_size(length) // step_unit * step_unit
    tiles = []
    for dst in range(0, size, step):
        kept = min(step, size - dst)
        tiles.append(AxisTile(dst - margin, length, 0, dst, torch.ones(kept)))
    return tuple(tiles)


def _pair(what: str, value: int | Sequence[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, Sequence) or len(pair) != 2:
        raise TypeError(message(what, "be an int or a pair (H, W) of ints", repr(value)))
    return check_positive_int(what, pair[0]), check_positive_int(what, pair[1])


def _check_overlap(overlap: object) -> float:
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
        raise ValueError(
            message("overlap", "be a fraction of the tile in [0, 1)", repr(overlap), "e.g. 0.25")
        )
    return float(overlap)


def plan_tiles(
    model: nn.Module,
    height: int,
    width: int,
    *,
    tile: int | tuple[int, int] = 512,
    overlap: float = 0.25,
    blend: str = "gaussian",
) -> TilePlan:
    """Lay out the tiles :func:`predict` uses for an image of ``height × width``.

    The strategy follows the model (see the module docstring): overlap-tile when its output is
    smaller than its input, blended tiles otherwise.
    """
    model = unwrap_model(model_parts(model)[0])
    tile_h, tile_w = _pair("tile", tile)
    check_positive_int("image height", height)
    check_positive_int("image width", width)
    overlap = _check_overlap(overlap)
    check_choice("blend", blend, BLENDS)
    if output_margin(model) > 0:
        rows, cols = valid_axis(model, height, tile_h), valid_axis(model, width, tile_w)
        return TilePlan("overlap-tile", height, width, rows, cols)
    rows = blend_axis(height, tile_h, overlap, blend)
    cols = blend_axis(width, tile_w, overlap, blend)
    return TilePlan("blend", height, width, rows, cols)


def _inside(tile: AxisTile, size: int) -> bool:
    return tile.start >= 0 and tile.start + tile.length <= size


def extract_tile(image: torch.Tensor, row: AxisTile, col: AxisTile) -> torch.Tensor:
    """Cut one input tile from the image, mirrored where it leaves the image; only the tile
    is copied.

    Shape:
        image: (C, H, W) -> (C, row.length, col.length)
    """
    _, height, width = image.shape
    if _inside(row, height) and _inside(col, width):
        rows, cols = (
            slice(row.start, row.start + row.length),
            slice(col.start, col.start + col.length),
        )
        return image[:, rows, cols]  # (C, row.length, col.length), a view
    rows = mirror_indices(row.start, row.length, height)
    cols = mirror_indices(col.start, col.length, width)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    hull = image[:, r0:r1, c0:c1]  # a view of the pixels the tile reflects
    rows, cols = (rows - r0).to(image.device), (cols - c0).to(image.device)
    return hull.index_select(1, rows).index_select(2, cols)  # (C, row.length, col.length)


def _check_image(image: object, model: nn.Module) -> torch.Tensor:
    return check_images(image, model_in_channels(model), "image", ndim=3)


def _accumulate(out: torch.Tensor, logits: torch.Tensor, row: AxisTile, col: AxisTile) -> None:
    """Add one tile's weighted logits into the output, in place.

    Shape:
        out: (K, H, W); logits: (K, h, w), the tile's output.
    """
    kept = logits[:, row.src : row.src + row.kept, col.src : col.src + col.kept]  # (K, kh, kw)
    weights = row.weights[:, None] * col.weights[None, :]  # (kh, kw)
    target = out[:, row.dst : row.dst + row.kept, col.dst : col.dst + col.kept]
    target.addcmul_(kept.to(out.device, out.dtype), weights.to(out.device))


def _batches(plan: TilePlan, batch_size: int) -> Iterator[list[tuple[AxisTile, AxisTile]]]:
    batch = []
    for pair in plan.tiles():
        batch.append(pair)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _model_dtype(model: nn.Module, image: torch.Tensor) -> torch.dtype:
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else image.dtype


def predict(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int | tuple[int, int] = 512,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool | str | Sequence[str] = False,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    optimize: bool = True,
) -> torch.Tensor:
    """Logits of one image of any size, predicted tile by tile (see the module docstring).

    The model runs in eval mode under ``torch.inference_mode`` (its mode is restored after);
    by default through a copy made by
    :func:`pixelwise.inference.optimize.optimize_for_inference` (batch norms folded into the
    convolutions, channels-last), which changes the logits only by float rounding. To predict
    many images, optimise once and pass the optimised model: it is used as it is, not copied.
    Memory: the float32 (K, H, W) output plus one batch of tiles through the model, whatever
    the image size (no (H, W) weight buffer, no padded copy of the image; measured figures in
    the module docstring).

    Args:
        model: A :class:`pixelwise.inference.segmenter.Segmenter` (its normalisation is
            applied to each tile) or a bare network (which sees the tiles as they are); U-Net
            with ``padding="valid"`` gets the overlap-tile strategy, every other model blended
            tiles.
        image: Float image in [0, 1] (or already normalised, for a bare network).
        tile: Input tile side, or (H, W). A multiple of the model's ``size_divisor`` wastes
            nothing; for a valid U-Net the largest accepted size ≤ ``tile`` is used.
        overlap: Fraction of the tile that neighbouring tiles share, in [0, 1) (blended tiles).
        blend: ``"gaussian"`` (importance map, σ = tile / 8) or ``"constant"``.
        batch_size: Tiles per forward pass; with the tile size it bounds the memory.
        tta: Test-time augmentation per tile, averaged in logit space: False (default), True
            (the eight flips and rotations), ``"flips"``, or a list of names from
            :data:`pixelwise.inference.tta.DIHEDRAL`.
        progress: Called as ``progress(tiles_done, tiles_total)`` after each batch.
        device: Where the model runs (default: the device of its parameters); tiles move
            there batch by batch, logits come back to the image's device.
        optimize: Predict with the optimised copy (default); False runs ``model`` itself,
            bit for bit as its own forward pass would.

    Returns:
        Float32 logits on the image's device.

    Raises:
        TypeError, ValueError: on a bad image or argument (one line, see
            :mod:`pixelwise._checks`).

    Shape:
        image: (C, H, W) -> logits (K, H, W).
    """
    model, normalize = model_parts(model)
    image = _check_image(image, model)
    check_positive_int("batch_size", batch_size)
    transforms = check_transforms(tta)
    plan = plan_tiles(model, *image.shape[-2:], tile=tile, overlap=overlap, blend=blend)
    device = torch.device(device) if device is not None else model_device(model)
    if optimize:
        model = optimize_for_inference(model)
    dtype = _model_dtype(model, image)
    out, done = None, 0
    with eval_mode(model), torch.inference_mode():
        for pairs in _batches(plan, batch_size):
            batch = torch.stack([extract_tile(image, r, c) for r, c in pairs])  # (B, C, h, w)
            batch = normalize(batch.to(device, dtype))
            if transforms:
                logits = augmented_logits(model, batch, transforms=transforms)  # (B, K, h', w')
            else:
                logits = model(batch)  # (B, K, h', w')
            if out is None:
                out = torch.zeros(logits.shape[1], plan.height, plan.width, device=image.device)
            for (row, col), tile_logits in zip(pairs, logits, strict=True):
                _accumulate(out, tile_logits, row, col)
            done += len(pairs)
            if progress is not None:
                progress(done, len(plan))
        row_sum, col_sum = plan.weight_sums()
        out.div_(row_sum.to(out.device)[:, None]).div_(col_sum.to(out.device))  # (K, H, W)
    return out
