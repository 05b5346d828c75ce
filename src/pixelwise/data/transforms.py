"""Joint image–mask augmentation on torchvision.transforms.v2 and tv_tensors.

A sample dict is wrapped into tv_tensors (``image`` → ``Image``, ``mask`` → ``Mask``,
``instances`` → :class:`InstanceMask`, ``weight`` and ``distance`` → :class:`WeightMap`), every
transform draws its parameters once per sample and applies them to all of them, so the mask,
the instance labels, the weight map and the distance target follow the image exactly. Masks are
only ever moved, never interpolated (nearest neighbour); the weight map and the distance target
are interpolated bilinearly; padding puts ``ignore_index`` into the mask and 0 into the weight
map and the distance target, so padded pixels cost nothing.

Randomness comes from a ``torch.Generator`` when one is given (reproducible; in each
DataLoader worker :class:`JointTransform` reseeds its copy from the worker seed, so workers do
not repeat each other), otherwise from the global torch generator, which DataLoader seeds per
worker.

The elastic deformation is the U-Net paper's (Ronneberger et al. 2015, section 3.1,
https://arxiv.org/abs/1505.04597): random displacements on a coarse 3×3 grid, drawn from a
Gaussian with 10 pixels standard deviation, interpolated bicubically to a per-pixel field.
The paper does not say how the image is resampled; here bilinearly (or bicubically on request)
with mirrored borders.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch.utils.data import get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pixelwise._checks import check_choice, message

Sample = dict[str, object]


class WeightMap(tv_tensors.Mask):
    """Per-pixel loss weights: moved with the mask, interpolated bilinearly, padded with 0."""


class InstanceMask(tv_tensors.Mask):
    """Instance labels: moved with the mask (nearest), padded with 0 (background)."""


_WRAPPERS = {
    "image": tv_tensors.Image,
    "mask": tv_tensors.Mask,
    "instances": InstanceMask,
    "weight": WeightMap,
    "distance": WeightMap,
}


def _spatial_size(flat_inputs: list) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Image | tv_tensors.Mask):
            return int(inpt.shape[-2]), int(inpt.shape[-1])
    raise TypeError(message("transform inputs", "include an Image or a Mask", "neither"))


def _wrap(output: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tv_tensors.wrap(output, like=like)


class RandomTransform(v2.Transform):
    """Base of the random transforms: parameters from ``generator`` or the global generator."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        """An integer in [0, high)."""
        return int(torch.randint(high, (), generator=self.generator))


class RandomScale(RandomTransform):
    """Resize by a factor drawn uniformly from ``scale`` (image bilinear, mask nearest).

    Shape:
        (…, H, W) → (…, round(s·H), round(s·W)).
    """

    def __init__(
        self, scale: tuple[float, float] = (0.75, 1.25), generator: torch.Generator | None = None
    ) -> None:
        super().__init__(generator)
        low, high = (float(s) for s in scale)
        if not 0 < low <= high:
            raise ValueError(message("scale", "be a range (low, high) with 0 < low <= high", scale))
        self.scale = (low, high)

    def make_params(self, flat_inputs: list) -> dict:
        height, width = _spatial_size(flat_inputs)
        factor = self._uniform(*self.scale)
        return {"size": [max(round(height * factor), 1), max(round(width * factor), 1)]}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if isinstance(inpt, WeightMap):
            plain = inpt.as_subclass(torch.Tensor)[None]  # (1, H, W)
            return _wrap(F.resize_image(plain, params["size"], antialias=True)[0], inpt)
        # Image: bilinear; Mask and InstanceMask: nearest (torchvision's mask kernel).
        return F.resize(inpt, params["size"], antialias=True)


class RandomFlip(RandomTransform):
    """Flip left–right with probability ``horizontal`` and up–down with ``vertical``."""

    def __init__(
        self,
        horizontal: float = 0.5,
        vertical: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        self.horizontal, self.vertical = float(horizontal), float(vertical)

    def make_params(self, flat_inputs: list) -> dict:
        dims = []
        if self._uniform(0, 1) < self.horizontal:
            dims.append(-1)
        if self._uniform(0, 1) < self.vertical:
            dims.append(-2)
        return {"dims": dims}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return _wrap(inpt.flip(params["dims"]), inpt) if params["dims"] else inpt


class RandomRot90(RandomTransform):
    """Rotate by a random multiple of 90° (exact: no interpolation).

    Shape:
        (…, H, W) → (…, H, W) or (…, W, H) for odd multiples.
    """

    def make_params(self, flat_inputs: list) -> dict:
        return {"k": self._randint(4)}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return _wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), inpt)


class RandomCrop(RandomTransform):
    """Crop a random ``size`` window; a smaller image is first padded at random sides.

    Padding fills the mask with ``ignore_index`` and image, weights and instances with 0, so
    every output has exactly ``size`` and batches collate.

    Shape:
        (…, H, W) → (…, h, w) with (h, w) = ``size``.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        ignore_index: int = 255,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(message("crop size", "be an int or (h, w) >= 1", size))
        self.size, self.ignore_index = size, ignore_index

    def make_params(self, flat_inputs: list) -> dict:
        height, width = _spatial_size(flat_inputs)
        (h, w), pad_h, pad_w = (
            self.size,
            max(self.size[0] - height, 0),
            max(self.size[1] - width, 0),
        )
        top_pad, left_pad = self._randint(pad_h + 1), self._randint(pad_w + 1)
        return {
            "pad": (left_pad, pad_w - left_pad, top_pad, pad_h - top_pad),  # nnf.pad's order
            "top": self._randint(height + pad_h - h + 1),
            "left": self._randint(width + pad_w - w + 1),
        }

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        plain = inpt.as_subclass(torch.Tensor)
        if any(params["pad"]):
            fill = self.ignore_index if type(inpt) is tv_tensors.Mask else 0
            plain = nnf.pad(plain, params["pad"], value=fill)
        (h, w), top, left = self.size, params["top"], params["left"]
        return _wrap(plain[..., top : top + h, left : left + w], inpt)


