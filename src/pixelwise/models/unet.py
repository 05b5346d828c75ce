"""U-Net: a contracting path, an expanding path and skip concatenation at every level.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597.

Differs from the paper: batch norm after every 3×3 convolution and "same" padding by default
(logits at the input size), and no dropout at the end of the contracting path;
``padding="valid", batch_norm=False`` gives the paper's layers and shapes (572 → 388).

The size arithmetic of the unpadded form, for depth d (the paper has d = 4): each double
convolution trims 4 pixels, each pooling halves, each up-convolution doubles. An input of
size ``2**d · k + 8 · 2**d − 4`` reaches the bottom at size k (4 pooled sizes must be even on
the way down), and the output is ``k`` doubled-and-trimmed d times; every other size is
refused. :func:`unet_output_size` and :func:`unet_valid_sizes_near` do this arithmetic without
building a network, so that overlap-tile prediction can choose its tile size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message
from pixelwise.models.encoders import EncodedNetwork, Encoder, build_encoder
from pixelwise.models.registry import register_model
from pixelwise.nn.blocks import DoubleConv, crop_padding, pad_to_multiple

PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transposed", "bilinear")
_TRIM = 4  # two unpadded 3×3 convolutions remove 2 pixels per side


def _bottom_size(size: int, depth: int) -> int | None:
    """Size at the bottom of the unpadded contracting path, or None if ``size`` is refused."""
    for _ in range(depth):
        size -= _TRIM
        # A 2×2 pooling on an odd size would drop a row, and the skip would no longer align.
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= _TRIM
    return size if size >= 1 else None


def _expanded_size(bottom: int, depth: int) -> int | None:
    """Size after the unpadded expanding path starting from ``bottom``, or None if it vanishes."""
    for _ in range(depth):
        bottom = 2 * bottom - _TRIM
        if bottom < 1:
            return None
    return bottom


def _input_size_for_bottom(bottom: int, depth: int) -> int:
    size = bottom + _TRIM
    for _ in range(depth):
        size = 2 * size + _TRIM
    return size


def _smallest_bottom(depth: int) -> int:
    bottom = 1
    while _expanded_size(bottom, depth) is None:
        bottom += 1
    return bottom


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(message("input size", "be an int (one axis)", repr(size)))
    return size


def unet_output_size(size: int, *, depth: int = 4, padding: str = "valid") -> int | None:
    """Output size of U-Net along one axis, or None where the input size is refused.

    With ``padding="same"`` every size maps to itself; with ``"valid"`` only the sizes
    described in the module docstring are accepted (572 → 388 at depth 4).
    """
    _check_size(size)
    if padding == "same":
        return size if size >= 1 else None
    bottom = _bottom_size(size, depth)
    return None if bottom is None else _expanded_size(bottom, depth)


def unet_valid_sizes_near(
    size: int, *, depth: int = 4, padding: str = "valid"
) -> tuple[int | None, int]:
    """The largest accepted input size ≤ ``size`` (None if there is none) and the smallest ≥ it.

    Both equal ``size`` when it is accepted.
    """
    _check_size(size)
    if padding == "same":
        return (size, size) if size >= 1 else (None, 1)
    step = 2**depth
    offset = _input_size_for_bottom(0, depth)
    smallest = _smallest_bottom(depth)
    low, high = math.floor((size - offset) / step), math.ceil((size - offset) / step)
    lower = _input_size_for_bottom(low, depth) if low >= smallest else None
    return lower, _input_size_for_bottom(max(high, smallest), depth)


def _up(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """Double the size and halve the channels.

    ``"transposed"`` is the paper's 2×2 up-convolution. ``"bilinear"`` interpolates and then
    applies a 1×1 convolution: a 1×1 (not 3×3) kernel keeps the size arithmetic of both modes
    identical and adds no zero border to the unpadded network. The interpolation still clamps
    at the map's edge, so with ``padding="valid"`` only the up-convolution makes overlapping
    tiles agree exactly with a prediction of the whole image.
    """
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


def _center_crop(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Crop the centre ``size`` of a skip feature map (a no-op with same padding)."""
    top = (x.shape[-2] - size[0]) // 2
    left = (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


@torch.no_grad()
def _init_paper_(module: nn.Module) -> None:
    """Gaussian weights with std sqrt(2 / N), N the incoming connections of a unit (paper §3)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.ConvTranspose2d):
            # With stride == kernel each output unit sees one tap of every input channel.
            m.weight.normal_(0.0, math.sqrt(2.0 / m.in_channels))
        else:
            continue
        if m.bias is not None:
            m.bias.zero_()


class _UncheckedUNet(nn.Module):
    """A valid-padding U-Net's layers without its Python size check: it takes only the sizes
    the network accepts, unchecked."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet
        # Exporters switch the root to eval and back; the root's mode must not change the net's.
        self.train(unet.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet.head(self.unet._encode_decode(images))  # (N, K, H', W')


class UNet(nn.Module):
    """U-Net with configurable depth, width, padding and upsampling.

    Args:
        num_classes: K, the number of output channels.
        in_channels: C, the number of image channels.
        depth: number of 2×2 poolings (4 in the paper).
        base_width: channels at the first level; level i has ``base_width · 2**i``.
        padding: ``"same"`` (any H, W; padded inside to a multiple of ``2**depth``) or
            ``"valid"`` (the paper's unpadded convolutions; smaller output, sizes checked).
        upsampling: ``"transposed"`` (2×2 up-convolution) or ``"bilinear"`` (+ 1×1 conv).
        batch_norm: batch norm after each 3×3 convolution.

    Shape:
        images: (N, C, H, W) float.
        output: (N, K, H, W) for "same"; (N, K, H', W') for "valid" with
        H' = :meth:`output_size` (H).

    ``size_divisor`` is ``2**depth`` in both modes; with "valid" an input size must also sit
    at the right offset (:meth:`is_valid_input_size`, :meth:`valid_input_sizes_near`), and
    nothing is padded inside.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        depth: int = 4,
        base_width: int = 64,
        padding: str = "same",
        upsampling: str = "transposed",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.depth = check_positive_int("depth", depth)
        self.padding = check_choice("padding", padding, PADDINGS)
        check_choice("upsampling", upsampling, UPSAMPLINGS)
        if not isinstance(batch_norm, bool):
            raise TypeError(message("batch_norm", "be True or False", repr(batch_norm)))
        widths = tuple(
            check_positive_int("base_width", base_width) * 2**i for i in range(depth + 1)
        )
        ins = (in_channels, *widths[:-2])  # (C, 64, 128, 256) at the defaults
        conv = {"padding": padding, "batch_norm": batch_norm}
        self.down = nn.ModuleList(
            DoubleConv(i, o, **conv) for i, o in zip(ins, widths[:-1], strict=True)
        )
        self.pool = nn.ModuleList(nn.MaxPool2d(2) for _ in range(depth))
        self.bottom = DoubleConv(widths[-2], widths[-1], **conv)  # 512 -> 1024 at the defaults
        # up[i] and dec[i] return to level i: widths[i + 1] -> widths[i], then the skip is joined.
        self.up = nn.ModuleList(_up(widths[i + 1], widths[i], upsampling) for i in range(depth))
        self.dec = nn.ModuleList(DoubleConv(2 * widths[i], widths[i], **conv) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        _init_paper_(self)

        self.size_divisor = 2**depth
        downs = [name for i in range(depth) for name in (f"down.{i}", f"pool.{i}")]
        ups = [name for i in reversed(range(depth)) for name in (f"up.{i}", f"dec.{i}")]
        self.stage_names = (*downs, "bottom", *ups, "head")

    def output_size(self, input_size: int) -> int:
        """Output size along one axis; raises ValueError for a size the network refuses."""
        out = unet_output_size(input_size, depth=self.depth, padding=self.padding)
        if out is None:
            raise ValueError(self._size_error("input size", input_size))
        return out

    def is_valid_input_size(self, input_size: int) -> bool:
        """Whether the network accepts ``input_size`` along an axis (always, with "same")."""
        return unet_output_size(input_size, depth=self.depth, padding=self.padding) is not None

    def valid_input_sizes_near(self, input_size: int) -> tuple[int | None, int]:
        """The nearest accepted sizes below and above ``input_size`` (see
        :func:`unet_valid_sizes_near`)."""
        return unet_valid_sizes_near(input_size, depth=self.depth, padding=self.padding)

    def describe_input_size(self, input_size: int, axis: str = "size") -> str:
        """One line on ``input_size`` along ``axis``: whether it is valid, and its neighbours.

        A valid size is called valid, with the valid sizes just below and above it; an
        invalid one gets the nearest valid sizes, e.g. ``"height 570 is not a valid input size
        for this network; nearest valid: 556 or 572"``.
        """
        if not self.is_valid_input_size(input_size):
            lower, upper = self.valid_input_sizes_near(input_size)
            nearest = f"{lower} or {upper}" if lower is not None else f"{upper} (the smallest)"
            return (
                f"{axis} {input_size} is not a valid input size for this network; "
                f"nearest valid: {nearest}"
            )
        below = self.valid_input_sizes_near(input_size - 1)[0] if input_size > 1 else None
        above = self.valid_input_sizes_near(input_size + 1)[1]
        return (
            f"{axis} {input_size} is a valid input size; "
            f"the valid {axis}s next to it are {below or '-'} and {above}"
        )

    def _size_error(self, what: str, size: int) -> str:
        lower, upper = self.valid_input_sizes_near(size)
        nearest = f"{lower} or {upper}" if lower is not None else f"{upper} (the smallest)"
        step, offset = 2**self.depth, _input_size_for_bottom(0, self.depth)
        k_min = _smallest_bottom(self.depth)
        return message(
            what,
            f"be {step}·k + {offset} with k >= {k_min} (padding='valid', depth {self.depth})",
            size,
            f"the nearest valid sizes are {nearest}; crop or pad the image, or use padding='same'",
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, self.in_channels)
        if self.padding == "valid":
            for axis, size in (("input height", x.shape[-2]), ("input width", x.shape[-1])):
                if not self.is_valid_input_size(size):
                    raise ValueError(self._size_error(axis, size))
            return self.head(self._encode_decode(x))  # (N, K, H', W')
        x, pads = pad_to_multiple(x, self.size_divisor)  # (N, C, H16, W16) at depth 4
        return crop_padding(self.head(self._encode_decode(x)), pads)  # (N, K, H, W)

    def export_module(self) -> nn.Module:
        """The form that traces for any size (used by :mod:`pixelwise.inference.export`): a
        valid-padding U-Net without its Python size check, which tracing would freeze at the
        traced size (its outputs equal the model's); a same-padding U-Net as it is."""
        return _UncheckedUNet(self) if self.padding == "valid" else self

    def _encode_decode(self, x: torch.Tensor) -> torch.Tensor:
        # xs = [x1, x2, x3, x4] and u = x5 at the paper's depth; with "valid" padding each
        # DoubleConv trims 4 (572 -> 568, 284 -> 280, ...).
        xs = []
        for down, pool in zip(self.down, self.pool, strict=True):
            x = down(x)  # (N, 64·2^i, H_i, W_i)
            xs.append(x)
            x = pool(x)  # (N, 64·2^i, H_i/2, W_i/2)
        u = self.bottom(x)  # x5: (N, 1024, H/16, W/16)
        for i in reversed(range(self.depth)):  # u4, u3, u2, u1
            u = self.up[i](u)  # (N, 64·2^i, 2·h, 2·w)
            u = torch.cat((_center_crop(xs[i], u.shape[-2:]), u), dim=1)  # (N, 2·64·2^i, ..)
            u = self.dec[i](u)  # (N, 64·2^i, ..)
        return u  # u1: (N, 64, H', W')


class EncoderUNet(EncodedNetwork):
    """A U-Net decoder over an :class:`~pixelwise.models.encoders.Encoder`'s five feature
    maps (strides 2 … 32): at each stride from 16 to 2 a ×2 up-step, the encoder's features
    of that stride joined, and a double 3×3 convolution; then a last ×2 up-step and double
    convolution at the input resolution, and a 1×1 head.

    Args:
        num_classes: K.
        in_channels: C.
        encoder: The encoder (output stride 32).
        base_width: Decoder channels at the input resolution; ``base_width · 2**i`` at stride
            ``2**i`` (16 gives 16, 32, 64, 128, 256: segmentation_models_pytorch's U-Net decoder).
        upsampling: ``"transposed"`` (2×2 up-convolution) or ``"bilinear"`` (+ 1×1 conv).
        batch_norm: Batch norm after each decoder convolution.
        full_resolution_skip: Also join, at the input resolution, a double 3×3 convolution
            (``base_width`` channels) of the image itself. The encoder's first features are at
            stride 2, so without it the last decoder stage sees the image only through
            upsampled features; with it, edges a pixel or two wide (between touching small
            objects) reach the head at their own resolution.

    Shape:
        (N, C, H, W) -> (N, K, H, W), any H, W (padded inside to a multiple of 32).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        encoder: Encoder,
        *,
        base_width: int = 16,
        upsampling: str = "transposed",
        batch_norm: bool = True,
        full_resolution_skip: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels, encoder)
        check_choice("upsampling", upsampling, UPSAMPLINGS)
        if not isinstance(full_resolution_skip, bool):
            raise ValueError(
                message("full_resolution_skip", "be true or false", repr(full_resolution_skip))
            )
        widths = [check_positive_int("base_width", base_width) * 2**i for i in range(5)]
        conv = {"padding": "same", "batch_norm": batch_norm}
        # The image's own features at stride 1 (or none), then the encoder's at 2, 4, 8, 16.
        self.stem = DoubleConv(in_channels, widths[0], **conv) if full_resolution_skip else None
        skips = (widths[0] if full_resolution_skip else 0, *encoder.channels[:-1])
        ins = (*widths[1:], encoder.channels[-1])  # what each up-step receives
        self.up = nn.ModuleList(_up(ins[i], widths[i], upsampling) for i in range(5))
        self.dec = nn.ModuleList(
            DoubleConv(widths[i] + skips[i], widths[i], **conv) for i in range(5)
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        for module in (self.stem, self.up, self.dec, self.head):
            if module is not None:
                _init_paper_(module)
        ups = [name for i in reversed(range(5)) for name in (f"up.{i}", f"dec.{i}")]
        stem = ("stem",) if full_resolution_skip else ()
        self.stage_names = (*stem, *self.encoder_stage_names(), *ups, "head")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        padded, pads = self.pad(images)  # (N, C, H₃₂, W₃₂)
        skips = [self.stem(padded)] if self.stem is not None else [None]  # stride 1
        features = self.encoder(padded)  # strides 2 … 32
        skips += features[:-1]
        u = features[-1]  # (N, C5, H/32, W/32)
        for i in reversed(range(5)):  # strides 16, 8, 4, 2, 1
            u = self.up[i](u)  # (N, widths[i], H/2**i, W/2**i)
            if skips[i] is not None:
                u = torch.cat((skips[i], u), dim=1)
            u = self.dec[i](u)
        return self.crop(self.head(u), pads)  # (N, K, H, W)


@register_model(
    "unet",
    summary="U-Net: contracting/expanding paths with skip concatenation (same or valid padding)",
    paper="https://arxiv.org/abs/1505.04597",
)
def build_unet(
    *,
    num_classes: int,
    in_channels: int = 3,
    depth: int = 4,
    base_width: int | None = None,
    padding: str = "same",
    upsampling: str = "transposed",
    batch_norm: bool = True,
    encoder: str | None = None,
    encoder_weights: str | None = None,
    allow_download: bool = False,
    full_resolution_skip: bool = False,
) -> nn.Module:
    """Build :class:`UNet` (base width 64 by default); ``padding="valid", batch_norm=False``
    is the paper's network. With ``encoder`` (see :mod:`pixelwise.models.encoders`),
    :class:`EncoderUNet` over that encoder (base width 16 by default; depth is the
    encoder's, padding same); ``encoder_weights`` None, ``"imagenet"`` or a local file;
    ``allow_download`` lets torchvision fetch its ImageNet file when it is not cached;
    ``full_resolution_skip`` joins the image's own features at stride 1 (encoders only: the
    plain U-Net's first level already is one)."""
    if encoder is not None:
        if depth != 4 or padding != "same":
            raise ValueError(
                message(
                    "unet with an encoder",
                    "keep depth 4 and padding 'same' (the encoder sets the levels)",
                    f"depth {depth!r}, padding {padding!r}",
                    "set depth = 4 and padding = 'same', or leave them out",
                )
            )
        body = build_encoder(
            encoder,
            in_channels=in_channels,
            weights=encoder_weights,
            allow_download=allow_download,
        )
        return EncoderUNet(
            num_classes,
            in_channels,
            body,
            base_width=16 if base_width is None else base_width,
            upsampling=upsampling,
            batch_norm=batch_norm,
            full_resolution_skip=full_resolution_skip,
        )
    if encoder_weights is not None:
        raise ValueError(
            message("encoder_weights", "come with an encoder", repr(encoder_weights), "set encoder")
        )
    if full_resolution_skip:
        raise ValueError(
            message(
                "full_resolution_skip",
                "come with an encoder (the plain U-Net joins full-resolution features already)",
                repr(full_resolution_skip),
                "set encoder, or leave full_resolution_skip out",
            )
        )
    return UNet(
        num_classes,
        in_channels,
        depth=depth,
        base_width=64 if base_width is None else base_width,
        padding=padding,
        upsampling=upsampling,
        batch_norm=batch_norm,
    )
