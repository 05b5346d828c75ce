"""Feature networks for style transfer: named layer responses of images in [0, 1].

Two networks give the responses the losses compare (:mod:`pixelwise.style.losses`):

- :class:`VGG19Features`, torchvision's VGG19 convolutions with every layer named as in the
  paper (``conv1_1`` … ``conv5_4``, ``relu1_1`` …, ``pool1`` … ``pool5``). A ``conv*`` layer
  gives the pre-activations (the convolution's output before its ReLU), a ``relu*`` layer the
  rectified responses. Inputs are normalised with the ImageNet mean and std inside. The network
  is cut after the last layer it is built for, and ``pooling="average"`` swaps max-pooling for
  average pooling, as the paper suggests for nicer gradients.
- :class:`ModelFeatures`, the convolutions of any pixelwise model (e.g. a trained checkpoint's
  encoder), named by their module names, with the checkpoint's own input normalisation.
- :class:`LiteFeatures`, the ImageNet EfficientNet-Lite0 of ``pixelwise[pretrained]`` (no
  download: its weights come inside a package), its stem and every block's output named.

The softmax transformation of Wang, Li and Vasconcelos ("Rethinking and Improving the
Robustness of Image Style Transfer", CVPR 2021, SWAG) is offered for every network
(``transform="softmax"``, :func:`softmax_responses`): a network whose responses are peaky (low
entropy: few large activations, as in efficient ImageNet networks) matches Gram matrices of a
handful of activations and stylises poorly; the softmax over each layer's activations smooths
them.

Weights: ImageNet weights come only from a local file (a torchvision ``vgg19`` state dict) or,
when asked for explicitly, from torchvision's weights API (a download into torch's hub cache);
``weights="random"`` builds torchvision's random initialisation, for tests and experiments.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from pixelwise._checks import check_choice, did_you_mean, message
from pixelwise.inference._model import model_parts
from pixelwise.models.backbones import load_local_weights
from pixelwise.nn.normalise import normalise_images

logger = logging.getLogger(__name__)

IMAGENET_NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
POOLINGS = ("max", "average")
PROBE_SIZE = 128  # image side used once to list a model's convolutions and their strides
# The paper's layers: content conv4_2; style conv1_1 … conv5_1, weighted equally.
VGG19_CONTENT_LAYER = "conv4_2"
VGG19_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
_NO_WEIGHTS_FIX = (
    "pass --weights PATH (a torchvision vgg19 state dict saved with torch.save) or --download "
    "(torchvision's ImageNet weights, fetched once into torch's hub cache)"
)


def _vgg19_layer_names() -> tuple[str, ...]:
    names, block, index = [], 1, 1
    for entry in tv_vgg.cfgs["E"]:
        if entry == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return tuple(names)


# One name per module of torchvision's ``vgg19().features``, in order (37 modules).
VGG19_LAYERS = _vgg19_layer_names()


def check_layer_names(
    layers: Sequence[str], choices: Sequence[str], what: str = "layer"
) -> tuple[str, ...]:
    """Return ``layers`` as a tuple if every name is in ``choices``, else raise with a suggestion."""
    if isinstance(layers, str) or not layers:
        raise ValueError(message(f"{what} names", "be a non-empty list", repr(layers)))
    for name in layers:
        if name not in choices:
            raise ValueError(
                message(
                    f"{what} name",
                    "be a layer of the feature network",
                    repr(name),
                    did_you_mean(str(name), choices),
                )
            )
    return tuple(layers)


TRANSFORMS = ("none", "softmax")


def softmax_responses(responses: torch.Tensor) -> torch.Tensor:
    """SWAG's softmax over all of one image's activations in a layer, times their number
    ``D·H·W`` (so that the mean response is 1 and the style weights keep their scale; the
    paper instead multiplies its style weight by about 1e17).

    Shape:
        (N, D, H, W) -> (N, D, H, W), each image's values positive with mean 1.
    """
    flat = responses.flatten(1)  # (N, D·H·W)
    return (torch.softmax(flat, dim=1) * flat.shape[1]).view_as(responses)


class FeatureNetwork(nn.Module):
    """Maps images in [0, 1] to the responses of named layers; subclasses fill the names.

    Attributes:
        layer_names: every selectable layer, in forward order.
        content_layer, style_layers: the default layers.
        in_channels: C, the image channels the network takes (1: grey, 3: RGB).
        transform: ``"none"`` or ``"softmax"`` (:func:`softmax_responses` on every response).
        style_weight: The default β for this network's responses (``pixelwise stylize``).
    """

    layer_names: tuple[str, ...] = ()
    content_layer: str = ""
    style_layers: tuple[str, ...] = ()
    in_channels: int = 3
    transform: str = "none"
    style_weight: float = 1e6

    def transformed(self, responses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``responses`` after :attr:`transform`."""
        if self.transform == "softmax":
            return {name: softmax_responses(x) for name, x in responses.items()}
        return responses

    def check_layers(self, layers: Sequence[str], what: str = "layer") -> tuple[str, ...]:
        """``layers`` if the network has them all, else a ValueError with did-you-mean."""
        return check_layer_names(layers, self.layer_names, what)

    def min_size(self, layers: Sequence[str]) -> int:
        """The smallest image side for which every layer in ``layers`` has a response."""
        raise NotImplementedError

    def fit_size(self, height: int, width: int) -> tuple[int, int]:
        """The image size to use for a wanted ``height × width`` (the same for most networks)."""
        return height, width

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Responses of ``layers``, running the network only as far as the deepest one.

        Shape:
            images: (N, C, H, W) in [0, 1] -> {name: (N, D, H_l, W_l)}.
        """
        raise NotImplementedError


def _vgg19_convolutions(pooling: str) -> nn.Sequential:
    # torchvision's own builder gives the modules (and state-dict keys) of vgg19().features.
    features = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
    for index, module in enumerate(features):
        if isinstance(module, nn.ReLU):
            features[index] = nn.ReLU(inplace=False)  # in place would overwrite conv outputs
        elif isinstance(module, nn.MaxPool2d) and pooling == "average":
            features[index] = nn.AvgPool2d(kernel_size=2, stride=2)
    return features


def _random_init(features: nn.Sequential, seed: int) -> None:
    # torchvision's VGG initialisation (VGG.__init__), from a seeded generator.
    generator = torch.Generator().manual_seed(seed)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            nn.init.zeros_(module.bias)


def _download_vgg19(features: nn.Sequential) -> None:
    from torchvision.models import VGG19_Weights

    weights = VGG19_Weights.IMAGENET1K_V1
    logger.info("loading torchvision's VGG19 ImageNet weights (%s)", weights.url)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:
        raise ValueError(
            message(
                "VGG19 ImageNet weights",
                f"download from {weights.url}",
                f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                "check the network, or pass --weights PATH (a local torchvision vgg19 state dict)",
            )
        ) from None
    prefix = "features."
    features.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )


def load_vgg19_weights(
    features: nn.Sequential,
    weights: str | Path | None,
    *,
    download: bool = False,
    seed: int = 0,
) -> None:
    """Fill VGG19's convolutions: ``"random"``, a local file, or torchvision's download.

    Raises:
        ValueError: neither a weights choice nor ``download`` (the message says how to get
            them), both, or a file that is not a torchvision vgg19 state dict.
        FileNotFoundError: the weights file is missing.
    """
    if weights is None and not download:
        raise ValueError(
            message(
                "VGG19 weights",
                "be a local file or an explicit download",
                "neither",
                _NO_WEIGHTS_FIX,
            )
        )
    if weights is not None and download:
        raise ValueError(
            message(
                "VGG19 weights",
                "come from one source",
                f"both {str(weights)!r} and a download",
                "pass either --weights PATH or --download",
            )
        )
    if download:
        _download_vgg19(features)
    elif str(weights) == "random":
        _random_init(features, seed)
    else:
        load_local_weights(features, weights, prefix="features.", what="VGG19 weights file")


class VGG19Features(FeatureNetwork):
    """VGG19's convolutional layers (torchvision's definition), named as in the paper.

    Gatys et al. use VGG19 from Caffe with 0–255 BGR inputs and weights rescaled so that each
    filter's mean response is 1; here torchvision's network and weights take [0, 1] RGB images
    normalised with the ImageNet mean and std (https://arxiv.org/abs/1409.1556 for VGG).

    Args:
        layers: the layers the network must serve; it is cut after the deepest. None: the
            paper's layers (content conv4_2, style conv1_1 … conv5_1).
        weights: ``"random"`` (torchvision's random initialisation, seeded by ``seed``), or the
            path of a local torchvision vgg19 state dict (``.pth``/``.pt``/``.safetensors``).
        download: fetch torchvision's ImageNet weights (only when asked; not with ``weights``).
        pooling: ``"max"`` (VGG's own) or ``"average"`` (the paper's suggestion).
        seed: the seed of the random weights.
        transform: ``"none"`` or ``"softmax"`` (SWAG, :func:`softmax_responses`).

    Shape:
        images: (N, 3, H, W) in [0, 1] -> {name: (N, D, H / 2^p, W / 2^p)} after p poolings.
    """

    layer_names = VGG19_LAYERS
    content_layer = VGG19_CONTENT_LAYER
    style_layers = VGG19_STYLE_LAYERS

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        *,
        weights: str | Path | None = None,
        download: bool = False,
        pooling: str = "max",
        seed: int = 0,
        transform: str = "none",
    ) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        self.transform = check_choice("transform", transform, TRANSFORMS)
        kept = self.check_layers(
            layers if layers is not None else (self.content_layer, *self.style_layers)
        )
        features = _vgg19_convolutions(pooling)
        load_vgg19_weights(features, weights, download=download, seed=seed)
        if str(weights) == "random":
            # Random filters respond less in kind than trained ones: 1e6 hardly moves the
            # image, 1e8 loses the content (docs/style_grid.png).
            self.style_weight = 1e7
        last = max(VGG19_LAYERS.index(name) for name in kept)
        self.features = features[: last + 1]  # the layers after the deepest one never run
        self.kept_layers = VGG19_LAYERS[: last + 1]
        self.requires_grad_(False)
        self.eval()

    def min_size(self, layers: Sequence[str]) -> int:
        """``2^p`` for the deepest layer, after p 2×2 poolings (pool_b counts its own)."""
        layers = self.check_layers(layers)
        deepest = max(VGG19_LAYERS.index(name) for name in layers)
        return 2 ** sum(name.startswith("pool") for name in VGG19_LAYERS[: deepest + 1])

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Responses of ``layers`` (see the class docstring for shapes)."""
        wanted = set(self._check_kept(layers))
        x = normalise_images(images, IMAGENET_NORMALISATION)  # (N, 3, H, W)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.kept_layers, self.features, strict=True):
            x = module(x)  # (N, D, H_l, W_l)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return self.transformed(out)

    def _check_kept(self, layers: Sequence[str]) -> tuple[str, ...]:
        layers = self.check_layers(layers)
        for name in layers:
            if name not in self.kept_layers:
                raise ValueError(
                    message(
                        "layer",
                        f"be kept by this network (cut after {self.kept_layers[-1]})",
                        repr(name),
                        "build VGG19Features with layers= naming every layer you need",
                    )
                )
        return layers


class _Stop(Exception):
    """Raised by a forward hook once the deepest wanted layer has run."""


def outputs_until_all(
    modules: Mapping[str, nn.Module], run: Callable[[], object]
) -> dict[str, torch.Tensor]:
    """The first output of each of ``modules`` (by name) during ``run()``, which is stopped as
    soon as all have given one: the layers after the deepest never run."""
    out: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            out.setdefault(name, output)
            if len(out) == len(modules):
                raise _Stop

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    try:
        run()
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out


class _Conv:
    """One convolution seen while probing: its module name, channels, output size, and its
    level (log2 of its total stride, rounded: unpadded convolutions trim a few pixels)."""

    def __init__(self, name: str, channels: int, height: int, width: int, probe: int) -> None:
        self.name, self.channels, self.height, self.width = name, channels, height, width
        # A 1×1 output (global pooling) says nothing about the stride: level 0.
        self.level = round(math.log2(probe / height)) if min(height, width) > 1 else 0


class ModelFeatures(FeatureNetwork):
    """The convolutions (``nn.Conv2d``) of a pixelwise model, named by module name.

    Layers are listed in the order a forward pass runs them (found once with forward hooks on
    a probe image). The defaults follow the paper's choice on VGG19: the encoder is the run up
    to the first convolution at the coarsest resolution; the style layers are the first
    convolution at each of its resolutions (VGG's conv1_1 … conv5_1) and the content layer the
    second convolution at the second-coarsest (VGG's conv4_2). Responses are pre-activations.

    Args:
        model: a :class:`pixelwise.inference.segmenter.Segmenter` (e.g. a checkpoint's, from
            :func:`pixelwise.engine.checkpoint.load_model`), whose normalisation is applied to
            the images in [0, 1], or a bare network, which sees them as they are (eval mode is
            set; its parameters are frozen).
        in_channels: C; default: the model's ``in_channels``.
        transform: ``"none"`` or ``"softmax"`` (SWAG, :func:`softmax_responses`).

    Shape:
        images: (N, C, H, W) in [0, 1] -> {name: (N, D, H_l, W_l)}.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        in_channels: int | None = None,
        transform: str = "none",
    ) -> None:
        super().__init__()
        self.transform = check_choice("transform", transform, TRANSFORMS)
        model, self.normalize = model_parts(model)
        self.model = model.eval().requires_grad_(False)
        self.in_channels = int(in_channels or _model_in_channels(model))
        self.probe_size = self.fit_size(PROBE_SIZE, PROBE_SIZE)[0]
        self.convs = self._probe()
        if not self.convs:
            raise ValueError(
                message("feature model", "have convolution layers", type(model).__name__)
            )
        self.layer_names = tuple(conv.name for conv in self.convs)
        self.content_layer, self.style_layers = _default_layers(self.convs)
        self.modules_by_name = dict(model.named_modules())

    def fit_size(self, height: int, width: int) -> tuple[int, int]:
        """The next sizes the model accepts, for models with valid-size rules (valid U-Net)."""
        near = getattr(self.model, "valid_input_sizes_near", None)
        if near is None:
            return height, width
        return near(height)[1], near(width)[1]

    def min_size(self, layers: Sequence[str]) -> int:
        """The total stride of the deepest layer, at least the model's smallest valid input."""
        layers = self.check_layers(layers)
        by_name = {conv.name: conv for conv in self.convs}
        stride = max(2 ** by_name[name].level for name in layers)
        near = getattr(self.model, "valid_input_sizes_near", None)
        return max(stride, near(1)[1]) if near is not None else stride

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Responses of ``layers``; the forward pass stops after the deepest one."""
        wanted = {name: self.modules_by_name[name] for name in self.check_layers(layers)}
        out = outputs_until_all(wanted, lambda: self.model(self.normalize(images)))
        return self.transformed(out)

    def _probe(self) -> list[_Conv]:
        seen: dict[str, _Conv] = {}

        def record(name: str):
            def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
                if name not in seen:
                    seen[name] = _Conv(name, output.shape[1], *output.shape[-2:], size)

            return hook

        handles = [
            module.register_forward_hook(record(name))
            for name, module in self.model.named_modules()
            if isinstance(module, nn.Conv2d)
        ]
        size = self.probe_size
        probe = torch.full((1, self.in_channels, size, size), 0.5)  # (1, C, P, P)
        try:
            with torch.no_grad():
                self.model(self.normalize(probe))
        finally:
            for handle in handles:
                handle.remove()
        return list(seen.values())  # dicts keep insertion order: forward order


def _model_in_channels(model: nn.Module) -> int:
    args = getattr(model, "pixelwise_args", None) or {}
    channels = args.get("in_channels", getattr(model, "in_channels", None))
    if channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = first.in_channels if first is not None else 3
    return int(channels)


def _default_layers(convs: Sequence[_Conv]) -> tuple[str, tuple[str, ...]]:
    """Paper-like defaults on the encoder (the convolutions up to the first at the deepest
    level): style = the first convolution of each level, content = the second convolution of
    the second-deepest level (its only one if it has one). A model whose convolutions all keep
    one resolution gets up to five evenly spaced style layers and the content layer at 2/3.
    The last convolution in forward order, the classifier head, is never a default."""
    convs = convs[:-1] if len(convs) > 1 else convs  # the last one is the classifier head
    deepest = max(conv.level for conv in convs)
    end = next(i for i, conv in enumerate(convs) if conv.level == deepest)
    encoder = list(convs[: end + 1]) if end > 0 else list(convs)
    levels: list[list[_Conv]] = []
    for conv in encoder:
        if not levels or levels[-1][0].level != conv.level:
            levels.append([])
        levels[-1].append(conv)
    if len(levels) == 1:
        picks = sorted({round(i) for i in np.linspace(0, len(encoder) - 1, min(5, len(encoder)))})
        style = tuple(encoder[i].name for i in picks)
        return encoder[(2 * (len(encoder) - 1)) // 3].name, style
    style = tuple(level[0].name for level in levels)
    level = levels[-2]
    return (level[1] if len(level) > 1 else level[0]).name, style


def _lite_layer_names() -> tuple[str, ...]:
    from pixelwise.models.encoders import LITE0_REPEATS

    blocks = [f"block{s}_{i}" for s, r in enumerate(LITE0_REPEATS) for i in range(r)]
    return ("stem", *blocks)


# The stem, then each block's first activation: block<stage>_<index>.
LITE0_LAYERS = _lite_layer_names()
# Each layer's stride: a block's first activation runs at its input's stride (block0_0, the
# depthwise-first block, after its stride-1 depthwise convolution).
LITE0_STRIDES = dict(
    zip(LITE0_LAYERS, (2, 2, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32), strict=True)
)


class LiteFeatures(FeatureNetwork):
    """The ImageNet EfficientNet-Lite0 of ``pixelwise[pretrained]`` (weights packaged, no
    download): ``stem`` (after its batch norm and ReLU6) and each block's first activation,
    ``block<stage>_<index>`` (the expansion after its ReLU6; for ``block0_0`` the depthwise
    convolution's), the rectified responses that play the part of VGG's.

    A block's output (its linear projection) was tried first and stylised into noise; the
    rectified expansions give textures. With the softmax transformation (SWAG) the results
    turned into coloured speckle at every style weight tried (1e6 to 1e9,
    docs/style_grid.png), so it is off by default here. The defaults follow the paper's choice on VGG19, by
    stride: style ``stem``, ``block1_0``, ``block2_0``, ``block3_0`` and ``block5_0`` (strides
    2, 2, 4, 8 and 16; 32 to 672 channels, as VGG's conv1_1 … conv5_1 run at strides 1 to
    16), content ``block3_0`` (stride 8, as VGG's conv4_2).

    Shape:
        images: (N, 3, H, W) in [0, 1] -> {name: (N, D, ⌈H/s⌉, ⌈W/s⌉)}, s the layer's stride.
    """

    layer_names = LITE0_LAYERS
    content_layer = "block3_0"
    style_layers = ("stem", "block1_0", "block2_0", "block3_0", "block5_0")
    style_weight = 1e6

    def __init__(self, *, transform: str = "none", weights: str | Path | None = "imagenet"):
        super().__init__()
        from pixelwise.models.encoders import LITE_NORMALISATION, efficientnet_lite0_classifier

        self.transform = check_choice("transform", transform, TRANSFORMS)
        if transform == "softmax":
            self.style_weight = 1e8  # softmax responses have mean 1: a weaker pull per weight
        network = efficientnet_lite0_classifier(weights)
        self.stem = nn.Sequential(network.conv_stem, network.bn1)
        self.blocks = nn.ModuleList(block for stage in network.blocks for block in stage)
        self.normalisation = LITE_NORMALISATION
        self.requires_grad_(False)
        self.eval()

    def min_size(self, layers: Sequence[str]) -> int:
        """The stride of the deepest layer."""
        return max(LITE0_STRIDES[name] for name in self.check_layers(layers))

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Responses of ``layers``; the blocks after the deepest one do not run."""
        wanted = {
            name: self.stem if name == "stem" else self.blocks[LITE0_LAYERS.index(name) - 1].bn1
            for name in self.check_layers(layers)
        }

        def run() -> None:
            x = self.stem(normalise_images(images, self.normalisation))  # (N, 32, H/2, W/2)
            for block in self.blocks:
                x = block(x)

        return self.transformed(outputs_until_all(wanted, run))
