"""Small blocks shared by the models: conv-BN-ReLU, the U-Net double convolution, and
padding to a multiple of a network's size divisor (with the matching crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import check_choice, check_positive_int


class ConvBNReLU(nn.Sequential):
    """3×3 (by default) convolution, optional batch norm, ReLU.

    Shape:
        (N, C_in, H, W) -> (N, C_out, H', W') with H' from the convolution arithmetic
        (H' = H for the default ``padding=dilation`` and stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        batch_norm: bool = True,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=not batch_norm,
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3×3 convolutions each followed by (optional) batch norm and ReLU, as in U-Net.

    With ``padding="valid"`` each convolution trims one pixel per side, so the block maps
    H to H − 4 (the paper's form); with ``"same"`` it keeps H.

    Shape:
        (N, C_in, H, W) -> (N, C_out, H − 4, W − 4) for "valid", (N, C_out, H, W) for "same".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        padding: str = "same",
        batch_norm: bool = True,
    ) -> None:
        pad = 1 if check_choice("DoubleConv padding", padding, ("same", "valid")) == "same" else 0
        super().__init__(
            ConvBNReLU(in_channels, out_channels, padding=pad, batch_norm=batch_norm),
            ConvBNReLU(out_channels, out_channels, padding=pad, batch_norm=batch_norm),
        )


def pad_to_multiple(
    x: torch.Tensor, divisor: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad H and W up to the next multiple of ``divisor``, splitting the padding evenly.

    Reflection is used where the image is large enough and replication otherwise, so the
    network never sees an artificial zero border. Returns the padded tensor and the
    ``(left, right, top, bottom)`` amounts for :func:`crop_padding`.

    Shape:
        (N, C, H, W) -> (N, C, ceil(H/d)·d, ceil(W/d)·d)
    """
    check_positive_int("size divisor", divisor)
    h, w = x.shape[-2:]
    ph = (-h) % divisor
    pw = (-w) % divisor
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pads
    mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
    return F.pad(x, pads, mode=mode), pads


def crop_padding(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on a tensor at the padded resolution.

    Shape:
        (N, K, H_padded, W_padded) -> (N, K, H, W)
    """
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
