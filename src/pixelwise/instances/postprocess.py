"""From class probabilities to objects: a label image with 0 = background and 1 … N objects.

Two ways, both with hole filling and a minimum object size:

- :func:`components`: the foreground's connected components. Touching objects become one.

Holes are filled in the foreground mask before objects are made (a background region that
the foreground encloses becomes part of it), and objects under the minimum size are dropped
after.
- :func:`watershed_objects`: marker-controlled watershed (scikit-image) inside the
  foreground. The markers are the connected regions where an *interior* map (the interior
  class's probability of a background / interior / boundary network, or a predicted distance
  to the background) exceeds ``seed_threshold`` (``seeds="regions"``), or the peaks of that
  region's distance transform — pixels that are the largest within ``min_distance``
  (chessboard) of them (``seeds="peaks"``: two interiors still joined by a neck get a marker
  each), or that transform's h-maxima (``seeds="hmaxima"``: a peak is a marker where it stands
  at least ``h`` pixels above the saddle to any higher one, whatever the spacing, so a neck
  splits and the bumps of one large irregular object do not); without an interior map, the
  peaks of the foreground's own distance transform. Each marker floods the foreground
  downhill from its peak, so two touching objects with a seed each come out apart.

:func:`choose_parameters` searches a small grid of these parameters for the best mean Data
Science Bowl score (:func:`pixelwise.metrics.mean_average_precision`) on validation images;
the chosen values go into the checkpoint, never tuned on test data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from pixelwise._checks import check_choice, message
from pixelwise.metrics.objects import mean_average_precision

METHODS = ("components", "watershed")
SEEDS = ("regions", "peaks", "hmaxima")  # watershed markers from an interior map
# The grid :func:`choose_parameters` searches by default.
GRID: Mapping[str, Sequence[object]] = {
    "method": METHODS,
    "threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.5, 0.7, 0.9),
    "seeds": SEEDS,
    "h": (2.0,),
    "min_size": (0, 16, 64),
}


@dataclass(frozen=True)
class InstanceParameters:
    """How probabilities become objects (see the module docstring).

    Attributes:
        method: ``"components"`` or ``"watershed"``.
        threshold: A pixel is foreground where its foreground probability exceeds this.
        seed_threshold: Watershed markers where the interior map exceeds this.
        seeds: ``"regions"``: each connected region over ``seed_threshold`` is a marker;
            ``"peaks"``: the peaks of those regions' distance transform are (see the module
            docstring); ``"hmaxima"``: the h-maxima of that transform are.
        h: With ``seeds="hmaxima"``: how many pixels a peak of the interior regions'
            distance transform must rise above the saddle to a higher peak to be a marker.
        min_size: Objects of fewer pixels are dropped (after hole filling).
        min_distance: Where markers are distance peaks (no interior map, or ``seeds="peaks"``):
            a peak is the largest value within this many pixels (chessboard distance).
        fill_holes: Fill holes inside each object.
    """

    method: str = "watershed"
    threshold: float = 0.5
    seed_threshold: float = 0.7
    seeds: str = "regions"
    h: float = 2.0
    min_size: int = 16
    min_distance: int = 5
    fill_holes: bool = True

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("seeds", self.seeds, SEEDS)
        for name in ("threshold", "seed_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(message(name, "be a probability in [0, 1]", repr(value)))
        if isinstance(self.h, bool) or not (isinstance(self.h, int | float) and self.h > 0):
            raise ValueError(message("h", "be a number of pixels > 0", repr(self.h)))
        for name in ("min_size", "min_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(message(name, "be an integer >= 0", repr(value)))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _check_map(x: object, what: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(message(what, "be an (H, W) map", f"shape {array.shape}"))
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise TypeError(message(what, "be numeric", array.dtype))
    return array


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Objects under ``min_size`` pixels dropped, labels made 1 … N.

    Shape:
        (H, W) integer labels -> (H, W) int32.
    """
    if not labels.any():
        return np.zeros(labels.shape, np.int32)
    # One count per label (linear in the pixels; a sort, as np.unique does, is the search's
    # bottleneck on a speckled map): the kept labels numbered 1 … N in their order.
    sizes = np.bincount(labels.ravel())
    kept = sizes >= max(min_size, 1)
    kept[0] = False
    numbers = (np.cumsum(kept) * kept).astype(np.int32)
    return numbers[labels]


