"""Labels as the metrics count them: class maps (semantic metrics) and compact label ids (the rest).

Semantic metrics take what a model gives (logits ``(N, K, H, W)`` or labels ``(N, H, W)``) and a
target ``(N, H, W)``; label-image metrics take one ``(H, W)`` integer image per argument (checked
by :func:`pixelwise._checks.check_label_image`) and count pixels per pair of compact ids. Every
failure is one line naming the offending values, in the project's message format.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelwise._checks import (
    check_label_image,
    check_logits,
    check_target,
    describe_values,
    message,
)


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
        check_logits(pred)
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
    target = check_target(target, num_classes, ignore_index)
    pred = _labels_from_prediction(pred_or_logits, target, num_classes)
    if pred.device != target.device:
        raise ValueError(
            message(
                "prediction and target", "be on one device", f"{pred.device} and {target.device}"
            )
        )
    return pred, target


def label_image(x: object, what: str) -> np.ndarray:
    """``x`` as a 2-D int64 label image of segments (booleans refused: label them first).

    Shape:
        x: (H, W) integer; returns (H, W) int64.
    """
    return check_label_image(x, what, fix="label segments first, e.g. with membrane_to_segments")


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
