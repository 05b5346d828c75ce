"""After training on instance labels: the post-processing chosen on the validation split.

For a run whose data are instance labels (``data.layout = "instances"``), each of ``best.pt``
and ``last.pt`` (once, where both hold the same weights) predicts the validation images,
:func:`pixelwise.instances.choose_parameters` picks how its probabilities become objects
(components or watershed, thresholds, minimum size) by the Data Science Bowl score, and the
choice is recorded in the checkpoint's ``instances`` field, so that ``pixelwise predict
--instances`` needs no options. Never test data: the validation split only.

Test-time augmentation is part of the choice: where the run trained with flips or 90°
rotations, the validation images are predicted again averaged over those symmetries
(:func:`test_time_transforms`), the parameters are chosen again, and the averaged prediction
is recorded (``"tta"``: the transform names) only when it raises the validation score by at
least :data:`TTA_GAIN`; it costs one prediction per transform. A network with a distance head
(``data.distance_target``) is searched twice, seeding from its predicted map and from the
interior class (:func:`seed_maps`), and the better is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelwise.engine.checkpoint import load_checkpoint, load_model, record_instances
from pixelwise.inference.instances import instance_labels
from pixelwise.inference.predict import object_maps, predict_outputs
from pixelwise.inference.segmenter import Segmenter
from pixelwise.inference.tta import DIHEDRAL
from pixelwise.instances import GRID, choose_parameters
from pixelwise.nn.distance import has_distance_head

logger = logging.getLogger(__name__)

#: The gain in validation score (Data Science Bowl score) that test-time augmentation must
#: bring to be recorded: it multiplies the cost of every prediction.
TTA_GAIN = 0.005


def test_time_transforms(data: Mapping[str, object]) -> tuple[str, ...]:
    """The symmetries a run trained with (its ``[data]`` table's ``hflip``, ``vflip`` and
    ``rot90``), as test-time transforms in :data:`DIHEDRAL` order: all eight with rotations and
    a flip; the flips (and with both, the half turn); the quarter turns; () with none."""
    hflip, vflip, rot90 = (bool(data.get(key, False)) for key in ("hflip", "vflip", "rot90"))
    if rot90 and (hflip or vflip):
        return DIHEDRAL
    names = {"identity"}
    if rot90:
        names |= {"rot90", "rot180", "rot270"}
    if hflip:
        names.add("hflip")
    if vflip:
        names.add("vflip")
    if hflip and vflip:
        names.add("rot180")
    return tuple(name for name in DIHEDRAL if name in names) if len(names) > 1 else ()


def interior_class(class_names: Sequence[str]) -> int | None:
    """The class whose probability seeds the watershed: ``"core"`` of a core target,
    ``"interior"`` of a background / interior / boundary one; None for a background / object
    target (distance peaks)."""
    names = list(class_names)
    for name in ("core", "interior"):
        if name in names:
            return names.index(name)
    return None


def validation_probabilities(
    path: str | Path | Segmenter, dataset: Dataset, tta: Sequence[str] = ()
) -> tuple[list[np.ndarray], list[np.ndarray], int | None]:
    """The checkpoint's class probabilities (K, H, W) on every validation sample, with a
    distance head's predicted map after them ((K + 1, H, W)), predicted as ``pixelwise
    predict`` and ``evaluate`` predict (whole, or in tiles of 512, averaged over the
    test-time transforms ``tta`` if any), the samples' instance labels, and the index of the
    map that seeds the watershed first (:func:`seed_maps`: a distance head's map, else the
    :func:`interior_class`)."""
    segmenter = path if isinstance(path, Segmenter) else inference_model(path)
    probabilities, targets = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            image = dataset[index]["image"]
            logits, distance = predict_outputs(segmenter, image, tile=512, tta=tuple(tta))
            probabilities.append(object_maps(logits, distance))
            targets.append(instance_labels(dataset, index))  # touching objects still touching
    seeds = seed_maps(segmenter.class_names, has_distance_head(segmenter))
    return probabilities, targets, seeds[0]


def inference_model(path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """The checkpoint's model as prediction runs it (batch norms folded, once)."""
    from pixelwise.inference.optimize import optimize_for_inference

    segmenter = load_model(path, device=device)
    return segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))


def choose_instances(
    path: str | Path, dataset: Dataset, device: str | torch.device = "cpu"
) -> dict[str, object]:
    """The post-processing of the checkpoint ``path`` chosen on ``dataset``, with or without
    test-time augmentation (see the module docstring): the fields to record. With the
    augmentation chosen, ``"one_pass"`` keeps the parameters and score of the one-pass
    search, for a prediction that turns the augmentation off."""
    segmenter = inference_model(path, device)
    seeds = seed_maps(segmenter.class_names, has_distance_head(segmenter))
    probabilities, targets, _ = validation_probabilities(segmenter, dataset)
    chosen = _search(probabilities, targets, seeds)
    fields = {**chosen, "tta": False}
    transforms = test_time_transforms(segmenter.checkpoint.config.get("data", {}))
    if transforms:
        averaged, _, _ = validation_probabilities(segmenter, dataset, transforms)
        chosen_tta = _search(averaged, targets, seeds)
        if chosen_tta["score"] >= chosen["score"] + TTA_GAIN:
            fields = {**chosen_tta, "tta": list(transforms), "one_pass": chosen}
    return fields


def seed_maps(class_names: Sequence[str], distance: bool = False) -> tuple[int | None, ...]:
    """The maps the search may seed the watershed from: the :func:`interior_class`, and
    first, for a network with a distance head, its predicted map (index K)."""
    own = interior_class(class_names)
    return (len(class_names), own) if distance else (own,)


def _search(
    probabilities: Sequence[np.ndarray], targets: Sequence[np.ndarray], seeds: Sequence[int | None]
) -> dict[str, object]:
    """:func:`~pixelwise.instances.choose_parameters` with each seed map of ``seeds`` (the
    components, which no seed map changes, searched with the first only); the best (the
    first on a tie) as fields to record: the parameters, ``interior_class`` and ``score``."""
    best: dict[str, object] | None = None
    for number, seed in enumerate(seeds):
        grid = GRID if number == 0 else {**GRID, "method": ("watershed",)}
        chosen, score = choose_parameters(probabilities, targets, interior_class=seed, grid=grid)
        if best is None or score > best["score"]:
            best = {**chosen.to_dict(), "interior_class": seed, "score": score}
    assert best is not None  # seeds is never empty
    return best


def weights_digest(path: str | Path) -> str:
    """A digest of the checkpoint's weights (names, shapes, dtypes and values)."""
    import hashlib

    digest = hashlib.sha256()
    state = load_checkpoint(path).state_dict  # the weights as saved: no network built
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def record_chosen_instances(
    paths: Sequence[Path], dataset: Dataset, device: str | torch.device = "cpu"
) -> dict[str, dict]:
    """Choose and record the post-processing of each checkpoint in ``paths`` on ``dataset``
    (samples with ``"instances"``), predicting on ``device``; returns what was recorded, by
    file name."""
    recorded, by_weights = {}, {}
    for path in paths:
        if not Path(path).is_file():
            continue
        # best.pt and last.pt often hold the same weights (the best epoch was the last):
        # the same choice, searched once.
        digest = weights_digest(path)
        if digest not in by_weights:
            by_weights[digest] = choose_instances(path, dataset, device)
        fields = by_weights[digest]
        record_instances(path, fields)
        recorded[Path(path).name] = fields
        logger.info("instances for %s: %s", Path(path).name, fields)
    return recorded