def _foreground(probability: np.ndarray, threshold: float, fill_holes: bool) -> np.ndarray:
    """Pixels over ``threshold``; with ``fill_holes`` every enclosed background region too
    (a hole inside an object, or a gap that touching objects enclose, becomes theirs)."""
    mask = probability > threshold
    return ndimage.binary_fill_holes(mask) if fill_holes else mask


def components(foreground: np.ndarray, *, min_size: int = 0, fill_holes: bool = True) -> np.ndarray:
    """The connected components (8-connected) of a boolean foreground, holes filled, objects
    under ``min_size`` pixels dropped.

    Shape:
        (H, W) bool -> (H, W) int32, 0 = background, 1 … N.
    """
    mask = _foreground(_check_map(foreground, "foreground").astype(float), 0.5, fill_holes)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return _drop_small(labels, min_size)


def watershed_objects(
    foreground: np.ndarray,
    interior: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    seed_threshold: float = 0.7,
    seeds: str = "regions",
    h: float = 2.0,
    min_size: int = 16,
    min_distance: int = 5,
    fill_holes: bool = True,
) -> np.ndarray:
    """Marker-controlled watershed of the foreground (see the module docstring).

    Args:
        foreground: The probability that a pixel belongs to an object (interior and boundary
            classes together), or a boolean mask.
        interior: Where the markers come from: the interior class's probability, or a
            predicted distance scaled to [0, 1]; None: the foreground's distance transform.

    Shape:
        foreground, interior: (H, W) -> (H, W) int32, 0 = background, 1 … N.
    """
    from skimage.segmentation import watershed

    probability = _check_map(foreground, "foreground").astype(np.float64)
    mask = _foreground(probability, threshold, fill_holes)
    check_choice("seeds", seeds, SEEDS)
    if interior is None:
        distance = ndimage.distance_transform_edt(mask)
        markers = _distance_peaks(distance, min_distance)
        elevation = -distance
    else:
        inside = _check_map(interior, "interior").astype(np.float64)
        if inside.shape != mask.shape:
            raise ValueError(
                message("interior", f"have the foreground's shape {mask.shape}", inside.shape)
            )
        seeded = (inside > seed_threshold) & mask
        if seeds == "peaks":
            markers = _distance_peaks(ndimage.distance_transform_edt(seeded), min_distance)
        elif seeds == "hmaxima":
            markers = _h_maxima(ndimage.distance_transform_edt(seeded), h)
        else:
            markers, _ = ndimage.label(seeded)
        elevation = -inside
    labels = watershed(elevation, markers, mask=mask)
    # Foreground regions without a marker are left unlabelled by the flooding: keep them as
    # objects of their own.
    rest, _ = ndimage.label(mask & (labels == 0), structure=np.ones((3, 3), bool))
    labels = np.where(rest > 0, rest + labels.max(), labels)
    return _drop_small(labels.astype(np.int64), min_size)


def _distance_peaks(distance: np.ndarray, min_distance: int) -> np.ndarray:
    """Markers at the peaks of a distance map: the pixels (at distance >= 1) that are the
    largest within ``min_distance`` of them, each connected group of such pixels (a flat top)
    one marker; peaks at the image border count.

    One square maximum filter over the map (separable, so linear in the pixels), not a
    pairwise spacing of candidate peaks, whose cost grows with the square of their count — a
    barely trained network's speckled map holds tens of thousands.
    """
    size = 2 * max(1, min_distance) + 1
    top = ndimage.maximum_filter(distance, size=size, mode="constant", cval=0.0)
    peak_mask = (distance >= 1) & (distance == top)
    markers, _ = ndimage.label(peak_mask, structure=np.ones((3, 3), bool))
    return markers


