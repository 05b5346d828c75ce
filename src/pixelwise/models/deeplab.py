"""DeepLabv3: a dilated ResNet and atrous spatial pyramid pooling (ASPP) with image pooling.

Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017, https://arxiv.org/abs/1706.05587.

Differs from the paper: the last ResNet block keeps unit rates (no Multi-Grid (1, 2, 4)), the
encoder is torchvision's ResNet (stride on the 3×3 convolution, "v1.5") rather than the
paper's, and the logits are upsampled so that feature centres land exactly on input pixels for
any H, W rather than only for sizes ≡ 1 mod output stride such as 513.

Geometry: every strided layer of the ResNet is centred (kernel k, padding (k − 1)/2), so a
feature map of an (H, W) image has ``ceil(H / OS)`` rows and feature row i is centred on image
row ``OS · i`` for any H (513 → 33 at OS 16, 65 at OS 8). No padding to a multiple is needed,
hence ``size_divisor = 1``; :func:`upsample_to_input` uses that alignment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message
from pixelwise.models.backbones import load_local_weights
from pixelwise.models.encoders import EncodedNetwork, Encoder, build_encoder, dilate_stage
from pixelwise.models.registry import register_model
from pixelwise.nn.blocks import ConvBNReLU

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
OUTPUT_STRIDES = (8, 16)
ASPP_RATES_AT_16 = (6, 12, 18)  # doubled at output stride 8 (paper §3.3)


def stage_dilations(output_stride: int) -> dict[str, tuple[int, int]]:
    """``{stage: (rate of its formerly strided conv, rate of the rest)}`` for dilated stages.

    >>> stage_dilations(16)
    {'layer4': (1, 2)}
    >>> stage_dilations(8)
    {'layer3': (1, 2), 'layer4': (2, 4)}
    """
    stride, rate, dilated = 4, 1, {}  # the stem (conv1 + max-pool) reduces by 4
    for name in ("layer2", "layer3", "layer4"):
        if stride * 2 > output_stride:
            dilated[name] = (rate, rate * 2)
            rate *= 2
        else:
            stride *= 2
    return dilated


def _adapt_stem(conv1: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A first convolution for ``in_channels`` image channels.

    With loaded weights the RGB filters are averaged and spread over the new channels
    (scaled by 3 / C so an image with equal channels gives the same response); otherwise the
    new convolution gets torchvision's initialisation.
    """
    if in_channels == conv1.in_channels:
        return conv1
    new = nn.Conv2d(in_channels, conv1.out_channels, 7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        if pretrained:
            mean = conv1.weight.mean(dim=1, keepdim=True)  # (64, 1, 7, 7)
            new.weight.copy_(mean.expand_as(new.weight) * (3 / in_channels))
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


class ResNetEncoder(nn.Module):
    """torchvision's ResNet without its classifier, dilated to an output stride of 8 or 16.

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``…), so its state dicts
    load directly.

    Shape:
        (N, C, H, W) -> (N, D, ceil(H/OS), ceil(W/OS)), D = 512 (resnet18/34) or 2048.
    """

    # (convolution, batch norm) attribute pairs that forward applies as bn(conv(x)) and
    # nothing else reads conv's output: inference folds them (pixelwise.inference.optimize).
    fold_pairs = (("conv1", "bn1"),)

    def __init__(
        self,
        name: str = "resnet50",
        *,
        output_stride: int = 16,
        in_channels: int = 3,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        resnet = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            load_local_weights(resnet, weights, what="backbone_weights")
        for stage, (previous, rate) in stage_dilations(output_stride).items():
            dilate_stage(getattr(resnet, stage), previous, rate)
        self.conv1 = _adapt_stem(resnet.conv1, in_channels, pretrained=weights is not None)
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.out_channels = resnet.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.relu(self.bn1(self.conv1(x)))  # (N, 64, H/2, W/2)
        x2 = self.layer1(self.maxpool(x1))  # (N, 64 or 256, H/4, W/4)
        x3 = self.layer2(x2)  # (N, 128 or 512, H/8, W/8)
        x4 = self.layer3(x3)  # (N, 256 or 1024, H/16, W/16); H/8 at OS 8
        return self.layer4(x4)  # x5: (N, 512 or 2048, H/OS, W/OS)


class _PooledBatchNorm(nn.BatchNorm2d):
    """Batch norm for a 1×1 pooled map: with one value per channel (a training batch of one)
    batch statistics are undefined, so the running statistics are used and left unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1×1 conv, batch norm, ReLU, broadcast.

    Shape:
        (N, D_in, h, w) -> (N, D, h, w), constant over h and w.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = _PooledBatchNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(self.pool(x))))  # (N, D, 1, 1)
        # Bilinear upsampling of a 1×1 map is a constant map: broadcasting is exact.
        return y.expand(-1, -1, *x.shape[-2:])  # (N, D, h, w)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (paper Fig. 5): a 1×1 branch, one 3×3 branch per rate,
    image pooling, concatenation and a 1×1 projection, each with batch norm and ReLU.

    Shape:
        (N, D_in, h, w) -> (N, D, h, w)
    """

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.rates = rates
        self.conv1x1 = ConvBNReLU(in_channels, channels, 1)
        self.atrous = nn.ModuleList(ConvBNReLU(in_channels, channels, 3, dilation=r) for r in rates)
        self.image_pool = ImagePooling(in_channels, channels)
        self.project = ConvBNReLU((len(rates) + 2) * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.conv1x1(x), *(conv(x) for conv in self.atrous), self.image_pool(x))
        y = torch.cat(branches, dim=1)  # (N, 5·D, h, w)
        return self.project(y)  # (N, D, h, w)


def upsample_to_input(logits: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Bilinear upsampling that puts feature centre i on input pixel ``stride · i``.

    The last ``H − ((h − 1)·stride + 1)`` rows (and columns), beyond the last feature centre,
    repeat the edge. For H ≡ 1 mod stride this equals ``F.interpolate(..., size,
    align_corners=True)``, DeepLab's own resize.

    Shape:
        (N, K, h, w) with h = ceil(H / stride) -> (N, K, H, W)
    """
    h, w = logits.shape[-2:]
    grid = ((h - 1) * stride + 1, (w - 1) * stride + 1)
    if grid[0] > size[0] or grid[1] > size[1]:
        raise ValueError(
            message(
                "logits",
                f"have ceil(size / {stride}) rows and columns",
                f"{(h, w)} for {tuple(size)}",
                "pass the stride the logits were computed at",
            )
        )
    # (N, K, (h − 1)·stride + 1, (w − 1)·stride + 1): one input pixel per feature centre
    y = F.interpolate(logits, size=grid, mode="bilinear", align_corners=True)
    return F.pad(y, (0, size[1] - grid[1], 0, size[0] - grid[0]), mode="replicate")  # (N, K, H, W)


class DeepLabV3(nn.Module):
    """DeepLabv3: dilated ResNet, ASPP, 1×1 classifier, bilinear upsampling to the input.

    Args:
        num_classes: K.
        in_channels: C.
        backbone: one of ``BACKBONES``.
        output_stride: 16 (paper's default; layer4 dilated) or 8 (layer3 and layer4 dilated).
        aspp_channels: D, the width of every ASPP branch and of the projection (256 in the paper).
        backbone_weights: a local torchvision ResNet state-dict file (never downloaded).

    Shape:
        images: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_channels: int = 256,
        backbone_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        check_choice("backbone", backbone, BACKBONES)
        if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
            raise ValueError(message("output_stride", "be 8 or 16", repr(output_stride)))
        check_positive_int("aspp_channels", aspp_channels)
        self.in_channels = in_channels
        self.output_stride = output_stride
        self.backbone = ResNetEncoder(
            backbone, output_stride=output_stride, in_channels=in_channels, weights=backbone_weights
        )
        rates = tuple(r * 16 // output_stride for r in ASPP_RATES_AT_16)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, rates)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.size_divisor = 1
        self.stage_names = (
            "backbone.relu",
            "backbone.maxpool",
            *(f"backbone.layer{i}" for i in range(1, 5)),
            "aspp",
            "classifier",
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, self.in_channels)
        x5 = self.backbone(x)  # (N, 2048, ceil(H/OS), ceil(W/OS))
        a = self.aspp(x5)  # (N, 256, ceil(H/OS), ceil(W/OS))
        logits = self.classifier(a)  # (N, K, ceil(H/OS), ceil(W/OS))
        return upsample_to_input(logits, x.shape[-2:], self.output_stride)  # (N, K, H, W)


class EncoderDeepLabV3(EncodedNetwork):
    """DeepLabv3's head over an :class:`~pixelwise.models.encoders.Encoder` at output
    stride 16 (its last stage dilated): ASPP with image pooling, a 1×1 classifier, and
    bilinear upsampling to the (padded) input, cropped back.

    Shape:
        (N, C, H, W) -> (N, K, H, W), any H, W (padded inside to a multiple of 32).
    """

    def __init__(
        self, num_classes: int, in_channels: int, encoder: Encoder, *, aspp_channels: int = 256
    ) -> None:
        super().__init__(num_classes, in_channels, encoder)
        check_positive_int("aspp_channels", aspp_channels)
        self.output_stride = 16
        self.aspp = ASPP(encoder.channels[-1], aspp_channels, ASPP_RATES_AT_16)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.stage_names = (*self.encoder_stage_names(), "aspp", "classifier")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, pads, size = self.encode(images)
        logits = self.classifier(self.aspp(features[-1]))  # (N, K, H'/16, W'/16)
        # Padded sizes are multiples of 32: plain bilinear ×16 (align_corners=False).
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return self.crop(up, pads)  # (N, K, H, W)


def _deeplab_builder(
    name: str, backbone: str, aspp_channels: int, doc: str
) -> Callable[..., nn.Module]:
    """The registry builder of one DeepLabv3 size: the sizes differ only in their defaults.

    The builder's signature is explicit (the defaults are this size's), so the registry's
    ``inspect`` checks and ``pixelwise models`` see its options and defaults.
    """
    default_backbone, default_aspp = backbone, aspp_channels

    def build(
        *,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = default_backbone,
        output_stride: int = 16,
        aspp_channels: int = default_aspp,
        backbone_weights: str | None = None,
        encoder: str | None = None,
        encoder_weights: str | None = None,
        allow_download: bool = False,
    ) -> nn.Module:
        if encoder is not None:
            if backbone_weights is not None or output_stride != 16:
                raise ValueError(
                    message(
                        f"{name} with an encoder",
                        "take its weights from encoder_weights, at output stride 16",
                        f"backbone_weights {backbone_weights!r}, output_stride {output_stride!r}",
                    )
                )
            body = build_encoder(
                encoder,
                in_channels=in_channels,
                weights=encoder_weights,
                output_stride=16,
                allow_download=allow_download,
            )
            return EncoderDeepLabV3(num_classes, in_channels, body, aspp_channels=aspp_channels)
        if encoder_weights is not None:
            raise ValueError(
                message(
                    "encoder_weights",
                    "come with an encoder (backbone_weights for the ResNet backbone)",
                    repr(encoder_weights),
                )
            )
        return DeepLabV3(
            num_classes,
            in_channels,
            backbone=backbone,
            output_stride=output_stride,
            aspp_channels=aspp_channels,
            backbone_weights=backbone_weights,
        )

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = doc
    return build


build_deeplabv3 = register_model(
    "deeplabv3",
    summary="DeepLabv3: dilated ResNet (output stride 8/16) with ASPP and image pooling",
    paper="https://arxiv.org/abs/1706.05587",
)(
    _deeplab_builder(
        "deeplabv3",
        "resnet50",
        256,
        "Build :class:`DeepLabV3` at the paper's settings (ResNet-50, output stride 16, 256).",
    )
)
build_deeplabv3_small = register_model(
    "deeplabv3_small",
    summary="DeepLabv3 sized for CPU training: ResNet-18, output stride 16, 128-channel ASPP",
    paper="https://arxiv.org/abs/1706.05587",
)(
    _deeplab_builder(
        "deeplabv3_small",
        "resnet18",
        128,
        "Build :class:`DeepLabV3` with ResNet-18 and a 128-channel ASPP (about 13 M parameters).",
    )
)
