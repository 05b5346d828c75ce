"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell).

Paper: https://arxiv.org/abs/1411.4038 ("Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015).

VGG16 with its fully connected layers recast as convolutions (fc6 a 7×7 convolution, fc7 a
1×1), a 1×1 class-score layer, and transposed convolutions that upsample the coarse scores
back to the image, fused with scores from pool4 (16s) and pool3 (8s).

How this differs from the paper: the paper pads the input by 100 pixels and crops each
upsampled map at offsets found from the network's coordinate map; here the image is padded
(by reflection) to a multiple of 32, fc6 is zero-padded by 3 so it keeps the size, every
upsampling is exactly ×f and aligned, and the result is cropped back to H×W. Each stage
is then at exactly H'/2^b with H' = ceil(H/32)·32 (500 -> 512 -> pool5 16×16, where the
paper's pool5 is 22×22 and fc7 16×16).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import check_images, message
from pixelwise.models.backbones import (
    VGGEncoder,
    check_torchvision_layout,
    check_width,
    read_state_dict,
    scale_channels,
    take_tensor,
)
from pixelwise.models.encoders import EncodedNetwork, Encoder, build_encoder
from pixelwise.models.registry import register_model
from pixelwise.nn.blocks import ConvBNReLU, crop_padding, pad_to_multiple
from pixelwise.nn.upsample import init_bilinear_

logger = logging.getLogger(__name__)

PAPER = "https://arxiv.org/abs/1411.4038"
FC_CHANNELS = 4096  # fc6/fc7 at width 1.0, as in VGG16
FC6_KERNEL = 7  # pool5 of a 224×224 image is 7×7: fc6 sees all of it
DROPOUT = 0.5  # after fc6 and fc7, as in VGG16 and the paper
ENCODER_STAGES = tuple(f"encoder.pool{b}" for b in range(1, 6))


class BilinearUpsample(nn.Module):
    """×``factor`` transposed convolution initialised to bilinear interpolation (FCN's
    "deconvolution").

    The kernel is 2·factor wide with stride ``factor``. The input is edge-padded by one cell
    and the convolution's padding (3·factor/2) crops the extra output, so at init the layer
    equals ``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)``
    everywhere, borders included; a plain transposed convolution would fade the outer
    factor/2 pixels towards zero (the paper's 100-pixel padding kept borders out of view).

    Args:
        channels: K, kept from input to output.
        factor: the even upsampling factor.
        learnable: whether the kernel trains (``requires_grad``) or stays bilinear.
        depthwise: one kernel per channel (groups=K) instead of a full K×K kernel.

    Shape:
        (N, K, h, w) -> (N, K, factor·h, factor·w)
    """

    def __init__(
        self, channels: int, factor: int, *, learnable: bool = True, depthwise: bool = False
    ) -> None:
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(message("upsampling factor", "be an even integer >= 2", factor))
        self.factor = factor
        self.deconv = nn.ConvTranspose2d(
            channels,
            channels,
            kernel_size=2 * factor,
            stride=factor,
            padding=3 * factor // 2,
            groups=channels if depthwise else 1,
            bias=False,
        )
        init_bilinear_(self.deconv)
        self.deconv.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (N, K, h + 2, w + 2)
        return self.deconv(x)  # (N, K, factor·h, factor·w)


class FCN(nn.Module):
    """The part FCN-32s, -16s and -8s share: VGG16 encoder, fc6/fc7 as convolutions, and
    the class scores ``score_fr`` at stride 32. Subclasses add the upsampling path.

    Initialisation: encoder as torchvision's VGG; fc6/fc7 Kaiming normal (fan-in, so the 7×7
    fc6 keeps the activation scale); ``score_fr`` normal(0, 0.01) — the paper
    zero-initialises it, which with a randomly initialised encoder would make the output
    identically zero at init; skip scores zero, as in the paper, so a finer net starts from
    the coarser net's predictions.

    Args:
        num_classes: K.
        in_channels: C.
        width: channel multiplier (1.0 gives VGG16's 64…512 and 4096-channel fc6/fc7).
        learn_final_upsample: train the last (×32/×16/×8) upsampling; the paper keeps it
            fixed at bilinear, which is the default. It is depthwise (one kernel per class);
            the ×2 steps are full K×K kernels and always learn, as in the paper.

    Shape:
        (N, C, H, W) -> (N, K, H, W)
    """

    output_stride = 32  # stride of the scores fed to the last upsampling

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        learn_final_upsample: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.width = check_width(width)
        self.size_divisor = 32
        self.encoder = VGGEncoder(in_channels=in_channels, width=self.width)
        fc = scale_channels(FC_CHANNELS, self.width)
        c5 = self.encoder.channels[4]
        self.fc6 = nn.Sequential(
            nn.Conv2d(c5, fc, FC6_KERNEL, padding=FC6_KERNEL // 2),
            nn.ReLU(inplace=True),
            nn.Dropout(DROPOUT),
        )
        self.fc7 = nn.Sequential(nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout(DROPOUT))
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        for conv in (self.fc6[0], self.fc7[0]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.score_fr.weight, std=0.01)
        nn.init.zeros_(self.score_fr.bias)
        self.learn_final_upsample = learn_final_upsample
        head = self._build_upsampling()
        self.stage_names: tuple[str, ...] = (*ENCODER_STAGES, "fc6", "fc7", "score_fr", *head)

    def _build_upsampling(self) -> tuple[str, ...]:
        """Add the variant's upsampling path; return its stage names in forward order."""
        raise NotImplementedError

    def _final_upsample(self) -> BilinearUpsample:
        return BilinearUpsample(
            self.num_classes,
            self.output_stride,
            learnable=self.learn_final_upsample,
            depthwise=True,
        )

    def _pad(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        check_images(images, self.in_channels)
        return pad_to_multiple(images, self.size_divisor)  # (N, C, H', W'), H' = ⌈H/32⌉·32

    def _score(self, pool5: torch.Tensor) -> torch.Tensor:
        fc6 = self.fc6(pool5)  # (N, 4096w, H'/32, W'/32)
        fc7 = self.fc7(fc6)  # (N, 4096w, H'/32, W'/32)
        return self.score_fr(fc7)  # (N, K, H'/32, W'/32)

    def load_vgg16(self, path: str | Path) -> None:
        """Fill the encoder and fc6/fc7 from a local torchvision ``vgg16`` state-dict file.

        ``features.*`` go into the encoder; ``classifier.0`` / ``classifier.3`` (the fully
        connected fc6/fc7) are reshaped into the 7×7 and 1×1 convolutions, as FCN did.
        Only at width 1.0 with 3 input channels, the layout the file has.

        Raises:
            FileNotFoundError: no such file.
            ValueError: wrong width/in_channels, an unreadable file, or a file that is not
                a VGG16 state dict (one line naming the file).
        """
        what = "encoder_weights"
        check_torchvision_layout(self.width, self.in_channels, architecture="vgg16", what=what)
        state = read_state_dict(path, what)
        source = str(path)
        # Every tensor is checked before any is copied, so a bad file changes nothing.
        fc6 = _linear_as_conv(self.fc6[0], state, "classifier.0", source)
        fc7 = _linear_as_conv(self.fc7[0], state, "classifier.3", source)
        self.encoder.load_torchvision_features(state, source=source, what=what)
        self.fc6[0].load_state_dict(fc6)
        self.fc7[0].load_state_dict(fc7)
        logger.info("loaded VGG16 encoder and fc6/fc7 weights from %s", path)


class FCN32s(FCN):
    """FCN-32s: class scores at stride 32, upsampled ×32 in one bilinear step.

    Paper: https://arxiv.org/abs/1411.4038 (Fig. 3, top row). Differs from the paper in
    padding to a multiple of 32 and cropping instead of the 100-pixel input padding.

    Shape:
        (N, C, H, W) -> (N, K, H, W)
    """

    output_stride = 32

    def _build_upsampling(self) -> tuple[str, ...]:
        self.upscore = self._final_upsample()
        return ("upscore",)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, pads = self._pad(images)  # (N, C, H', W')
        pool5 = self.encoder(x)[4]  # (N, 512w, H'/32, W'/32)
        score_fr = self._score(pool5)  # (N, K, H'/32, W'/32)
        upscore = self.upscore(score_fr)  # (N, K, H', W')
        return crop_padding(upscore, pads)  # (N, K, H, W)


class FCN16s(FCN):
    """FCN-16s: stride-32 scores upsampled ×2, fused with scores from pool4, then ×16.

    Paper: https://arxiv.org/abs/1411.4038 (Fig. 3, middle row). Differs from the paper in
    padding to a multiple of 32 and cropping instead of the 100-pixel input padding.

    Shape:
        (N, C, H, W) -> (N, K, H, W)
    """

    output_stride = 16

    def _build_upsampling(self) -> tuple[str, ...]:
        k, c4 = self.num_classes, self.encoder.channels[3]
        self.upscore2 = BilinearUpsample(k, 2)
        self.score_pool4 = _zero_conv1x1(c4, k)
        self.upscore16 = self._final_upsample()
        return ("upscore2", "score_pool4", "upscore16")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, pads = self._pad(images)  # (N, C, H', W')
        _, _, _, pool4, pool5 = self.encoder(x)  # (N, 512w, H'/16, W'/16), (…, H'/32, W'/32)
        score_fr = self._score(pool5)  # (N, K, H'/32, W'/32)
        upscore2 = self.upscore2(score_fr)  # (N, K, H'/16, W'/16)
        fuse_pool4 = upscore2 + self.score_pool4(pool4)  # (N, K, H'/16, W'/16)
        upscore16 = self.upscore16(fuse_pool4)  # (N, K, H', W')
        return crop_padding(upscore16, pads)  # (N, K, H, W)


class FCN8s(FCN):
    """FCN-8s: as FCN-16s, then ×2 again and fused with scores from pool3, then ×8.

    Paper: https://arxiv.org/abs/1411.4038 (Fig. 3, bottom row). Differs from the paper in
    padding to a multiple of 32 and cropping instead of the 100-pixel input padding.

    Shape:
        (N, C, H, W) -> (N, K, H, W)
    """

    output_stride = 8

    def _build_upsampling(self) -> tuple[str, ...]:
        k, (c3, c4) = self.num_classes, self.encoder.channels[2:4]
        self.upscore2 = BilinearUpsample(k, 2)
        self.score_pool4 = _zero_conv1x1(c4, k)
        self.upscore_pool4 = BilinearUpsample(k, 2)
        self.score_pool3 = _zero_conv1x1(c3, k)
        self.upscore8 = self._final_upsample()
        return ("upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, pads = self._pad(images)  # (N, C, H', W')
        _, _, pool3, pool4, pool5 = self.encoder(x)  # at H'/8, H'/16, H'/32
        score_fr = self._score(pool5)  # (N, K, H'/32, W'/32)
        upscore2 = self.upscore2(score_fr)  # (N, K, H'/16, W'/16)
        fuse_pool4 = upscore2 + self.score_pool4(pool4)  # (N, K, H'/16, W'/16)
        upscore_pool4 = self.upscore_pool4(fuse_pool4)  # (N, K, H'/8, W'/8)
        fuse_pool3 = upscore_pool4 + self.score_pool3(pool3)  # (N, K, H'/8, W'/8)
        upscore8 = self.upscore8(fuse_pool3)  # (N, K, H', W')
        return crop_padding(upscore8, pads)  # (N, K, H, W)


class EncoderFCN(EncodedNetwork):
    """FCN's upsampling path over an :class:`~pixelwise.models.encoders.Encoder`: class
    scores from the stride-32 features (a 3×3 convolution with batch norm and ReLU, dropout,
    a 1×1 score layer, in place of VGG's fc6/fc7), fused ×2 with zero-initialised scores of
    the stride-16 features (16s, 8s) and again of the stride-8 features (8s), then a fixed
    bilinear ×``output_stride`` to the input.

    Args:
        num_classes: K.
        in_channels: C.
        encoder: The encoder (output stride 32).
        output_stride: 32, 16 or 8 (FCN-32s, -16s, -8s).
        head_channels: Channels of the 3×3 convolution before the scores.
        learn_final_upsample: Train the last upsampling (bilinear and fixed by default).

    Shape:
        (N, C, H, W) -> (N, K, H, W), any H, W (padded inside to a multiple of 32).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        encoder: Encoder,
        *,
        output_stride: int = 8,
        head_channels: int = 256,
        learn_final_upsample: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels, encoder)
        self.output_stride = output_stride
        self.fc = nn.Sequential(ConvBNReLU(encoder.channels[-1], head_channels, 3), nn.Dropout(0.1))
        self.score_fr = nn.Conv2d(head_channels, num_classes, 1)
        nn.init.normal_(self.score_fr.weight, std=0.01)
        nn.init.zeros_(self.score_fr.bias)
        k, fused = num_classes, {32: 0, 16: 1, 8: 2}[output_stride]
        # Skips from stride 16, then 8: each a ×2 step and a zero-initialised score layer.
        self.upscore = nn.ModuleList(BilinearUpsample(k, 2) for _ in range(fused))
        self.score_skip = nn.ModuleList(
            _zero_conv1x1(encoder.channels[3 - i], k) for i in range(fused)
        )
        self.final = BilinearUpsample(
            k, output_stride, learnable=learn_final_upsample, depthwise=True
        )
        skips = [n for i in range(fused) for n in (f"upscore.{i}", f"score_skip.{i}")]
        self.stage_names = (*self.encoder_stage_names(), "fc", "score_fr", *skips, "final")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, pads, _ = self.encode(images)
        score = self.score_fr(self.fc(features[-1]))  # (N, K, H'/32, W'/32)
        for i, (up, skip) in enumerate(zip(self.upscore, self.score_skip, strict=True)):
            score = up(score) + skip(features[3 - i])  # (N, K, H'/16 then H'/8, …)
        return self.crop(self.final(score), pads)  # (N, K, H, W)


def _linear_as_conv(
    conv: nn.Conv2d, state: dict[str, torch.Tensor], prefix: str, source: str
) -> dict[str, torch.Tensor]:
    """The fully connected layer ``prefix`` of a torchvision VGG as ``conv``'s state."""
    flat = (conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])
    what = "encoder_weights"
    weight = take_tensor(state, f"{prefix}.weight", flat, source=source, what=what)
    bias = take_tensor(state, f"{prefix}.bias", (conv.out_channels,), source=source, what=what)
    # A Linear over a flattened (C, 7, 7) map is a 7×7 convolution over that map.
    return {"weight": weight.reshape(conv.weight.shape), "bias": bias}


def _zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    # The paper zero-initialises skip scores so the finer net starts as the coarser one.
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _fcn_builder(cls: type[FCN], name: str) -> Callable[..., FCN]:
    """The registry builder of one FCN variant: they differ only in the class they build.

    The builder's signature is explicit, so the registry's ``inspect`` checks and
    ``pixelwise models`` see its options and defaults.
    """

    def build(
        *,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        encoder_weights: str | None = None,
        learn_final_upsample: bool = False,
        encoder: str | None = None,
        allow_download: bool = False,
    ) -> nn.Module:
        if encoder is not None:
            if width != 1.0:
                raise ValueError(message(f"{name} with an encoder", "keep width 1.0", repr(width)))
            body = build_encoder(
                encoder,
                in_channels=in_channels,
                weights=encoder_weights,
                allow_download=allow_download,
            )
            return EncoderFCN(
                num_classes,
                in_channels,
                body,
                output_stride=cls.output_stride,
                learn_final_upsample=learn_final_upsample,
            )
        if encoder_weights is not None:  # fail before building 134M parameters
            check_torchvision_layout(check_width(width), in_channels, architecture="vgg16")
        model = cls(
            num_classes=num_classes,
            in_channels=in_channels,
            width=width,
            learn_final_upsample=learn_final_upsample,
        )
        if encoder_weights is not None:
            model.load_vgg16(encoder_weights)
        return model

    build.__name__ = build.__qualname__ = f"build_{cls.__name__.lower()}"
    build.__doc__ = (
        f"{name} (see :class:`{cls.__name__}`); ``encoder_weights`` is a local torchvision "
        "vgg16 file. With ``encoder`` (see :mod:`pixelwise.models.encoders`), "
        f"{name}'s upsampling over that encoder (:class:`EncoderFCN`), ``encoder_weights`` "
        "None, 'imagenet' or a local file of that encoder."
    )
    return build


build_fcn32s = register_model(
    "fcn32s",
    summary="FCN-32s: VGG16 made fully convolutional, scores upsampled ×32 (Long et al. 2015)",
    paper=PAPER,
)(_fcn_builder(FCN32s, "FCN-32s"))
build_fcn16s = register_model(
    "fcn16s",
    summary="FCN-16s: FCN-32s plus a pool4 skip, ×2 then ×16 (Long et al. 2015)",
    paper=PAPER,
)(_fcn_builder(FCN16s, "FCN-16s"))
build_fcn8s = register_model(
    "fcn8s",
    summary="FCN-8s: FCN-16s plus a pool3 skip, ×2, ×2 then ×8 (Long et al. 2015)",
    paper=PAPER,
)(_fcn_builder(FCN8s, "FCN-8s"))