def _h_maxima(distance: np.ndarray, h: float) -> np.ndarray:
    """Markers at the h-maxima of a distance map: each regional maximum of the map lowered by
    ``h`` and reconstructed under itself (scikit-image's grey reconstruction by dilation) — a
    peak that rises less than ``h`` above the saddle to a higher or equal one merges with it
    into one marker; each connected group one marker.

    Shape:
        (H, W) float -> (H, W) int32 markers, 0 = none.
    """
    from skimage.morphology import local_maxima, reconstruction

    if not (distance > 0).any():
        return np.zeros(distance.shape, np.int32)
    lowered = reconstruction(distance - h, distance, method="dilation")
    tops = local_maxima(lowered, connectivity=2, allow_borders=True) & (distance > 0)
    markers, _ = ndimage.label(tops, structure=np.ones((3, 3), bool))
    return markers


def instances_from_probabilities(
    probabilities: np.ndarray,
    parameters: InstanceParameters,
    *,
    interior_class: int | None = None,
) -> np.ndarray:
    """Objects from a network's class probabilities ``(K, H, W)``: foreground = 1 − the
    background's (class 0); the interior map, for watershed, is ``interior_class``'s
    probability (a background / interior / boundary network), else none (distance peaks).

    Shape:
        (K, H, W) -> (H, W) int32.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(message("probabilities", "be (K, H, W) with K >= 2", probs.shape))
    foreground = 1.0 - probs[0]
    if parameters.method == "components":
        return components(
            foreground > parameters.threshold,
            min_size=parameters.min_size,
            fill_holes=parameters.fill_holes,
        )
    interior = None if interior_class is None else probs[interior_class]
    return watershed_objects(
        foreground,
        interior,
        threshold=parameters.threshold,
        seed_threshold=parameters.seed_threshold,
        seeds=parameters.seeds,
        h=parameters.h,
        min_size=parameters.min_size,
        min_distance=parameters.min_distance,
        fill_holes=parameters.fill_holes,
    )


def _grid(grid: Mapping[str, Sequence[object]], seeded: bool) -> Iterable[InstanceParameters]:
    """The distinct candidates of ``grid``, ``min_size`` varying fastest (candidates that
    differ only in it share their objects before the size filter)."""
    keys = [k for k in grid if k != "min_size"] + (["min_size"] if "min_size" in grid else [])
    seen = set()
    for values in itertools.product(*(grid[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        if chosen.get("method") == "components" or not seeded:
            chosen.pop("seed_threshold", None)  # no interior map: the value changes nothing
            chosen.pop("seeds", None)
        if chosen.get("seeds", InstanceParameters.seeds) != "hmaxima":
            chosen.pop("h", None)  # only h-maxima seeds use it
        parameters = InstanceParameters(**chosen)
        if parameters not in seen:
            seen.add(parameters)
            yield parameters


def choose_parameters(
    probabilities: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    interior_class: int | None = None,
    grid: Mapping[str, Sequence[object]] = GRID,
) -> tuple[InstanceParameters, float]:
    """The parameters of ``grid`` with the best mean Data Science Bowl score over the
    validation images (``probabilities`` (K, H, W) each, ``targets`` their instance label
    images); ties go to the first in the grid. Returns (parameters, score)."""
    if len(probabilities) != len(targets) or not targets:
        raise ValueError(
            message(
                "validation images",
                "come with one instance label image each",
                f"{len(probabilities)} probability maps, {len(targets)} label images",
            )
        )
    best, best_score = None, -math.inf
    shared_key, shared = None, []
    for parameters in _grid(grid, seeded=interior_class is not None):
        key = replace(parameters, min_size=0)
        if key != shared_key:  # the objects before the size filter, once per key
            shared_key = key
            shared = [
                instances_from_probabilities(p, key, interior_class=interior_class)
                for p in probabilities
            ]
        scores = [
            mean_average_precision(target, _drop_small(objects, parameters.min_size))
            for objects, target in zip(shared, targets, strict=True)
        ]
        finite = [s for s in scores if not math.isnan(s)]
        score = float(np.mean(finite)) if finite else math.nan
        if score > best_score:
            best, best_score = parameters, score
    if best is None:
        raise ValueError(message("validation images", "hold objects to score", "none"))
    return best, best_score
