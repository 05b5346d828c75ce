"""Style transfer from files to files: what ``pixelwise stylize`` runs.

:func:`plan_stylize` checks the paths before any work (inputs exist, outputs are new or may be
replaced, no output is an input), :func:`feature_network` builds the network the flags name,
:func:`stylize_files` reads, optimises and writes. Nothing here prints; progress goes to a
callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise._checks import check_choice, message
from pixelwise.data._io import check_exists
from pixelwise.engine.checkpoint import load_model
from pixelwise.style.features import (
    VGG19_CONTENT_LAYER,
    VGG19_LAYERS,
    VGG19_STYLE_LAYERS,
    FeatureNetwork,
    LiteFeatures,
    ModelFeatures,
    VGG19Features,
    check_layer_names,
)
from pixelwise.style.images import (
    check_outputs,
    read_image,
    resize_image,
    trace_path,
    trace_strip,
    write_png,
)
from pixelwise.style.transfer import StyleProgress, StyleResult, stylize

TRACE_FRAMES = 8  # images in the trace strip, from the start to the result
# The feature networks ``pixelwise stylize --network`` names; vgg19 needs --weights or
# --download, the other two no file.
NETWORKS = ("vgg19", "vgg19-random", "efficientnet-lite0")


def default_network() -> str:
    """EfficientNet-Lite0 where pixelwise[pretrained] is installed, else seeded random
    VGG19: of the networks that need no download, Lite0 stylised best in docs/style_grid.png
    (the style's texture and colours on recognisable content, in an eighth of the time)."""
    from pixelwise.models.encoders import pretrained_available

    return "efficientnet-lite0" if pretrained_available() else "vgg19-random"


@dataclass(frozen=True)
class StylizePlan:
    """The checked paths of one stylisation; ``trace`` is None without a trace strip."""

    content: Path
    style: Path
    out: Path
    trace: Path | None


@dataclass(frozen=True)
class StylizeReport:
    """What :func:`stylize_files` wrote and how long the optimisation took.

    Shape:
        size: (H, W) of the written image.
    """

    plan: StylizePlan
    size: tuple[int, int]
    result: StyleResult
    seconds: float


def plan_stylize(
    content: str | Path, style: str | Path, out: str | Path, *, trace: bool, overwrite: bool
) -> StylizePlan:
    """Check the paths: both images exist, outputs are PNGs that are new (or ``overwrite``)."""
    plan = StylizePlan(
        check_exists(Path(content), "content image"),
        check_exists(Path(style), "style image"),
        Path(out),
        trace_path(out) if trace else None,
    )
    outputs = [plan.out] + ([plan.trace] if plan.trace else [])
    check_outputs(outputs, [plan.content, plan.style], overwrite=overwrite)
    return plan


def parse_layers(text: str | None) -> tuple[str, ...] | None:
    """``"conv1_1,conv2_1"`` -> ``("conv1_1", "conv2_1")``; None stays None."""
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def feature_network(
    *,
    network: str | None = None,
    weights: str | Path | None = None,
    download: bool = False,
    features: str | Path | None = None,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    pooling: str = "max",
    transform: str | None = None,
) -> FeatureNetwork:
    """The feature network the flags name: ``network`` (one of :data:`NETWORKS`; default
    :func:`default_network`, or ``"vgg19"`` when ``weights`` or ``download`` is given), or a
    checkpoint's model (``features``). ``transform``: ``"none"`` (the default) or
    ``"softmax"`` (SWAG).

    VGG19 is cut after the deepest of the layers that will be used.
    """
    if network is not None:
        check_choice("--network", network, NETWORKS)
    if features is not None:
        if weights is not None or download or pooling != "max" or network is not None:
            raise ValueError(
                message(
                    "--features",
                    "be used alone (it replaces the feature network)",
                    "with --network, --weights, --download or --pooling",
                    "drop those flags, or drop --features",
                )
            )
        segmenter = load_model(features)
        return ModelFeatures(
            segmenter, in_channels=segmenter.checkpoint.in_channels, transform=transform or "none"
        )
    named = network or ("vgg19" if weights is not None or download else default_network())
    if named != "vgg19" and (weights is not None or download):
        raise ValueError(
            message(
                "--weights and --download",
                "go with --network vgg19",
                f"--network {named}",
                "drop them, or choose vgg19",
            )
        )
    if named == "efficientnet-lite0":
        if pooling != "max":
            raise ValueError(message("--pooling", "go with a VGG19 network", f"--network {named}"))
        lite = LiteFeatures(transform=transform or "none")
        check_layer_names([content_layer or lite.content_layer], lite.layer_names, "content layer")
        check_layer_names(style_layers or lite.style_layers, lite.layer_names, "style layer")
        return lite
    if named == "vgg19-random":
        weights = "random"
    content = check_layer_names(
        [content_layer or VGG19_CONTENT_LAYER], VGG19_LAYERS, "content layer"
    )
    style = check_layer_names(
        style_layers if style_layers is not None else VGG19_STYLE_LAYERS,
        VGG19_LAYERS,
        "style layer",
    )
    return VGG19Features(
        (*content, *style),
        weights=weights,
        download=download,
        pooling=pooling,
        transform=transform or "none",
    )


def read_pair(
    plan: StylizePlan, network: FeatureNetwork, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images with the network's channels, longer side ``size`` (then fitted to sizes the
    network accepts).

    Shape:
        returns (C, H, W) and (C, H_S, W_S).
    """
    images = []
    for path, what in ((plan.content, "content image"), (plan.style, "style image")):
        image = read_image(path, channels=network.in_channels, long_side=size, what=what)
        images.append(resize_image(image, *network.fit_size(*image.shape[-2:])))  # (C, H', W')
    return images[0], images[1]


def trace_steps(steps: int, frames: int = TRACE_FRAMES) -> tuple[int, ...]:
    """``frames`` steps spread evenly from 0 to ``steps``, each once."""
    return tuple(sorted({int(s) for s in np.linspace(0, steps, frames).round()}))


def stylize_files(
    plan: StylizePlan,
    network: FeatureNetwork,
    *,
    size: int = 512,
    steps: int = 300,
    device: str | torch.device = "cpu",
    progress: Callable[[StyleProgress], None] | None = None,
    **options: object,
) -> StylizeReport:
    """Read the images, stylise (``options`` go to :func:`~pixelwise.style.transfer.stylize`),
    write ``plan.out`` and, with ``plan.trace``, the strip of intermediate images."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(message("--size", "be a positive number of pixels", repr(size)))
    content, style = (x.to(device) for x in read_pair(plan, network, size))
    network = network.to(device)
    keep = trace_steps(steps) if plan.trace else ()
    start = time.perf_counter()
    result = stylize(
        content, style, network, steps=steps, progress=progress, trace_steps=keep, **options
    )
    seconds = time.perf_counter() - start
    write_png(result.image, plan.out)
    if plan.trace:
        write_png(trace_strip([frame for _, frame in result.frames]), plan.trace)
    return StylizeReport(plan, tuple(result.image.shape[-2:]), result, seconds)
