"""What inference needs to know about a model, shared by whole-image and tiled prediction.

Functions here take a bare network or a :class:`pixelwise.inference.segmenter.Segmenter`
(recognised by its ``network`` and ``normalize`` attributes, so that this module stays below
the Segmenter): :func:`model_parts` splits either into the network and its input normalisation.
A network trained at a reduced input scale runs inside :class:`pixelwise.nn.rescale.Rescaled`;
:func:`unwrap_model` steps through it to the trained network (whose name, arguments and
weights a checkpoint records), :func:`rescaled_part` finds it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from pixelwise.nn.normalise import Normalize
from pixelwise.nn.rescale import Rescaled


def _peel(model: nn.Module) -> nn.Module:
    """The model inside one DistributedDataParallel / DataParallel or ``torch.compile``
    wrapper, or ``model`` itself when it is none of them."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return model.module
    if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
        return model._orig_mod
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel, ``torch.compile`` and
    :class:`~pixelwise.nn.rescale.Rescaled` (the trained network, whose weights are saved)."""
    while True:
        inner = model.network if isinstance(model, Rescaled) else _peel(model)
        if inner is model:
            return model
        model = inner


def rescaled_part(model: nn.Module) -> Rescaled | None:
    """The :class:`~pixelwise.nn.rescale.Rescaled` wrapper of a network (or a Segmenter's),
    inside DDP and compile wrappers; None when it runs at its native scale."""
    model = model_parts(model)[0]
    while not isinstance(model, Rescaled):
        inner = _peel(model)
        if inner is model:
            return None
        model = inner
    return model


def input_scale(model: nn.Module) -> float:
    """The factor the model resizes its input by before the network (1.0 when it does not)."""
    rescaled = rescaled_part(model)
    return 1.0 if rescaled is None else rescaled.scale


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
