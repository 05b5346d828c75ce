"""Input validation shared by the public entry points.

Every message follows one pattern, ``<what> must <expectation>, got <actual>; <how to fix>``,
so that a user sees one clear line instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import torch

_SHOWN_VALUES = 5  # distinct values an error message lists before "and N more"


def message(what: str, expectation: str, actual: object, fix: str = "") -> str:
    """Build an error message in the project's one format."""
    text = f"{what} must {expectation}, got {actual}"
    return f"{text}; {fix}" if fix else text


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"did you mean 'x'?"`` for the closest choice, or a list of all choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose one of: " + ", ".join(choices)


def check_choice(what: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError with a suggestion."""
    if value not in choices:
        raise ValueError(
            message(
                what, f"be one of {list(choices)}", repr(value), did_you_mean(str(value), choices)
            )
        )
    return value


def check_positive_int(what: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(message(what, f"be an integer >= {minimum}", repr(value)))
    return value


def check_images(x: object, in_channels: int | None = None, what: str = "images") -> torch.Tensor:
    """Check a batch of images is a float tensor of shape (N, C, H, W).

    Shape:
        x: (N, C, H, W), C == ``in_channels`` when given.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(message(what, "be a torch.Tensor of shape (N, C, H, W)", type(x).__name__))
    if x.dim() != 4:
        fix = "add a batch axis with x.unsqueeze(0)" if x.dim() == 3 else "pass (N, C, H, W)"
        raise ValueError(
            message(what, "have 4 dimensions (N, C, H, W)", f"shape {tuple(x.shape)}", fix)
        )
    if not x.is_floating_point():
        raise TypeError(
            message(what, "be a floating-point tensor", x.dtype, "convert with x.float()")
        )
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(
            message(
                what,
                f"have {in_channels} channels (the model's in_channels)",
                f"{x.shape[1]} channels in shape {tuple(x.shape)}",
                "build the model with a matching in_channels or convert the images",
            )
        )
    return x


def describe_values(values: torch.Tensor | np.ndarray) -> str:
    """The first few distinct values of ``values`` and how many pixels hold them, for a message."""
    flat = torch.as_tensor(values).reshape(-1)
    distinct = torch.unique(flat).tolist()
    shown = ", ".join(str(v) for v in distinct[:_SHOWN_VALUES])
    more = f" and {len(distinct) - _SHOWN_VALUES} more" if len(distinct) > _SHOWN_VALUES else ""
    return f"{shown}{more} ({flat.numel()} pixels)"


def check_integer_labels(labels: object, what: str, shape: str) -> torch.Tensor:
    """``labels`` as int64 if it is a tensor of an integer dtype (any width), else raise.

    Args:
        what: the argument's name in the message ("target").
        shape: the expected shape, for the message ("(N, H, W)").
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(message(what, f"be a torch.Tensor of shape {shape}", type(labels).__name__))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            message(
                what,
                "be an integer tensor of class indices",
                labels.dtype,
                f"convert with {what}.long()",
            )
        )
    return labels.long()


def check_class_indices(
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None,
    what: str = "target values",
    fix: str = "map the dataset's label ids to class indices, or fix num_classes / ignore_index",
) -> None:
    """Raise one line naming the offending values unless every label is a class index in
    ``[0, num_classes)`` or ``ignore_index`` (costs one device synchronisation)."""
    labels = torch.as_tensor(labels)
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid |= labels == ignore_index
    if not bool(valid.all()):
        allowed = f"be in [0, {num_classes})" + (
            "" if ignore_index is None else f" or ignore_index {ignore_index}"
        )
        raise ValueError(message(what, allowed, describe_values(labels[~valid]), fix))
