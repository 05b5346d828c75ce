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
_ONE_IMAGE = "pass one image at a time"


# Longest echo of a value in a message: a 10 MB string in a file is not repeated whole.
MAX_ECHO = 300


def one_line(text: object, limit: int = MAX_ECHO) -> str:
    """``text`` as one line: control characters (a newline in a file name) escaped, and cut to
    ``limit`` characters with a note of the full length."""
    line = str(text)
    if any(c < " " or c == "\x7f" for c in line):
        line = "".join(c if c >= " " and c != "\x7f" else repr(c)[1:-1] for c in line)
    if len(line) > limit:
        line = f"{line[: limit - 40]}... ({len(line)} characters)"
    return line


def message(what: str, expectation: str, actual: object, fix: str = "") -> str:
    """Build an error message in the project's one format, always one line: names and values
    with control characters are escaped, long values cut (:func:`one_line`)."""
    text = f"{one_line(what, 4 * MAX_ECHO)} must {expectation}, got {one_line(actual)}"
    return f"{text}; {one_line(fix, 4 * MAX_ECHO)}" if fix else text


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


# The largest integer accepted anywhere: TOML's (and torch's) 64-bit range; Python's ints are
# unbounded, and 10**30 epochs or a seed past it fail deep inside torch or run forever.
MAX_INT = 2**63 - 1


