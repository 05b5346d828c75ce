"""A trained network together with the facts needed to use it.

A :class:`Segmenter` holds the network, its input normalisation (a
:class:`pixelwise.nn.normalise.Normalize` module), the class names, the ignore index, a
palette and the mask encoding of its training data, so that prediction, evaluation, export and
style transfer take one object instead of five loose arguments. :func:`pixelwise.engine.checkpoint.load_model` returns one; wrapping a
live model is cheap (nothing is copied), so a training loop can build one per validation::

    segmenter = Segmenter(model, {"mean": [0.5], "std": [0.25]}, class_names=("bg", "cell"))
    mask = segmenter.predict(image)  # (H, W) int64, image (C, H, W) in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pixelwise._checks import message
from pixelwise.data.encoding import MaskEncoding
from pixelwise.inference._model import (
    input_scale,
    model_device,
    model_in_channels,
    model_num_classes,
    output_margin,
    rescaled_part,
    unwrap_model,
)
from pixelwise.inference.predict import predict_logits as whole_logits
from pixelwise.inference.tiling import predict as tiled_logits
from pixelwise.nn.normalise import Normalize
from pixelwise.report.palette import class_palette


class Segmenter(nn.Module):
    """A network plus its input normalisation, class names, ignore index and palette.

    Args:
        network: The trained ``nn.Module`` mapping normalised images to logits (held, not
            copied; it may be a live training model, DDP-wrapped or compiled, or run at a
            reduced input scale inside :class:`pixelwise.nn.rescale.Rescaled`).
        normalize: A :class:`Normalize`, a ``{"mean": [...], "std": [...]}`` dict, or None
            (``{}``) for images taken in [0, 1] as they are.
        class_names: K names; default ``"0"`` … ``"K-1"`` when the network says K (a pixelwise
            model does), else empty.
        ignore_index: Target value left out of losses and metrics.
        palette: (K, 3) uint8 colours; default
            :func:`pixelwise.report.palette.class_palette` of the class names.
        encoding: How the training data's mask files encode classes, a
            :class:`pixelwise.data.encoding.MaskEncoding` or its config table (built when
            first used, so a palette file is read only then); None when unknown.

    Attributes:
        network, normalize, class_names (tuple), ignore_index, encoding, checkpoint (the
        :class:`pixelwise.engine.checkpoint.Checkpoint` it was loaded from, or None).

    Shape:
        forward: images (N, C, H, W) in [0, 1] -> logits (N, K, H', W'); H' = H and W' = W
        for every model except a valid-padding U-Net, whose output is smaller by its margin
        (:attr:`output_margin` on every side); :meth:`predict_logits` mirror-pads for it.
    """

    def __init__(
        self,
        network: nn.Module,
        normalize: Normalize | Mapping | None = None,
        *,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        palette: np.ndarray | Sequence[Sequence[int]] | None = None,
        encoding: MaskEncoding | Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(message("network", "be a torch.nn.Module", type(network).__name__))
        self.network = network
        self.normalize = (
            normalize if isinstance(normalize, Normalize) else Normalize.from_dict(normalize)
        )
        self.class_names = _class_names(class_names, model_num_classes(network))
        self.ignore_index = int(ignore_index)
        self._palette = None if palette is None else np.asarray(palette, dtype=np.uint8)
        self._encoding = encoding
        self.checkpoint = None
        self.training = network.training  # the wrapper's mode mirrors the network's

    # --- facts -------------------------------------------------------------------------

    @property
    def num_classes(self) -> int | None:
        """K: the network's, else the number of class names; None when neither says."""
        return model_num_classes(self.network) or (len(self.class_names) or None)

    @property
    def in_channels(self) -> int | None:
        """C: the network's (``pixelwise_args`` or ``in_channels``), else the normalisation's."""
        return model_in_channels(self.network) or self.normalize.channels

    @property
    def size_divisor(self) -> int:
        """The network's ``size_divisor`` (1 when it has none), over the input scale."""
        rescaled = rescaled_part(self.network)
        source = rescaled if rescaled is not None else unwrap_model(self.network)
        return int(getattr(source, "size_divisor", 1))

    @property
    def input_scale(self) -> float:
        """The factor images are resized by before the network (the training's
        ``data.input_scale``; logits come back at the image size); 1.0 for none."""
        return input_scale(self.network)

    @property
    def output_margin(self) -> int:
        """Pixels the network's output loses on each side (0 except for a valid U-Net)."""
        return output_margin(self.network)

    @property
    def device(self) -> torch.device:
        """The device of the network's parameters."""
        return model_device(self.network)

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 colours, one per class."""
        if self._palette is not None:
            return self._palette
        return class_palette(self.class_names or (self.num_classes or 1))

    @property
    def encoding(self) -> MaskEncoding | None:
        """How the training data's mask files encode classes (predicted masks are written in
        it, :meth:`MaskEncoding.encode`); None when unknown (masks are then class indices).

        Raises:
            ValueError: the encoding cannot be built (a palette file missing), or has other
                classes than the network.
        """
        if self._encoding is None or isinstance(self._encoding, MaskEncoding):
            return self._encoding
        encoding = MaskEncoding.from_config(self._encoding)
        if self.num_classes is not None and encoding.num_classes != self.num_classes:
            raise ValueError(
                message(
                    "the mask encoding of the training data",
                    f"have the network's {self.num_classes} classes",
                    f"{encoding.num_classes} in {encoding.to_toml()}",
                )
            )
        self._encoding = encoding
        return encoding

    @encoding.setter
    def encoding(self, value: MaskEncoding | Mapping[str, object] | None) -> None:
        self._encoding = value

    def meta(self) -> dict[str, object]:
        """What export files and ``pixelwise info`` record: model name and arguments (the
        class's qualified name and ``{}`` for a model outside the registry), class names,
        ignore index, normalisation, num_classes, in_channels and input_scale (plain JSON
        values)."""
        net = unwrap_model(self.network)
        name = getattr(net, "pixelwise_name", None) or qualified_name(net)
        return {
            "model_name": name,
            "model_args": dict(getattr(net, "pixelwise_args", None) or {}),
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "normalisation": self.normalize.as_dict(),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_scale": self.input_scale,
        }

    def with_network(self, network: nn.Module) -> Segmenter:
        """A Segmenter of ``network`` (e.g. an optimised copy) with these facts."""
        segmenter = Segmenter(
            network,
            self.normalize,
            class_names=self.class_names,
            ignore_index=self.ignore_index,
            palette=self._palette,
            encoding=self._encoding,
        )
        segmenter.checkpoint = self.checkpoint
        return segmenter

    # --- prediction --------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``network(normalize(images))`` for raw images in [0, 1] (see the class Shape)."""
        return self.network(self.normalize(images))

    def predict_logits(
        self,
        image: torch.Tensor,
        *,
        tile: int | tuple[int, int] | None = None,
        tta: bool | str | Sequence[str] = False,
        progress: Callable[[int, int], None] | None = None,
        **tiling: object,
    ) -> torch.Tensor:
        """Logits at the image size, in eval mode without grad (the mode is restored).

        Without ``tile`` and ``tta``, one whole-image pass (an image or a batch, see
        :func:`pixelwise.inference.predict.predict_logits`); otherwise one image through
        :func:`pixelwise.inference.tiling.predict` (``tile`` default 512; ``overlap``,
        ``blend``, ``batch_size``, ``device``, ``optimize`` passed on).

        Shape:
            image: (C, H, W) or, whole, (N, C, H, W) -> (K, H, W) or (N, K, H, W).
        """
        if tile is None and not tta and not tiling:
            return whole_logits(self, image)
        return tiled_logits(
            self, image, tile=512 if tile is None else tile, tta=tta, progress=progress, **tiling
        )

    def predict(self, image: torch.Tensor, **options: object) -> torch.Tensor:
        """Predicted classes, the argmax of :meth:`predict_logits` (same options), on the CPU.

        Shape:
            image: (C, H, W) -> (H, W) int64 (or (N, C, H, W) -> (N, H, W) when whole).
        """
        return self.predict_logits(image, **options).argmax(dim=-3).cpu()


def qualified_name(module: nn.Module) -> str:
    """``module.path.ClassName`` of a module's class."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_names(names: Sequence[str] | None, num_classes: int | None) -> tuple[str, ...]:
    if names is None:
        return tuple(str(i) for i in range(num_classes or 0))
    if isinstance(names, str):
        raise TypeError(message("class_names", "be a sequence of names", repr(names)))
    names = tuple(str(n) for n in names)
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(
            message(
                "class_names",
                f"name the network's {num_classes} classes",
                f"{len(names)} names {list(names)[:5]}",
            )
        )
    return names


def as_segmenter(model: nn.Module) -> Segmenter:
    """``model`` if it is a Segmenter, else a Segmenter of the bare network (identity
    normalisation, default class names, ignore index 255)."""
    if isinstance(model, Segmenter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            message("model", "be a Segmenter or a torch.nn.Module", type(model).__name__)
        )
    return Segmenter(model)
