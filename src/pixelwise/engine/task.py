"""The task: what one training step and one validation image compute, beside the loop.

:class:`SegmentationTask` holds the network, the loss and the input normalisation, and knows
how a batch becomes a loss: images normalised on the device (channels-last when asked), the
forward pass under autocast (float16 on CUDA when ``amp``), the loss in float32 against the
target and weight map, both centre-cropped to the logits (a valid-padding U-Net's output is
smaller than its training crops). Evaluation goes through
:func:`pixelwise.inference.evaluate`, which mirror-pads whole images instead, so that every
pixel is scored; :meth:`SegmentationTask.image_loss` is the loss it computes per image.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pixelwise._checks import message
from pixelwise.inference.segmenter import Segmenter
from pixelwise.losses.build import SegmentationLoss
from pixelwise.losses.distance import distance_loss
from pixelwise.nn.distance import distance_outputs, has_distance_head
from pixelwise.nn.normalise import Normalize
from pixelwise.nn.rescale import Rescaled

LossFn = Callable[..., torch.Tensor]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of the last two axes (a no-op at that size).

    Shape:
        x: (..., H, W) → (..., h, w).
    """
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def check_finite(value: float, what: str) -> None:
    """Refuse a loss that is not finite (the run diverged), in one line."""
    if not math.isfinite(value):
        raise ValueError(message(what, "be finite", value, "lower optim.lr or set train.grad_clip"))


def _takes_weight(loss: LossFn) -> bool:
    """Whether a user's loss callable takes a third argument (the weight map)."""
    if isinstance(loss, SegmentationLoss):
        return True
    try:
        params = inspect.signature(loss).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


class SegmentationTask:
    """Network, loss and normalisation, on one device.

    Args:
        model: The network (unwrapped); ``train_model`` may be a DDP wrapper of it.
        loss: Called ``loss(logits, target, weight)`` (a
            :class:`~pixelwise.losses.build.SegmentationLoss`, or any callable taking three
            arguments) or ``loss(logits, target)``.
        normalisation: ``{"mean": [...], "std": [...]}`` per channel.
        class_names, ignore_index: Of the targets.
        device: Where the batches go.
        amp: float16 autocast (CUDA only).
        channels_last: Feed images in channels-last memory format.
        input_scale: ``data.input_scale``: the training batches come resized by it (the
            augmentation does that); :meth:`segmenter` runs the network at it.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        normalisation: Mapping[str, Sequence[float]],
        *,
        class_names: Sequence[str],
        ignore_index: int,
        device: torch.device,
        amp: bool = False,
        channels_last: bool = False,
        input_scale: float = 1.0,
    ) -> None:
        self.model = model
        self.train_model: nn.Module = model
        self.loss_fn = loss.to(device) if isinstance(loss, nn.Module) else loss
        self._weighted = _takes_weight(loss)
        self.class_names = tuple(class_names)
        self.ignore_index = int(ignore_index)
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.channels_last = channels_last
        self.input_scale = float(input_scale)
        self.normalisation = normalisation
        self.distance_head = has_distance_head(model)

    @property
    def normalisation(self) -> dict:
        """The input normalisation, as a checkpoint stores it."""
        return self.normalize.as_dict()

    @normalisation.setter
    def normalisation(self, value: Mapping[str, Sequence[float]]) -> None:
        self.normalize = Normalize.from_dict(value).to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """float16 autocast on CUDA with ``amp``, else nothing."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def prepare(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Images normalised on the device; mask and weight map (or None) beside them.

        Shape:
            images (N, C, H, W), target (N, H, W), weight (N, H, W) or None.
        """
        images = self.normalize(batch["image"].to(self.device, non_blocking=True))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["mask"].to(self.device, non_blocking=True)
        weight = batch.get("weight")
        weight = weight.to(self.device, non_blocking=True) if weight is not None else None
        return images, target, weight

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss in float32; target and weight are centre-cropped to the logits.

        Shape:
            logits: (N, K, h, w); target, weight: (N, H, W) with H >= h, W >= w; output: ().
        """
        size = tuple(logits.shape[-2:])
        logits, target = logits.float(), center_crop(target, size)
        if not self._weighted:
            return self.loss_fn(logits, target)
        weight = None if weight is None else center_crop(weight, size)
        return self.loss_fn(logits, target, weight)

    def image_loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The loss of one image for evaluation; None where it cannot be computed (a loss
        that needs a weight map, on a sample without one)."""
        needs_map = isinstance(self.loss_fn, SegmentationLoss) and self.loss_fn.weight_map
        if needs_map and weight is None:
            return None
        return self.loss(logits, target, weight)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One training forward pass: ``{"loss", "logits", "target"}``. A network with a
        distance head (:mod:`pixelwise.nn.distance`), given a batch with ``"distance"``, adds
        its regression loss (:func:`pixelwise.losses.distance_loss`, on the pixels the class
        loss counts); ``"logits"`` are the K class logits either way."""
        images, target, weight = self.prepare(batch)
        distance = batch.get("distance") if self.distance_head else None
        if distance is None:
            with self.autocast():
                logits = self.train_model(images)  # (N, K, h, w)
            return {"loss": self.loss(logits, target, weight), "logits": logits, "target": target}
        with distance_outputs(self.train_model), self.autocast():
            out = self.train_model(images)  # (N, K + 1, h, w)
        logits, regressed = out[:, :-1], out[:, -1]
        loss = self.loss(logits, target, weight) + self.distance_loss(regressed, distance, target)
        return {"loss": loss, "logits": logits, "target": target}

    def distance_loss(
        self, regressed: torch.Tensor, distance: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The distance head's loss, target and mask centre-cropped to its output; pixels
        whose class is ``ignore_index`` (padding) do not count.

        Shape:
            regressed: (N, h, w); distance, target: (N, H, W); output: ().
        """
        size = tuple(regressed.shape[-2:])
        distance = center_crop(distance.to(self.device, non_blocking=True), size)
        valid = center_crop(target, size) != self.ignore_index
        return distance_loss(regressed, distance, valid)

    __call__ = forward

    @contextlib.contextmanager
    def distributed(self, dist: Any) -> Iterator[None]:
        """Train through a DistributedDataParallel wrapper while in this block (when ``dist``,
        a :class:`~pixelwise.engine.distributed.DistContext`, is enabled)."""
        if dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        try:
            yield
        finally:
            self.train_model = self.model

    def segmenter(self) -> Segmenter:
        """The network with its normalisation and classes, for evaluation and overlays (the
        live model, not a copy), at the input scale a checkpoint's prediction uses."""
        network = self.model if self.input_scale == 1 else Rescaled(self.model, self.input_scale)
        return Segmenter(
            network,
            self.normalize,
            class_names=self.class_names,
            ignore_index=self.ignore_index,
        )
