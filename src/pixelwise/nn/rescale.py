"""A network run at a reduced input scale: the image resized in, the logits resized back.

A run trained with ``data.input_scale = s`` (images and masks resized by ``s`` before the
random crop) saw its images at that scale; :class:`Rescaled` applies the same resize wherever
the trained network predicts (validation, ``pixelwise evaluate``, ``predict``, tiles,
export), so that nothing ever predicts at a scale the network was not trained for:

    logits = resize(network(resize(images, s)), (H, W))

The image goes down with bilinear interpolation and antialiasing (a triangle filter as wide
as the scale step), to ``round(s·H) × round(s·W)``, exactly as the training augmentation
resizes (:class:`pixelwise.data.transforms.RandomScale`, torchvision's resize); the logits come back bilinearly (``align_corners=False``) to the input's H × W. The wrapper holds
the network (not a copy): checkpoints save the bare network's weights
(:func:`pixelwise.inference.unwrap_model` steps through it), and the scale lives in the run's
config. A network whose output is smaller than its input (a valid-padding U-Net) is refused:
overlap-tile arithmetic assumes the native scale.

ONNX has no antialiased resize in the opsets torch exports to, so :meth:`Rescaled.export_module`
(used by :mod:`pixelwise.inference.export` and the ONNX Runtime backend) writes the downsampling
as two matrix products with the same triangle-filter weights, computed in the graph from the
input size: equal to the antialiased resize to float rounding, for any input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import message


def check_scale(scale: object, what: str = "input scale") -> float:
    """A scale in (0, 1], finite, else one line naming ``what``."""
    ok = isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale)
    if not (ok and 0 < scale <= 1):
        raise ValueError(message(what, "be a finite number > 0 and <= 1", repr(scale)))
    return float(scale)


def _shrinks(network: nn.Module) -> bool:
    """Whether the network's output is smaller than its input (a valid U-Net's size
    arithmetic: ``valid_input_sizes_near`` and ``output_size``)."""
    if not all(hasattr(network, a) for a in ("valid_input_sizes_near", "output_size")):
        return False
    smallest = network.valid_input_sizes_near(1)[1]
    return network.output_size(smallest) < smallest


def scaled_length(length: int, scale: float) -> int:
    """``round(scale · length)`` (half to even), at least 1: the side the network sees."""
    return max(1, round(length * scale))


def downsample(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Images resized by ``scale`` (bilinear, antialiased) to :func:`scaled_length` sides.

    Shape:
        (N, C, H, W) -> (N, C, round(s·H), round(s·W)) (at least 1 × 1).
    """
    size = (scaled_length(images.shape[-2], scale), scaled_length(images.shape[-1], scale))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def upsample_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits resized bilinearly (``align_corners=False``) to ``size``.

    Shape:
        (N, K, h, w) -> (N, K, *size).
    """
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class Rescaled(nn.Module):
    """``network`` applied at ``scale`` of the input's size, its logits at the input's size.

    Args:
        network: The trained network (held, not copied); not one whose output shrinks.
        scale: In (0, 1]; the training's ``data.input_scale``.

    Attributes:
        network, scale; ``in_channels`` and ``num_classes`` are the network's;
        ``size_divisor`` is the network's divided by the scale (for ``scale = 1/n``, an input
        side that is a multiple of it reaches the network as a multiple of the network's).

    Shape:
        (N, C, H, W) -> (N, K, H, W).
    """

    def __init__(self, network: nn.Module, scale: float) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(message("network", "be a torch.nn.Module", type(network).__name__))
        if _shrinks(network):
            raise ValueError(
                message(
                    "a network run at an input scale",
                    "keep its input size",
                    "a network whose output is smaller (a valid-padding U-Net)",
                    "overlap-tile arithmetic assumes the native scale: train with "
                    "model.options.padding = 'same' or data.input_scale = 1",
                )
            )
        self.network = network
        self.scale = check_scale(scale)
        self.training = network.training

    def _fact(self, name: str) -> object:
        args = getattr(self.network, "pixelwise_args", None) or {}
        return args.get(name, getattr(self.network, name, None))

    @property
    def in_channels(self) -> int | None:
        return self._fact("in_channels")

    @property
    def num_classes(self) -> int | None:
        return self._fact("num_classes")

    @property
    def size_divisor(self) -> int:
        divisor = int(getattr(self.network, "size_divisor", 1))
        return max(1, round(divisor / self.scale))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        return upsample_to(self.network(downsample(images, self.scale)), size)

    def export_module(self) -> nn.Module:
        """The form that exports to ONNX for any size (see the module docstring); the
        network in its own export form when it declares one."""
        declared = getattr(self.network, "export_module", None)
        return _ExportRescaled(declared() if callable(declared) else self.network, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


def antialias_weights(length: torch.Tensor | int, scale: float, like: torch.Tensor) -> torch.Tensor:
    """The weights of :func:`downsample` along one axis of ``length`` pixels: row ``i`` the
    triangle filter (half-width ``r = length / out``) centred on output pixel ``i``, at input
    pixel centres, normalised; with tensor arithmetic only, so that tracing keeps the length
    free.

    Shape:
        returns (out, length), out = :func:`scaled_length` (``torch.round`` rounds half to
        even too), in ``like``'s dtype.
    """
    n = torch.as_tensor(length, dtype=torch.float64)
    out = torch.round(n * scale).clamp(min=1)
    step = n / out  # input pixels per output pixel (>= 1)
    centres = (torch.arange(out.to(torch.int64), device=like.device).double() + 0.5) * step
    pixels = torch.arange(length, device=like.device).double() + 0.5
    weights = (1 - (pixels[None, :] - centres[:, None]).abs() / step).clamp(min=0)
    return (weights / weights.sum(dim=1, keepdim=True)).to(like.dtype)


class _ExportRescaled(nn.Module):
    """:class:`Rescaled` with the downsampling as matrix products (export form only)."""

    def __init__(self, network: nn.Module, scale: float) -> None:
        super().__init__()
        self.network = network
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        rows = antialias_weights(height, self.scale, images)  # (h, H)
        cols = antialias_weights(width, self.scale, images)  # (w, W)
        small = torch.matmul(torch.matmul(rows, images), cols.transpose(0, 1))  # (N, C, h, w)
        return upsample_to(self.network(small), (height, width))
