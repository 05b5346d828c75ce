"""One evaluation function for training validation, ``pixelwise evaluate`` and the benchmarks.

:func:`evaluate` predicts every image at its own size the way prediction does
(:func:`pixelwise.inference.predict.whole_image_logits`: a valid-padding U-Net sees the image
mirror-padded by its margin), so every labelled pixel is scored, and the numbers a training
run records equal those of ``pixelwise evaluate`` on the same checkpoint and data.

The data is either a map-style data set of sample dicts (``image`` (C, H, W), ``mask``
(H, W), optional ``weight`` (H, W)), read in order in batches of ``batch_size`` split into
groups of equal image size, or an iterable of batch dicts (``image`` (N, C, H, W), ...) or of
lists of them (what a DataLoader with :func:`pixelwise.engine.trainer.collate_groups` yields).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pixelwise._checks import check_positive_int, message
from pixelwise.inference._model import eval_mode, model_parts
from pixelwise.inference.predict import whole_image_logits
from pixelwise.inference.segmenter import Segmenter, as_segmenter
from pixelwise.metrics import ConfusionMatrix, boundary_f1_scores

Batch = Mapping[str, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor | None]
Reduce = Callable[[torch.Tensor], object]
Progress = Callable[[int, int], None]
_KEYS = ("image", "mask", "weight")


def _is_dataset(data: object) -> bool:
    """A map-style data set of samples (indexable with a length), not a loader of batches."""
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, dict)


def _is_sample(item: object) -> bool:
    return isinstance(item, Mapping) and torch.as_tensor(item["image"]).dim() == 3


def _stack(samples: list[Mapping]) -> list[dict[str, torch.Tensor]]:
    """Samples as batches, one per image size (in order of first appearance)."""
    groups: dict[tuple[int, ...], list[Mapping]] = {}
    for sample in samples:
        groups.setdefault(tuple(torch.as_tensor(sample["image"]).shape), []).append(sample)
    batches = []
    for group in groups.values():
        batch = {}
        for key in _KEYS:
            if all(s.get(key) is not None for s in group):
                batch[key] = torch.stack([torch.as_tensor(s[key]) for s in group])
        batches.append(batch)
    return batches


def _samples_in_batches(data: object, batch_size: int) -> Iterator[list[dict]]:
    """Batches of ``batch_size`` consecutive samples of a data set, each split by size."""
    for start in range(0, len(data), batch_size):
        samples = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        yield _stack(samples)


def _loader_batches(data: Iterable) -> Iterator[list[dict]]:
    for item in data:
        if isinstance(item, list | tuple):
            yield list(item)
        elif _is_sample(item):
            yield _stack([item])
        else:
            yield [item]


@dataclass
class _Totals:
    """What the images add up to: the confusion matrix, loss sums, boundary-F1 sums."""

    matrix: ConfusionMatrix
    loss: torch.Tensor  # (2,) float64: loss sum, images with a loss
    boundary: torch.Tensor | None  # (2K + 2,) float64, see _add_boundary
    images: int = 0


def _check_classes(logits: torch.Tensor, expected: int) -> None:
    if logits.shape[1] != expected:
        raise ValueError(
            message(
                "the model's output",
                f"have one channel per class ({expected})",
                f"{logits.shape[1]} channels",
                "evaluate with the data encoding the model was trained on",
            )
        )


def _add_boundary(totals: torch.Tensor, scores: np.ndarray) -> None:
    """Add per-image BF scores (N, K) as sums that add across processes: per class the score
    sum and the images scoring it, then the sum of per-image means and the images with one."""
    scored = ~np.isnan(scores)
    values = np.where(scored, scores, 0.0)
    images = scored.any(axis=1)
    per_image = values.sum(axis=1)[images] / scored.sum(axis=1)[images]
    update = np.concatenate([values.sum(0), scored.sum(0), [per_image.sum(), images.sum()]])
    totals += torch.from_numpy(update).to(totals)


def _evaluate_batch(
    segmenter: Segmenter,
    batch: Batch,
    totals: _Totals,
    *,
    expected: tuple[int, ...],
    loss: Loss | None,
    tolerance: float,
) -> None:
    network, normalize = model_parts(segmenter)
    device = totals.loss.device
    images = normalize(batch["image"].to(device))  # (N, C, H, W)
    target = batch["mask"].to(device)  # (N, H, W)
    weight = batch.get("weight")
    logits = whole_image_logits(network, images).float()  # (N, K, H, W)
    for classes in expected:
        _check_classes(logits, classes)
    totals.matrix.update(logits, target)
    totals.images += images.shape[0]
    if loss is not None:
        # Image by image, so that the mean does not depend on how images are batched or sharded.
        for i in range(images.shape[0]):
            w = None if weight is None else weight[i : i + 1].to(device)
            value = loss(logits[i : i + 1], target[i : i + 1], w)
            if value is not None:
                totals.loss += torch.stack([value.detach().double(), value.new_ones(()).double()])
    if totals.boundary is not None:
        scores = boundary_f1_scores(
            logits,
            target,
            logits.shape[1],
            ignore_index=segmenter.ignore_index,
            tolerance=tolerance,
        )
        _add_boundary(totals.boundary, scores)


def _batches(data: object, batch_size: int) -> tuple[Iterator[list[dict]], int | None, bool]:
    """(batches, total for progress, whether progress counts images rather than items)."""
    # A torch Dataset is taken as samples without reading one twice; other indexables (a
    # list) are samples when their first item is one.
    peek = not isinstance(data, Dataset) and _is_dataset(data) and len(data) > 0
    if isinstance(data, Dataset) or (_is_dataset(data) and (not peek or _is_sample(data[0]))):
        return _samples_in_batches(data, batch_size), len(data), True
    total = len(data) if hasattr(data, "__len__") else None
    return _loader_batches(data), total, False


def _summary(totals: _Totals, class_names: tuple[str, ...], boundary: bool) -> dict[str, object]:
    k = totals.matrix.num_classes
    result = totals.matrix.summary(class_names if len(class_names) == k else None)
    loss_sum, counted = (float(v) for v in totals.loss.cpu())
    result["loss"] = loss_sum / counted if counted > 0 else math.nan
    result["confusion_matrix"] = totals.matrix.matrix.cpu().tolist()
    result["num_images"] = totals.images
    if boundary:
        sums = totals.boundary.cpu().numpy()
        per_class = np.where(
            sums[k : 2 * k] > 0, sums[:k] / np.maximum(sums[k : 2 * k], 1), math.nan
        )
        for row, value in zip(result["classes"].values(), per_class, strict=True):
            row["boundary_f1"] = float(value)
        result["boundary_f1"] = float(sums[-2] / sums[-1]) if sums[-1] > 0 else math.nan
    return result


def evaluate(
    segmenter: nn.Module,
    data: object,
    *,
    batch_size: int = 1,
    loss: Loss | None = None,
    boundary: bool = True,
    tolerance: float = 0.0075,
    reduce: Reduce | None = None,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Predict every image of ``data`` at its own size and score the predictions.

    Args:
        segmenter: A :class:`pixelwise.inference.segmenter.Segmenter` (a bare network is
            wrapped: identity normalisation, ignore index 255). It runs in eval mode without
            grad on its own device (its mode is restored after); images are normalised by it.
        data: A data set of sample dicts, or an iterable of batch dicts or lists of them (see
            the module docstring).
        batch_size: Samples per forward pass when ``data`` is a data set.
        loss: ``loss(logits (1, K, H, W) float32, target (1, H, W), weight (1, H, W) | None)``
            -> scalar tensor, or None to skip the image; computed image by image and averaged
            over the images that have one. None: no loss.
        boundary: Also score boundary F1 (per class and the mean over images).
        tolerance: Boundary F1 match distance, as a fraction of the image diagonal.
        reduce: Sums a tensor over processes in place (e.g.
            :func:`pixelwise.engine.distributed.all_reduce_sum`); applied to the confusion
            matrix, the loss sums and the boundary sums before the summary.
        progress: ``progress(done, total)`` after each batch when the total is known: images
            of a data set, else items of ``data``.

    Returns:
        :meth:`ConfusionMatrix.summary` (pixel_accuracy, mean_accuracy, mean_iou,
        frequency_weighted_iou, mean_dice, classes: name -> iou/accuracy/dice/...), plus
        ``loss`` (NaN when no image had one), ``confusion_matrix`` (K × K nested lists, rows
        target classes), ``num_images`` and, with ``boundary``, ``boundary_f1`` (the mean over
        images of :func:`pixelwise.metrics.boundary_f1_scores`) and a per-class
        ``boundary_f1``. NaN marks an undefined value.

    Raises:
        ValueError: no sample, or the model's output has another class count than the
            Segmenter or the data set declares (one line).
    """
    segmenter = as_segmenter(segmenter)
    check_positive_int("batch_size", batch_size)
    batches, total, counts_images = _batches(data, batch_size)
    expected = tuple(
        k for k in (getattr(data, "num_classes", None), segmenter.num_classes) if k is not None
    )
    totals, done = None, 0
    with eval_mode(segmenter.network), torch.no_grad():
        for groups in batches:
            for batch in groups:
                if totals is None:
                    totals = _start(segmenter, batch, expected, boundary)
                _evaluate_batch(
                    segmenter, batch, totals, expected=expected, loss=loss, tolerance=tolerance
                )
                done += batch["image"].shape[0] if counts_images else 0
            done += 0 if counts_images else 1
            if progress is not None and total is not None:
                progress(done, total)
    if totals is None:
        raise ValueError(message("the data set", "hold at least one sample", "none"))
    if reduce is not None:
        for tensor in (totals.matrix.matrix, totals.loss, totals.boundary):
            if tensor is not None:
                reduce(tensor)
    return _summary(totals, segmenter.class_names, boundary)


def _start(
    segmenter: Segmenter, batch: Batch, expected: tuple[int, ...], boundary: bool
) -> _Totals:
    """Empty totals on the segmenter's device, K from the first logits when nothing says."""
    device = segmenter.device
    if expected:
        k = expected[0]
    else:
        network, normalize = model_parts(segmenter)
        k = whole_image_logits(network, normalize(batch["image"][:1].to(device))).shape[1]
    matrix = ConfusionMatrix(k, segmenter.ignore_index, device=device)
    loss = torch.zeros(2, dtype=torch.float64, device=device)
    sums = torch.zeros(2 * k + 2, dtype=torch.float64, device=device) if boundary else None
    return _Totals(matrix, loss, sums)


#: The name the command line and the benchmarks use.
evaluate_dataset = evaluate
