"""What inference needs to know about a model, shared by whole-image and tiled prediction.

Functions here take a bare network or a :class:`pixelwise.inference.segmenter.Segmenter`
(recognised by its ``network`` and ``normalize`` attributes, so that this module stays below
the Segmenter): :func:`model_parts` splits either into the network and its input normalisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from pixelwise.nn.normalise import Normalize


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel and ``torch.compile``."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def model_parts(model: nn.Module) -> tuple[nn.Module, Normalize]:
    """(network, normalisation) of a Segmenter; a bare network gets the identity normalisation."""
    normalize = getattr(model, "normalize", None)
    network = getattr(model, "network", None)
    if isinstance(normalize, Normalize) and isinstance(network, nn.Module):
        return network, normalize
    return model, Normalize()


def output_margin(model: nn.Module) -> int:
    """Pixels the model's output loses on each side of its input: 0 unless it shrinks (valid
    U-Net, recognised by ``is_valid_input_size``, ``valid_input_sizes_near`` and ``output_size``)."""
    model = unwrap_model(model_parts(model)[0])
    if not all(
        hasattr(model, a) for a in ("is_valid_input_size", "valid_input_sizes_near", "output_size")
    ):
        return 0
    smallest = model.valid_input_sizes_near(1)[1]
    return (smallest - model.output_size(smallest)) // 2


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, restoring its train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_in_channels(model: nn.Module) -> int | None:
    """The image channels the model was built for, when it says."""
    model = unwrap_model(model_parts(model)[0])
    args = getattr(model, "pixelwise_args", None) or {}
    return args.get("in_channels", getattr(model, "in_channels", None))


def model_num_classes(model: nn.Module) -> int | None:
    """K, the classes the model was built for, when it says."""
    model = unwrap_model(model_parts(model)[0])
    args = getattr(model, "pixelwise_args", None) or {}
    classes = args.get("num_classes", getattr(model, "num_classes", None))
    return int(classes) if isinstance(classes, int) and not isinstance(classes, bool) else None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
