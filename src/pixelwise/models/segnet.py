"""SegNet and SegNet-Basic (Badrinarayanan, Kendall and Cipolla).

Paper: https://arxiv.org/abs/1511.00561 ("SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017).

The encoder max-pools and remembers where each maximum came from; the decoder upsamples by
putting each value back at that position (max-unpooling, zeros elsewhere) and densifies the
sparse map with convolutions. No features are copied across, only the indices.

Odd sizes: pooling rounds up (``ceil_mode``, as the authors' Caffe pooling does), so an odd
side keeps its last row or column: 45 -> 23, not 22, and CamVid's 360×480 goes 180×240,
90×120, 45×60, 23×30, 12×15. Unpooling is given the size from before each pooling, so any
H, W comes back exactly and no padding is needed (``size_divisor`` 1).

SegNet-Basic's ``decoder`` option swaps the upsampling for the paper's decoder comparison
(Table 1): ``"unpool"`` (SegNet), ``"deconv"`` (a learned 2× transposed convolution,
bilinear-initialised, as FCN upsamples) or ``"bilinear"`` (fixed 2× bilinear interpolation).
The two without indices upsample to 2·⌈h/2⌉ and drop the extra last row or column an odd side
gets, which is where rounding-up pooling put the window that saw only that side's last row.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import torch
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message
from pixelwise.models.backbones import (
    VGGEncoder,
    check_torchvision_layout,
    check_width,
    init_like_torchvision_,
    read_state_dict,
    scale_channels,
)
from pixelwise.models.registry import register_model
from pixelwise.nn.blocks import ConvBNReLU
from pixelwise.nn.upsample import DeconvUpsample, Interpolate

logger = logging.getLogger(__name__)

PAPER = "https://arxiv.org/abs/1511.00561"

# Output channels of the decoder's convolutions at width 1.0, decode5 first: the encoder's
# 13 convolutions mirrored, except that the last mirror (64 -> C) is the classifier (64 -> K).
DECODER_CHANNELS: dict[int, tuple[int, ...]] = {
    5: (512, 512, 512),
    4: (512, 512, 256),
    3: (256, 256, 128),
    2: (128, 64),
    1: (64,),
}
# How SegNet-Basic's decoder upsamples: with the encoder's indices, or without them.
DECODERS = ("unpool", "deconv", "bilinear")


class DeconvToSize(DeconvUpsample):
    """A learned 2× transposed convolution (bilinear-initialised, FCN's upsampling) whose
    output is cropped to the size before pooling.

    Shape:
        (N, D, h, w) -> (N, D, H, W) with H ∈ {2h − 1, 2h}, W ∈ {2w − 1, 2w}.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 2, bilinear=True)

    def forward(self, x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        up = super().forward(x)  # (N, D, 2h, 2w)
        return up[..., : output_size[0], : output_size[1]]  # (N, D, H, W)


class BilinearToSize(Interpolate):
    """Fixed 2× bilinear interpolation (no parameters), cropped to the size before pooling.

    Shape:
        (N, D, h, w) -> (N, D, H, W) with H ∈ {2h − 1, 2h}, W ∈ {2w − 1, 2w}.
    """

    def __init__(self) -> None:
        super().__init__(scale_factor=2, mode="bilinear")

    def forward(self, x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        up = super().forward(x)  # (N, D, 2h, 2w)
        return up[..., : output_size[0], : output_size[1]]  # (N, D, H, W)


class SegNet(nn.Module):
    """SegNet: the VGG16-BN encoder (13 convolutions, 5 max-poolings that keep their
    indices) and a mirrored decoder that max-unpools with those indices.

    Paper: https://arxiv.org/abs/1511.00561 (Fig. 2). Differs from the paper in that the
    encoder comes from torchvision's ``vgg16_bn`` definition (biases before batch norm kept,
    so its weights load); the decoder is conv-BN-ReLU without biases, and the classifier is
    the 3×3 convolution to K of the authors' Caffe model, returning logits (no soft-max).

    Args:
        num_classes: K.
        in_channels: C.
        width: channel multiplier (1.0 gives 64…512).

    Shape:
        (N, C, H, W) -> (N, K, H, W). Stage b is at ⌈H/2^b⌉ × ⌈W/2^b⌉ (see module docs).
    """

    def __init__(self, *, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.width = check_width(width)
        self.size_divisor = 1
        self.encoder = VGGEncoder(
            in_channels=in_channels, width=self.width, batch_norm=True, ceil_mode=True
        )
        for b in (5, 4, 3, 2, 1):
            outs = tuple(scale_channels(c, self.width) for c in DECODER_CHANNELS[b])
            self.add_module(f"unpool{b}", nn.MaxUnpool2d(2, stride=2))
            self.add_module(f"decode{b}", _conv_stack((self.encoder.channels[b - 1], *outs)))
        self.classifier = nn.Conv2d(self.encoder.channels[0], num_classes, 3, padding=1)
        init_like_torchvision_(self)
        decoder = [f"{step}{b}" for b in (5, 4, 3, 2, 1) for step in ("unpool", "decode")]
        self.stage_names: tuple[str, ...] = (
            *(f"encoder.pool{b}" for b in range(1, 6)),
            *decoder,
            "classifier",
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.in_channels)
        p1, p2, p3, p4, p5 = self.encoder.forward_with_indices(images)  # stage b at H/2^b
        u5 = self.unpool5(p5.features, p5.indices, output_size=p5.size)  # (N, 512, H/16, W/16)
        d5 = self.decode5(u5)  # (N, 512, H/16, W/16)
        u4 = self.unpool4(d5, p4.indices, output_size=p4.size)  # (N, 512, H/8, W/8)
        d4 = self.decode4(u4)  # (N, 256, H/8, W/8)
        u3 = self.unpool3(d4, p3.indices, output_size=p3.size)  # (N, 256, H/4, W/4)
        d3 = self.decode3(u3)  # (N, 128, H/4, W/4)
        u2 = self.unpool2(d3, p2.indices, output_size=p2.size)  # (N, 128, H/2, W/2)
        d2 = self.decode2(u2)  # (N, 64, H/2, W/2)
        u1 = self.unpool1(d2, p1.indices, output_size=p1.size)  # (N, 64, H, W)
        d1 = self.decode1(u1)  # (N, 64, H, W)
        return self.classifier(d1)  # (N, K, H, W)

    def load_vgg16_bn(self, path: str | Path) -> None:
        """Fill the encoder from the ``features.*`` of a local torchvision ``vgg16_bn`` file.

        Only at width 1.0 with 3 input channels, the layout the file has.

        Raises:
            FileNotFoundError: no such file.
            ValueError: wrong width/in_channels, an unreadable file, or a file that is not
                a VGG16-BN state dict (one line naming the file).
        """
        what = "encoder_weights"
        check_torchvision_layout(self.width, self.in_channels, architecture="vgg16_bn", what=what)
        state = read_state_dict(path, what)
        self.encoder.load_torchvision_features(state, source=str(path), what=what)
        logger.info("loaded VGG16-BN encoder weights from %s", path)


class SegNetBasic(nn.Module):
    """SegNet-Basic, the paper's small model for analysis: 4 encoders and 4 decoders of one
    7×7 convolution each, ``width`` (64) features, batch norm everywhere, ReLU only in the
    encoder, convolutions without biases, and a 1×1 classifier.

    Paper: https://arxiv.org/abs/1511.00561 (Sec. 4). Differs from the authors' Caffe model
    in leaving out the local response normalisation of the input; normalise the images
    instead. The ``"deconv"`` decoder stands in for the paper's FCN-Basic without its
    encoder-feature additions: only the upsampling differs between the three decoders.

    Args:
        num_classes: K.
        in_channels: C.
        width: features in every layer (the paper's 64).
        kernel_size: odd kernel size of every convolution (the paper's 7).
        decoder: ``"unpool"`` (max-unpooling with the encoder's indices, SegNet),
            ``"deconv"`` (learned 2× transposed convolutions, D × D × 4 × 4 weights each,
            bilinear-initialised) or ``"bilinear"`` (fixed 2× bilinear interpolation). The
            convolutions are the same in all three; ``"deconv"`` adds 4 · D² · 16 parameters.

    Shape:
        (N, C, H, W) -> (N, K, H, W). Stage b is at ⌈H/2^b⌉ × ⌈W/2^b⌉ (see module docs).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        kernel_size: int = 7,
        decoder: str = "unpool",
    ) -> None:
        super().__init__()
        width = check_positive_int("width", width)
        if check_positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(
                message("kernel_size", "be odd (so convolutions keep the size)", kernel_size)
            )
        self.decoder = check_choice("decoder", decoder, DECODERS)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.size_divisor = 1
        for b in (1, 2, 3, 4):
            features_in = in_channels if b == 1 else width
            self.add_module(f"encode{b}", ConvBNReLU(features_in, width, kernel_size))
            self.add_module(f"pool{b}", _pool_with_indices())
        # Unpooling keeps its name (and the stage names) of the original SegNet-Basic.
        self.up_name = "unpool" if self.decoder == "unpool" else "upsample"
        for b in (4, 3, 2, 1):
            self.add_module(f"{self.up_name}{b}", _upsampling(self.decoder, width))
            self.add_module(f"decode{b}", _conv_bn(width, width, kernel_size))
        self.classifier = nn.Conv2d(width, num_classes, 1)
        init_like_torchvision_(self)  # convolutions only: the transposed ones keep bilinear
        self.stage_names: tuple[str, ...] = (
            *(f"pool{b}" for b in (1, 2, 3, 4)),
            *(f"{step}{b}" for b in (4, 3, 2, 1) for step in (self.up_name, "decode")),
            "classifier",
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.in_channels)
        e1 = self.encode1(images)  # (N, 64, H, W)
        x1, i1 = self.pool1(e1)  # (N, 64, H/2, W/2)
        e2 = self.encode2(x1)
        x2, i2 = self.pool2(e2)  # (N, 64, H/4, W/4)
        e3 = self.encode3(x2)
        x3, i3 = self.pool3(e3)  # (N, 64, H/8, W/8)
        e4 = self.encode4(x3)
        x4, i4 = self.pool4(e4)  # (N, 64, H/16, W/16)
        d4 = self.decode4(self._upsample(4, x4, i4, e4))  # (N, 64, H/8, W/8)
        d3 = self.decode3(self._upsample(3, d4, i3, e3))  # (N, 64, H/4, W/4)
        d2 = self.decode2(self._upsample(2, d3, i2, e2))  # (N, 64, H/2, W/2)
        d1 = self.decode1(self._upsample(1, d2, i1, e1))  # (N, 64, H, W)
        return self.classifier(d1)  # (N, K, H, W)

    def _upsample(
        self, b: int, x: torch.Tensor, indices: torch.Tensor, before: torch.Tensor
    ) -> torch.Tensor:
        """Stage ``b``'s upsampling back to the size of ``before`` (what pooling b received)."""
        up = getattr(self, f"{self.up_name}{b}")
        size = tuple(before.shape[-2:])
        if self.decoder == "unpool":
            return up(x, indices, output_size=size)  # (N, 64, H_b, W_b)
        return up(x, size)  # (N, 64, H_b, W_b)


def _upsampling(decoder: str, width: int) -> nn.Module:
    if decoder == "deconv":
        return DeconvToSize(width)
    if decoder == "bilinear":
        return BilinearToSize()
    return nn.MaxUnpool2d(2, stride=2)


def _pool_with_indices() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)


def _conv_stack(channels: tuple[int, ...]) -> nn.Sequential:
    """3×3 conv-BN-ReLU layers through ``channels`` (in, out1, out2, ...)."""
    return nn.Sequential(*(ConvBNReLU(a, b) for a, b in itertools.pairwise(channels)))


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    # SegNet-Basic's decoder has no ReLU (paper, Sec. 4), and batch norm makes a bias moot.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


@register_model(
    "segnet",
    summary="SegNet: VGG16-BN encoder, decoder upsampling by max-unpooling with the "
    "encoder's indices (Badrinarayanan et al. 2017)",
    paper=PAPER,
)
def build_segnet(
    *,
    num_classes: int,
    in_channels: int = 3,
    width: float = 1.0,
    encoder_weights: str | None = None,
) -> SegNet:
    """SegNet (see :class:`SegNet`); ``encoder_weights`` is a local torchvision vgg16_bn file."""
    if encoder_weights is not None:
        check_torchvision_layout(check_width(width), in_channels, architecture="vgg16_bn")
    model = SegNet(num_classes=num_classes, in_channels=in_channels, width=width)
    if encoder_weights is not None:
        model.load_vgg16_bn(encoder_weights)
    return model


@register_model(
    "segnet_basic",
    summary="SegNet-Basic: 4 encoders/decoders, 7×7 convolutions, 64 features, no decoder "
    "ReLU; decoder unpool, deconv or bilinear (Badrinarayanan et al. 2017)",
    paper=PAPER,
)
def build_segnet_basic(
    *,
    num_classes: int,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int = 7,
    decoder: str = "unpool",
) -> SegNetBasic:
    """SegNet-Basic (see :class:`SegNetBasic`); ``decoder`` picks the upsampling."""
    return SegNetBasic(
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        kernel_size=kernel_size,
        decoder=decoder,
    )
