"""After training on instance labels: the post-processing chosen on the validation split.

For a run whose data are instance labels (``data.layout = "instances"``), each of ``best.pt``
and ``last.pt`` predicts the validation images, :func:`pixelwise.instances.choose_parameters`
picks how its probabilities become objects (components or watershed, thresholds, minimum
size) by the Data Science Bowl score, and the choice is recorded in the checkpoint's
``instances`` field, so that ``pixelwise predict --instances`` needs no options. Never test
data: the validation split only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelwise.engine.checkpoint import load_model, record_instances
from pixelwise.inference.instances import instance_labels
from pixelwise.instances import choose_parameters

logger = logging.getLogger(__name__)


def interior_class(class_names: Sequence[str]) -> int | None:
    """The class whose probability seeds the watershed: ``"interior"`` of a background /
    interior / boundary target; None for a background / object target (distance peaks)."""
    return list(class_names).index("interior") if "interior" in class_names else None


def validation_probabilities(
    path: str | Path, dataset: Dataset
) -> tuple[list[np.ndarray], list[np.ndarray], int | None]:
    """The checkpoint's class probabilities (K, H, W) on every validation sample, the samples'
    instance labels, and the interior class."""
    segmenter = load_model(path)
    probabilities, targets = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            logits = segmenter.predict_logits(sample["image"][None])  # (1, K, H, W)
            probabilities.append(torch.softmax(logits[0].float(), dim=0).numpy())
            targets.append(instance_labels(dataset, index))  # touching objects still touching
    return probabilities, targets, interior_class(segmenter.class_names)


def record_chosen_instances(paths: Sequence[Path], dataset: Dataset) -> dict[str, dict]:
    """Choose and record the post-processing of each checkpoint in ``paths`` on ``dataset``
    (samples with ``"instances"``); returns what was recorded, by file name."""
    recorded = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        probabilities, targets, interior = validation_probabilities(path, dataset)
        chosen, score = choose_parameters(probabilities, targets, interior_class=interior)
        fields = {**chosen.to_dict(), "interior_class": interior, "score": score}
        record_instances(path, fields)
        recorded[Path(path).name] = fields
        logger.info("instances for %s: %s", Path(path).name, fields)
    return recorded