class ColourJitter(RandomTransform):
    """Random changes of the image's intensities; masks, instances and weights pass unchanged.

    Per sample, in this order: brightness (the image times a factor in [1 − s, 1 + s]),
    contrast (blended with its mean grey value by a factor in [1 − s, 1 + s]; with other than
    one or three channels, the mean over all channels), and for three channels saturation
    (blended with its grey image by a factor in [1 − s, 1 + s]) and hue (rotated by up to
    s / 4 of the colour wheel); then, with probability ``invert``, the intensities are
    mirrored (1 − image: dark objects on a bright ground and bright on dark alike).
    torchvision's kernels do each step (``F.adjust_*``, ``F.invert``) on [0, 1]; a float image
    with values outside [0, 1] (a float TIFF) is mapped from its range [min(0, lowest),
    max(1, highest)] to [0, 1] and back, so its range is kept.

    Args:
        strength: s in [0, 1]; 0 changes nothing but the inversion.
        invert: Probability of inverting the intensities.
    """

    def __init__(
        self,
        strength: float = 0.4,
        invert: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        if not 0 <= strength <= 1:
            raise ValueError(message("colour jitter strength", "be in [0, 1]", strength))
        if not 0 <= invert <= 1:
            raise ValueError(message("inversion probability", "be in [0, 1]", invert))
        self.strength, self.invert = float(strength), float(invert)

    def make_params(self, flat_inputs: list) -> dict:
        s = self.strength
        factors = [self._uniform(1 - s, 1 + s) for _ in range(3)]
        return {
            "brightness": factors[0],
            "contrast": factors[1],
            "saturation": factors[2],
            "hue": self._uniform(-s / 4, s / 4),
            "invert": self._uniform(0, 1) < self.invert,
        }

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if not inpt.is_floating_point():
            raise ValueError(
                message("colour augmentation", "get float images in [0, 1]", f"{inpt.dtype}")
            )
        plain = inpt.as_subclass(torch.Tensor)
        low = min(float(plain.min()), 0.0) if plain.numel() else 0.0
        high = max(float(plain.max()), 1.0) if plain.numel() else 1.0
        out = (plain - low) / (high - low) if (low, high) != (0.0, 1.0) else plain
        out = self._adjust(out, params)
        if params["invert"]:
            out = F.invert_image(out)
        out = out.clamp(0, 1)
        return _wrap(out * (high - low) + low if (low, high) != (0.0, 1.0) else out, inpt)

    def _adjust(self, out: torch.Tensor, params: dict) -> torch.Tensor:
        """Brightness, contrast, saturation and hue of an image in [0, 1]."""
        if self.strength == 0:
            return out
        if out.shape[-3] not in (1, 3):  # torchvision's kernels take grey or RGB
            out = (out * params["brightness"]).clamp(0, 1)
            mean = out.mean(dim=(-3, -2, -1), keepdim=True)
            return mean + params["contrast"] * (out - mean)
        out = F.adjust_brightness_image(out, params["brightness"])
        out = F.adjust_contrast_image(out, params["contrast"])
        if out.shape[-3] == 3:
            out = F.adjust_saturation_image(out, params["saturation"])
            out = F.adjust_hue_image(out, params["hue"])
        return out


def elastic_field(displacements: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-pixel displacement field from displacements on a coarse grid, bicubically.

    Control point (i, j) of a g×g grid sits at pixel ``(i·(H-1)/(g-1), j·(W-1)/(g-1))``
    (the corners, and for g = 3 and odd sizes the exact centre); the field there equals the
    control point's displacement.

    Args:
        displacements: (dy, dx) in pixels per control point.
        size: (H, W).

    Shape:
        displacements: (2, g, g) → (2, H, W).
    """
    if displacements.dim() != 3 or displacements.shape[0] != 2:
        raise ValueError(
            message("displacements", "have shape (2, g, g)", tuple(displacements.shape))
        )
    field = nnf.interpolate(
        displacements[None].float(), size=tuple(size), mode="bicubic", align_corners=True
    )  # (1, 2, H, W)
    return field[0]


def _sampling_grid(field: torch.Tensor) -> torch.Tensor:
    """grid_sample coordinates of ``pixel + field``, normalised as with align_corners=True.

    Shape:
        field: (2, H, W) → (1, H, W, 2).
    """
    _, height, width = field.shape
    ys = torch.arange(height, dtype=field.dtype)[:, None] + field[0]  # (H, W)
    xs = torch.arange(width, dtype=field.dtype)[None, :] + field[1]  # (H, W)
    grid = torch.stack(
        [2 * xs / max(width - 1, 1) - 1, 2 * ys / max(height - 1, 1) - 1], dim=-1
    )  # (H, W, 2)
    return grid[None]


class ElasticDeformation(RandomTransform):
    """The U-Net paper's elastic deformation: a 3×3 grid of random displacements.

    Output pixel ``p`` takes the input at ``p + d(p)``, with ``d`` from :func:`elastic_field`.
    Images are resampled bilinearly (or bicubically, clamped to the input's range), weight maps
    bilinearly, masks and instance labels by nearest neighbour; borders are mirrored.

    Args:
        std: Standard deviation of the displacements, pixels (the paper: 10).
        grid: Control points per side (the paper: 3).
        interpolation: ``"bilinear"`` or ``"bicubic"`` for images.
        generator: Source of randomness; None for the global generator.

    Shape:
        (…, H, W) → (…, H, W).
    """

    def __init__(
        self,
        std: float = 10.0,
        grid: int = 3,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        if not std >= 0:
            raise ValueError(message("elastic std", "be >= 0 pixels", std))
        if grid < 2:
            raise ValueError(message("elastic grid", "have >= 2 control points per side", grid))
        self.std, self.grid = float(std), int(grid)
        self.interpolation = check_choice("interpolation", interpolation, ("bilinear", "bicubic"))

    def make_params(self, flat_inputs: list) -> dict:
        size = _spatial_size(flat_inputs)
        noise = torch.randn((2, self.grid, self.grid), generator=self.generator)
        displacements = noise * self.std  # (2, g, g)
        return {
            "displacements": displacements,
            "grid": _sampling_grid(elastic_field(displacements, size)),
        }

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        plain = inpt.as_subclass(torch.Tensor)
        is_label = isinstance(inpt, tv_tensors.Mask) and not isinstance(inpt, WeightMap)
        mode = (
            "nearest"
            if is_label
            else ("bilinear" if isinstance(inpt, WeightMap) else self.interpolation)
        )
        flat = plain.reshape(-1, *plain.shape[-2:])[None].float()  # (1, C, H, W)
        out = nnf.grid_sample(
            flat, params["grid"], mode=mode, padding_mode="reflection", align_corners=True
        )
        if mode == "bicubic":
            out = out.clamp(flat.amin(), flat.amax())  # bicubic overshoots at edges
        out = out[0].reshape(plain.shape)
        return _wrap(out.round().to(plain.dtype) if is_label else out.to(plain.dtype), inpt)


class JointTransform:
    """Apply v2 transforms jointly to a sample dict's image, mask, instances and weight map.

    Keys other than those four (e.g. ``path``) pass through. Outputs are plain tensors again:
    image float (C, H, W), mask int64 (H, W).

    Args:
        transforms: Applied in order.
        generator: The generator the random transforms share, if any. In a DataLoader worker it
            is reseeded once from the worker's seed: every worker holds a copy of it and would
            otherwise repeat the other workers' augmentations.
    """

    def __init__(
        self, transforms: Sequence[v2.Transform], generator: torch.Generator | None = None
    ) -> None:
        self.transforms = list(transforms)
        self.pipeline = v2.Compose(self.transforms) if self.transforms else None
        self.generator = generator
        self._base_seed = generator.initial_seed() if generator is not None else None
        self._worker_seed: int | None = None

    def _reseed_in_worker(self) -> None:
        info = get_worker_info()
        if self.generator is None or info is None or self._worker_seed == info.seed:
            return
        self.generator.manual_seed((self._base_seed * 1_000_003 + info.seed) % 2**63)
        self._worker_seed = info.seed

    def __call__(self, sample: Sample) -> Sample:
        self._reseed_in_worker()
        wrapped = {k: (_WRAPPERS[k](v) if k in _WRAPPERS else v) for k, v in sample.items()}
        out = self.pipeline(wrapped) if self.pipeline is not None else wrapped
        return {
            k: (v.as_subclass(torch.Tensor).contiguous() if k in _WRAPPERS else v)
            for k, v in out.items()
        }

    def __repr__(self) -> str:
        return f"JointTransform({self.transforms})"


def build_transforms(
    *,
    crop_size: int | Sequence[int] | None = None,
    scale: tuple[float, float] | None = None,
    hflip: bool = False,
    vflip: bool = False,
    rot90: bool = False,
    elastic_std: float = 0.0,
    colour_jitter: float = 0.0,
    invert: float = 0.0,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
) -> JointTransform:
    """The training augmentation, in this order: scale, 90° rotation, flips, colour, crop,
    elastic.

    Cropping after the rotation keeps every output at ``crop_size``; the elastic deformation
    acts on the crop, as in the paper, where it deforms the training tile.

    Args:
        crop_size: Output size (int or (h, w)); None keeps each image's size.
        scale: Range of random scale factors, e.g. (0.75, 1.25); None for no scaling.
        hflip: Random left–right flips.
        vflip: Random up–down flips.
        rot90: Random rotations by multiples of 90°.
        elastic_std: Standard deviation of the elastic displacements (pixels); 0 for none.
        colour_jitter: :class:`ColourJitter`'s strength; 0 (and no ``invert``) for none.
        invert: Probability of inverting the image's intensities.
        ignore_index: Mask value for padded pixels.
        generator: Source of randomness shared by all steps; None for the global generator.
    """
    steps: list[v2.Transform] = []
    if scale is not None:
        steps.append(RandomScale(tuple(scale), generator))
    if rot90:
        steps.append(RandomRot90(generator))
    if hflip or vflip:
        steps.append(RandomFlip(0.5 * hflip, 0.5 * vflip, generator))
    if colour_jitter > 0 or invert > 0:  # before the crop: its contrast mean and inversion
        steps.append(ColourJitter(colour_jitter, invert, generator))  # see no padding
    if crop_size is not None:
        steps.append(RandomCrop(crop_size, ignore_index, generator))
    if elastic_std > 0:
        steps.append(ElasticDeformation(elastic_std, generator=generator))
    return JointTransform(steps, generator)
