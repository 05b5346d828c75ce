"""A distance-regression head: one more output channel than classes, for separating objects.

A network built with ``distance_head=True`` (:func:`pixelwise.models.create_model`; the
training switch is ``data.distance_target``) is a :class:`DistanceHead` around the model
built with K + 1 output channels. Channels 0 … K−1 are the class logits, channel K the logit
of each pixel's distance to its object's edge, normalised to [0, 1] per object
(:func:`pixelwise.data.datasets.distance_target`). Its ``forward`` returns the K class
logits only, so that everything that reads classes (validation, prediction, export, serving)
sees a plain K-class network; inside :func:`distance_outputs` it returns all K + 1, which
training (for the regression loss) and instance post-processing (for the watershed's
elevation and seeds) ask for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class DistanceHead(nn.Module):
    """``network`` (K + 1 outputs) seen as a K-class network with a distance channel.

    Args:
        network: Maps images to (N, K + 1, H, W).
        num_classes: K.

    Attributes:
        with_distance: Return all K + 1 channels (set by :func:`distance_outputs`).

    Other attributes (``size_divisor``, ``encoder``, ``output_size`` …) are the network's.

    Shape:
        (N, C, H, W) -> (N, K, H', W'), or (N, K + 1, H', W') with ``with_distance``.
    """

    def __init__(self, network: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.network = network
        self.num_classes = int(num_classes)
        self.with_distance = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        return out if self.with_distance else out[:, : self.num_classes]

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            return getattr(super().__getattr__("network"), name)


def distance_heads(model: nn.Module) -> list[DistanceHead]:
    """The :class:`DistanceHead` modules in ``model`` (any wrapper: Segmenter, DDP,
    :class:`~pixelwise.nn.rescale.Rescaled`); [] for a network without one."""
    return [m for m in model.modules() if isinstance(m, DistanceHead)]


def has_distance_head(model: nn.Module) -> bool:
    """Whether ``model`` predicts a distance channel."""
    return bool(distance_heads(model))


@contextlib.contextmanager
def distance_outputs(model: nn.Module) -> Iterator[bool]:
    """In this block ``model``'s distance heads return the distance channel after the K
    class logits (a copy made inside, e.g. an inference-optimised one, keeps that); yields
    whether there is one. The previous setting is restored on exit."""
    heads = distance_heads(model)
    before = [head.with_distance for head in heads]
    for head in heads:
        head.with_distance = True
    try:
        yield bool(heads)
    finally:
        for head, value in zip(heads, before, strict=True):
            head.with_distance = value
