"""Input checks shared by the metrics: class maps (semantic metrics) and label images (the rest).

Semantic metrics take what a model gives (logits ``(N, K, H, W)`` or labels ``(N, H, W)``) and a
target ``(N, H, W)``; label-image metrics take one ``(H, W)`` integer image per argument. Every
failure is one line naming the offending values, in the project's message format.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelwise._checks import (
    check_class_indices,
    check_integer_labels,
    check_positive_int,
    describe_values,
    message,
)


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


def _check_target(target: object, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    target = check_integer_labels(target, "target", "(N, H, W)")
    if target.dim() != 3:
        fix = "add a batch axis with target.unsqueeze(0)" if target.dim() == 2 else "pass (N, H, W)"
        raise ValueError(
            message("target", "have 3 dimensions (N, H, W)", f"shape {tuple(target.shape)}", fix)
        )
    check_class_indices(target, num_classes, ignore_index)
    return target


def _labels_from_prediction(pred: object, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if not isinstance(pred, torch.Tensor):
        raise TypeError(
            message(
                "prediction",
                "be a torch.Tensor, logits (N, K, H, W) or labels (N, H, W)",
                type(pred).__name__,
            )
        )
    if pred.dim() == 4:
        if not pred.is_floating_point():
            raise TypeError(
                message("logits", "be a floating-point tensor (N, K, H, W)", pred.dtype)
            )
        expected = (target.shape[0], num_classes, *target.shape[1:])
        if tuple(pred.shape) != expected:
            raise ValueError(
                message(
                    "logits", f"have shape {expected} to match target", f"shape {tuple(pred.shape)}"
                )
            )
        return pred.detach().argmax(dim=1)
    if pred.dim() != 3 or pred.shape != target.shape:
        raise ValueError(
            message(
                "prediction",
                f"be logits (N, {num_classes}, H, W) or labels of shape {tuple(target.shape)}",
                f"shape {tuple(pred.shape)}",
            )
        )
    if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
        raise TypeError(
            message(
                "predicted labels",
                "be an integer tensor",
                pred.dtype,
                "pass logits (N, K, H, W) or labels.long()",
            )
        )
    pred = pred.long()
    valid = (pred >= 0) & (pred < num_classes)
    if not bool(valid.all()):
        raise ValueError(
            message(
                "predicted label values",
                f"be in [0, {num_classes})",
                describe_values(pred[~valid]),
                "predictions carry class indices only; ignore_index belongs to the target",
            )
        )
    return pred


def class_maps(
    pred_or_logits: object, target: object, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(pred, target)`` int64 label maps of one shape; logits become their argmax.

    Shape:
        pred_or_logits: (N, K, H, W) floating logits or (N, H, W) integer labels.
        target: (N, H, W) integer, values in [0, K) or ``ignore_index``.
        returns: two (N, H, W) int64 tensors on the input devices.
    """
    target = _check_target(target, num_classes, ignore_index)
    pred = _labels_from_prediction(pred_or_logits, target, num_classes)
    if pred.device != target.device:
        raise ValueError(
            message(
                "prediction and target", "be on one device", f"{pred.device} and {target.device}"
            )
        )
    return pred, target


def label_image(x: object, what: str) -> np.ndarray:
    """``x`` as a 2-D int64 numpy label image; numpy arrays and torch tensors are accepted.

    Shape:
        x: (H, W) integer.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(
            message(what, "be a numpy array or torch.Tensor of shape (H, W)", type(x).__name__)
        )
    if x.ndim != 2:
        raise ValueError(
            message(
                what, "be a 2-D label image (H, W)", f"shape {x.shape}", "score one image at a time"
            )
        )
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(
            message(
                what,
                "hold integer labels",
                x.dtype,
                "label segments first, e.g. with membrane_to_segments",
            )
        )
    return x.astype(np.int64, copy=False)


def same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    """Raise a ValueError unless the two label images have one shape."""
    if a.shape != b.shape:
        raise ValueError(message(names, "have the same shape", f"{a.shape} and {b.shape}"))


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, values)`` with ``values[ids] == labels`` and ids in ``[0, len(values))``.

    Same result as ``np.unique(labels, return_inverse=True)`` (values sorted), for labels >= 0.

    Shape:
        labels: any shape, int64 >= 0; ids: same shape; values: (M,).
    """
    top = int(labels.max(initial=0))
    if top > 4 * labels.size + 1024:
        # Sparse, huge label values: a lookup table would dwarf the image, so sort instead.
        values, ids = np.unique(labels, return_inverse=True)
        return ids.reshape(labels.shape), values
    present = np.bincount(labels.reshape(-1), minlength=top + 1) > 0
    # A lookup table indexed by label value is linear time; np.unique would sort every pixel.
    lookup = np.cumsum(present) - 1
    return lookup[labels], np.flatnonzero(present)


def pair_counts(a_ids: np.ndarray, b_ids: np.ndarray, a_count: int, b_count: int) -> np.ndarray:
    """Dense ``(a_count, b_count)`` table of how many pixels hold each pair of compact ids.

    Shape:
        a_ids, b_ids: (P,) int64; returns (a_count, b_count) int64.
    """
    keys = a_ids.reshape(-1) * b_count + b_ids.reshape(-1)
    return np.bincount(keys, minlength=a_count * b_count).reshape(a_count, b_count)
