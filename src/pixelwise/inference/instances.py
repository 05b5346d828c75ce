"""Scoring objects: a model's instances against instance labels, image by image.

Each image is predicted whole or in tiles (:func:`pixelwise.inference.tiling.predict`), its
probabilities become objects (:func:`pixelwise.inference.predict.objects_of`, with the
checkpoint's recorded post-processing and test-time augmentation,
:func:`pixelwise.inference.predict.instance_plan`), and the objects are compared with the
labels as the file holds them (touching objects still touching): the Data Science Bowl
score (mean over IoU 0.50:0.05:0.95 of TP / (TP + FP + FN), averaged over images), F1 at IoU
0.5 (pooled over images), merges and splits, and the share of touching pairs kept apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pixelwise._checks import message
from pixelwise.inference.predict import (
    instance_plan,
    instance_settings,
    objects_of,
    predict_outputs,
)
from pixelwise.metrics import mean_average_precision
from pixelwise.metrics.objects import match_objects, touching_pairs


def instance_labels(dataset: Dataset, index: int) -> np.ndarray:
    """Sample ``index``'s instance labels as read from its file (a data set's
    ``raw_instances``), else its sample's ``"instances"``."""
    raw = getattr(dataset, "raw_instances", None)
    if raw is not None:
        return np.asarray(raw(index))
    sample = dataset[index]
    if "instances" not in sample:
        raise ValueError(
            message("evaluation data", "hold instance labels", "samples without 'instances'")
        )
    return np.asarray(sample["instances"])


def evaluate_instances(
    model: nn.Module,
    dataset: Dataset,
    settings: Mapping[str, object] | None = None,
    *,
    tile: int = 512,
    tta: bool | str | Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Object scores of ``model`` on ``dataset`` (see the module docstring).

    Args:
        model: A Segmenter (its checkpoint's ``instances`` field is used) or a network.
        settings: The post-processing; default :func:`instance_settings` of ``model``.
        tta: Test-time augmentation; None: what ``settings`` records (:func:`instance_plan`).

    Returns:
        ``dsb_score``, ``f1``, ``true_positives``, ``false_positives``, ``false_negatives``,
        ``merges``, ``splits``, ``touching_pairs``, ``touching_separated``,
        ``touching_merged``, ``touching_kept_apart`` (separated / detected pairs),
        ``num_images``, ``objects``, ``predicted_objects``, ``settings``, ``per_image``.
    """
    settings = dict(settings) if settings is not None else instance_settings(model)
    settings, tta = instance_plan(settings, tta)  # settings["tta"]: what is used
    totals = dict.fromkeys(
        ("tp", "fp", "fn", "merges", "splits", "pairs", "separated", "merged"), 0
    )
    per_image, scores = [], []
    objects_total = predicted_total = 0
    for index in range(len(dataset)):
        image = dataset[index]["image"]
        with torch.no_grad():
            logits, distance = predict_outputs(model, image, tile=tile, tta=tta)  # (K, H, W)
        predicted = objects_of(logits, settings, distance)
        truth = instance_labels(dataset, index)
        score = mean_average_precision(truth, predicted)
        match = match_objects(truth, predicted, iou_threshold=0.5)
        pairs = touching_pairs(truth, predicted)
        for key, value in (
            ("tp", match.true_positives),
            ("fp", match.false_positives),
            ("fn", match.false_negatives),
            ("merges", match.merges),
            ("splits", match.splits),
            ("pairs", pairs.pairs),
            ("separated", pairs.separated),
            ("merged", pairs.merged),
        ):
            totals[key] += value
        objects_total += int(len(np.unique(truth)) - (truth == 0).any())
        predicted_total += int(predicted.max())
        if not math.isnan(score):
            scores.append(score)
        name = getattr(dataset, "sample_id", lambda i: str(i))(index)
        per_image.append({"name": name, "dsb_score": score, "f1": match.f1})
        if progress is not None:
            progress(index + 1, len(dataset))
    detected = totals["separated"] + totals["merged"]
    f1_denominator = 2 * totals["tp"] + totals["fp"] + totals["fn"]
    return {
        "dsb_score": float(np.mean(scores)) if scores else math.nan,
        "f1": 2 * totals["tp"] / f1_denominator if f1_denominator else math.nan,
        "true_positives": totals["tp"],
        "false_positives": totals["fp"],
        "false_negatives": totals["fn"],
        "merges": totals["merges"],
        "splits": totals["splits"],
        "touching_pairs": totals["pairs"],
        "touching_separated": totals["separated"],
        "touching_merged": totals["merged"],
        "touching_kept_apart": totals["separated"] / detected if detected else math.nan,
        "num_images": len(dataset),
        "objects": objects_total,
        "predicted_objects": predicted_total,
        "settings": settings,
        "per_image": per_image,
    }
