"""Segmentation metrics: confusion matrix (FCN), boundary F1 (SegNet), ISBI 2012 scores, objects.

- :class:`ConfusionMatrix`: streaming counts; pixel and mean accuracy, IoU, fwIoU, Dice.
- :func:`boundary_f1`: the BF contour score.
- :func:`isbi_scores`, :func:`maximal_isbi_scores`, :func:`membrane_to_segments`: Rand and
  information-theoretic scores of label images, as in the ISBI 2012 challenge.
- :func:`match_objects`, :func:`mean_average_precision`: touching instances, merges, splits;
  :func:`touching_pairs`: how many touching pairs a prediction kept apart.
"""

from pixelwise.metrics.boundary import boundary_f1, boundary_f1_scores, class_boundary
from pixelwise.metrics.confusion import SUMMARY_KEYS, ConfusionMatrix
from pixelwise.metrics.instances import (
    ISBI_THRESHOLDS,
    IsbiScores,
    ThresholdSearch,
    isbi_scores,
    maximal_isbi_scores,
    membrane_to_segments,
    pixel_error,
)
from pixelwise.metrics.objects import (
    DSB_THRESHOLDS,
    ObjectMatch,
    Overlaps,
    TouchingPairs,
    match_objects,
    mean_average_precision,
    object_overlaps,
    touching_label_pairs,
    touching_pairs,
)

__all__ = [
    "DSB_THRESHOLDS",
    "ISBI_THRESHOLDS",
    "SUMMARY_KEYS",
    "ConfusionMatrix",
    "IsbiScores",
    "ObjectMatch",
    "Overlaps",
    "ThresholdSearch",
    "TouchingPairs",
    "boundary_f1",
    "boundary_f1_scores",
    "class_boundary",
    "isbi_scores",
    "match_objects",
    "maximal_isbi_scores",
    "mean_average_precision",
    "membrane_to_segments",
    "object_overlaps",
    "pixel_error",
    "touching_label_pairs",
    "touching_pairs",
]