def check_positive_int(what: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum`` (and <= :data:`MAX_INT`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(message(what, f"be an integer >= {minimum}", repr(value)))
    if value > MAX_INT:
        raise ValueError(
            message(what, f"be an integer <= {MAX_INT} (64 bits)", f"{float(value):.3g}")
        )
    return value


def check_class_names(
    names: Sequence[object], what: str, bad: type[ValueError] = ValueError
) -> tuple[str, ...]:
    """``names`` as strings if each is a non-empty string and no two are the same: the
    metrics are keyed by class name, so a repeated name would merge two classes' scores.
    ``bad``: the error type, called as ``bad(what, text)`` unless ValueError."""

    def refuse(expectation: str, actual: object, fix: str) -> ValueError:
        text = message(what, expectation, actual, fix)
        return ValueError(text) if bad is ValueError else bad(what, text)

    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise refuse("be non-empty strings", repr(name), "name every class")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise refuse("be distinct", f"{', '.join(map(repr, repeated))} repeated", "rename them")
    return tuple(names)


# What check_images says for a batch (4 axes) and for one image (3 axes).
_IMAGE_LAYOUTS = {
    4: {
        "shape": "(N, C, H, W)",
        "other": "add a batch axis with x.unsqueeze(0)",
        "other_ndim": 3,
        "float": "convert with x.float()",
        "channels": "build the model with a matching in_channels or convert the images",
    },
    3: {
        "shape": "(C, H, W)",
        "other": "predict one image at a time: image[0]",
        "other_ndim": 4,
        "float": "convert with image.float()",
        "channels": "convert the image to the model's channels",
    },
}


def check_images(
    x: object, in_channels: int | None = None, what: str = "images", *, ndim: int = 4
) -> torch.Tensor:
    """Check a batch of images (``ndim=4``) or one image (``ndim=3``) is a float tensor.

    Shape:
        x: (N, C, H, W) for ``ndim=4``, (C, H, W) for ``ndim=3``; C == ``in_channels`` when given.
    """
    layout = _IMAGE_LAYOUTS[ndim]
    shape = layout["shape"]
    if not isinstance(x, torch.Tensor):
        raise TypeError(message(what, f"be a torch.Tensor of shape {shape}", type(x).__name__))
    if x.dim() != ndim:
        fix = layout["other"] if x.dim() == layout["other_ndim"] else f"pass {shape}"
        raise ValueError(
            message(what, f"have {ndim} dimensions {shape}", f"shape {tuple(x.shape)}", fix)
        )
    if not x.is_floating_point():
        raise TypeError(message(what, "be a floating-point tensor", x.dtype, layout["float"]))
    channels = x.shape[ndim - 3]
    if in_channels is not None and channels != in_channels:
        raise ValueError(
            message(
                what,
                f"have {in_channels} channels (the model's in_channels)",
                f"{channels} channels in shape {tuple(x.shape)}",
                layout["channels"],
            )
        )
    return x


def check_logits(logits: object) -> torch.Tensor:
    """Check ``logits`` is a floating-point tensor of shape (N, K, H, W).

    Shape:
        logits: (N, K, H, W)
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            message("logits", "be a torch.Tensor of shape (N, K, H, W)", type(logits).__name__)
        )
    if logits.dim() != 4:
        fix = "add a batch axis with logits.unsqueeze(0)" if logits.dim() == 3 else ""
        raise ValueError(
            message("logits", "have 4 dimensions (N, K, H, W)", f"shape {tuple(logits.shape)}", fix)
        )
    if not logits.is_floating_point():
        raise TypeError(
            message("logits", "be a floating-point tensor", logits.dtype, "convert with .float()")
        )
    return logits


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


def check_target(
    target: object,
    num_classes: int,
    ignore_index: int | None,
    *,
    like: torch.Tensor | None = None,
    fix: str | None = None,
) -> torch.Tensor:
    """``target`` as int64 if it is (N, H, W) class indices in ``[0, K)`` or ``ignore_index``.

    Any integer dtype is accepted and returned as int64, the dtype torch's kernels index with.
    The value check costs one device synchronisation.

    Args:
        like: Logits (N, K, H, W) whose batch and spatial size the target must have; without
            them the target only needs 3 axes.
        fix: The advice after a value out of range; default :func:`check_class_indices`'s.

    Shape:
        target: (N, H, W); like: (N, K, H, W)
    """
    target = check_integer_labels(target, "target", "(N, H, W)")
    if like is not None:
        n, _, h, w = like.shape
        if tuple(target.shape) != (n, h, w):
            raise ValueError(
                message(
                    "target",
                    f"have shape (N, H, W) = {(n, h, w)} to match logits {tuple(like.shape)}",
                    f"shape {tuple(target.shape)}",
                    "drop the channel axis of the target or resize it to the logits",
                )
            )
    elif target.dim() != 3:
        fix_axes = "add a batch axis with target.unsqueeze(0)" if target.dim() == 2 else ""
        raise ValueError(
            message(
                "target",
                "have 3 dimensions (N, H, W)",
                f"shape {tuple(target.shape)}",
                fix_axes or "pass (N, H, W)",
            )
        )
    advice = {} if fix is None else {"fix": fix}
    check_class_indices(target, num_classes, ignore_index, **advice)
    return target


def check_num_classes_and_ignore(
    num_classes: object, ignore_index: object
) -> tuple[int, int | None]:
    """Validate ``num_classes`` (>= 1) and ``ignore_index`` (None or an int outside [0, K))."""
    num_classes = check_positive_int("num_classes", num_classes)
    if ignore_index is None:
        return num_classes, None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(message("ignore_index", "be an int or None", repr(ignore_index)))
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            message(
                "ignore_index",
                f"lie outside the class range [0, {num_classes})",
                ignore_index,
                "use e.g. 255 or -100 for unlabelled pixels, or None for no ignored label",
            )
        )
    return num_classes, ignore_index


def check_label_image(
    labels: object,
    what: str,
    *,
    fix: str = "convert with .astype",
    allow_bool: bool = False,
    nonnegative: bool = False,
) -> np.ndarray:
    """``labels`` as a 2-D int64 numpy label image; arrays, tensors and nested lists are accepted.

    Args:
        what: The argument's name in the message ("instance labels").
        fix: The advice when the labels are not integers.
        allow_bool: Read a boolean image as labels 0 and 1 (a foreground mask).
        nonnegative: Refuse negative labels.

    Shape:
        labels: (H, W) integer; returns (H, W) int64.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(
            message(what, "be a 2-D label image (H, W)", f"shape {array.shape}", _ONE_IMAGE)
        )
    if array.dtype == bool and allow_bool:
        array = array.astype(np.uint8)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(message(what, "hold integer labels", array.dtype, fix))
    if nonnegative and array.size and array.min() < 0:
        raise ValueError(message(what, "be >= 0", f"minimum {array.min()}"))
    return array.astype(np.int64, copy=False)
