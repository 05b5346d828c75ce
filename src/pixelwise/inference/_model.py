"""What inference needs to know about a model, shared by whole-image and tiled prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def output_margin(model: nn.Module) -> int:
    """Pixels the model's output loses on each side of its input: 0 unless it shrinks (valid
    U-Net, recognised by ``is_valid_input_size``, ``valid_input_sizes_near`` and ``output_size``)."""
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
    args = getattr(model, "pixelwise_args", None) or {}
    return args.get("in_channels", getattr(model, "in_channels", None))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
