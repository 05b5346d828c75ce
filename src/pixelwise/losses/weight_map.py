"""The U-Net weight map w(x) that separates touching objects.

Eq. 2 of Ronneberger et al. 2015 (https://arxiv.org/abs/1505.04597):

    w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))

computed from an instance label image (0 = background, 1..M = one object each; ids need not be
contiguous) or from a semantic mask whose connected components become the objects.

Definitions used here:
    distance to object i, ``d_i(x)``: the Euclidean distance from the centre of pixel x to the
        centre of the nearest pixel of object i, i.e. ``distance_transform_edt(labels != i)``;
        0 on object i itself, >= 1 on every other pixel. Only pixels inside the image count:
        an object cut by the image edge is the part that is visible.
    ``d1(x) <= d2(x)``: the two smallest ``d_i(x)`` over all objects. With fewer than two
        objects ``d2`` (and with none ``d1``) is infinite and the exponential term is 0, so
        ``w = w_c``.
    border term: by default applied on background pixels only (``border="background"``), as in
        the paper, where it gives the thin background gaps between touching cells a large
        weight; ``border="everywhere"`` also applies it on object pixels, where ``d1 = 0`` and
        ``d2`` is the distance to the nearest other object.
    ``w_c``: class balancing, per image, over the classes of the label image (background and
        foreground for instances; the mask values for a semantic mask):
        ``"balanced"``: ``w_c(x) = P / (C · n_{c(x)})`` with P the pixel count, n_c the pixels
        of class c and C the number of classes present, so every class carries the same total
        weight and the mean of w_c over the image is 1 (the paper leaves the normalisation
        open); ``"none"``: 1 everywhere; or a sequence of weights indexed by class value.
    Defaults ``w0 = 10`` and ``σ = 5`` pixels, as in the paper.

Speed: an object only matters where the term exceeds a tolerance ``tol``.
``w0 · exp(−(d1 + d2)² / 2σ²) >= tol`` needs ``d1 + d2 <= R = σ · sqrt(2 ln(w0 / tol))`` and
therefore ``d2 <= R``: both objects lie within distance R. Each object's distance transform is
thus computed only inside its bounding box grown by ``ceil(R)`` pixels, and the two smallest
distances are kept per pixel. Wherever the term is >= tol the result is exact; elsewhere both
the exact and the computed terms lie in ``[0, tol)``. The default ``tol = 1e-6`` keeps the
map within 1e-6 of the full per-object computation (checked to 1e-5 in the tests and the
benchmark); ``tol = 0`` computes every transform over the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pixelwise._checks import check_choice, check_label_image, message
from pixelwise.metrics._labels import compact_labels

BORDERS = ("background", "everywhere")
BALANCES = ("balanced", "none")
TOLERANCE = 1e-6


def _check_label_image(labels: object, what: str) -> np.ndarray:
    """``labels`` as non-negative int64 labels (H, W); a boolean mask reads as 0 and 1."""
    return check_label_image(labels, what, allow_bool=True, nonnegative=True)


def _check_params(w0: float, sigma: float, tol: float, border: str) -> None:
    """Check the scalar parameters of the weight map."""
    for name, value, low in (("w0", w0, 0.0), ("tol", tol, 0.0)):
        if not math.isfinite(value) or value < low:
            raise ValueError(message(name, "be a finite number >= 0", repr(value)))
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(message("sigma", "be a finite number > 0 (pixels)", repr(sigma)))
    check_choice("border", border, BORDERS)


def influence_radius(w0: float = 10.0, sigma: float = 5.0, tol: float = TOLERANCE) -> float:
    """Return R with ``w0 · exp(−s² / 2σ²) < tol`` for every ``s = d1 + d2 > R``.

    ``R = σ · sqrt(2 ln(w0 / tol))``; infinite for ``tol = 0``, 0 when ``w0 <= tol``.
    The defaults give R ≈ 28.4 pixels.
    """
    if tol <= 0:
        return math.inf
    if w0 <= tol:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def _compact_ids(labels: np.ndarray) -> np.ndarray:
    """Renumber object ids to 1..M (0 stays background) when sparse enough to bloat ``find_objects``."""
    if labels.size == 0 or int(labels.max()) <= labels.size:
        return labels
    ids, values = compact_labels(labels)  # ids index the sorted values
    return ids if values[0] == 0 else ids + 1  # (H, W)


def border_distances(
    instances: np.ndarray, *, max_distance: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1 <= d2`` from each pixel to its nearest and second-nearest object.

    Each object's distance transform runs inside its bounding box grown by
    ``ceil(max_distance)`` pixels (the whole image when infinite), so only objects within
    ``max_distance`` of a pixel are sure to be seen there: ``d1`` (``d2``) is exact wherever
    the true nearest (second-nearest) distance is <= ``max_distance`` and is larger than
    ``max_distance``, possibly infinite, elsewhere. Missing objects (fewer than two, or none)
    give infinite distances.

    Args:
        instances: labels, 0 = background, every other value one object.
        max_distance: largest distance that must be exact.

    Shape:
        instances: (H, W); d1, d2: (H, W) float64
    """
    labels = _compact_ids(_check_label_image(instances, "instance labels"))
    if math.isnan(max_distance) or max_distance < 0:
        raise ValueError(message("max_distance", "be >= 0", repr(max_distance)))
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    grow = sum(labels.shape) if math.isinf(max_distance) else math.ceil(max_distance)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - grow, 0), min(s.stop + grow, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        dist = ndimage.distance_transform_edt(labels[grown] != label)  # (h, w) of the box
        near, second = d1[grown], d2[grown]  # views into d1, d2
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def class_balance_map(classes: np.ndarray, class_weights: str | Sequence[float]) -> np.ndarray:
    """The class-balancing term ``w_c(x)`` of the U-Net weight map.

    Args:
        classes: class value per pixel (for instances: 0 background, 1 foreground).
        class_weights: ``"balanced"`` (``P / (C · n_c)``: equal total weight per present class,
            image mean 1), ``"none"`` (all ones), or weights indexed by class value.

    Shape:
        classes: (H, W); output: (H, W) float64
    """
    classes = _check_label_image(classes, "classes")
    if isinstance(class_weights, str):
        if check_choice("class_weights", class_weights, BALANCES) == "none":
            return np.ones(classes.shape)
        counts = np.bincount(classes.ravel()).astype(np.float64)  # (max + 1,)
        present = counts > 0
        table = np.divide(
            classes.size, present.sum() * counts, out=np.zeros_like(counts), where=present
        )
        return table[classes]
    table = np.asarray(class_weights, dtype=np.float64)
    top = int(classes.max()) if classes.size else 0
    if table.ndim != 1 or len(table) <= top or not np.all(np.isfinite(table) & (table >= 0)):
        raise ValueError(
            message(
                "class_weights",
                f"be 'balanced', 'none' or {top + 1}+ finite weights >= 0 indexed by class",
                repr(class_weights),
            )
        )
    return table[classes]


def _weight_map(
    objects: np.ndarray,
    classes: np.ndarray,
    w0: float,
    sigma: float,
    class_weights: str | Sequence[float],
    border: str,
    tol: float,
) -> np.ndarray:
    """``w_c + w0 · exp(−(d1 + d2)² / 2σ²)`` as float32; ``objects`` is checked already."""
    _check_params(w0, sigma, tol, border)
    weights = class_balance_map(classes, class_weights)  # (H, W)
    if w0 > 0:
        d1, d2 = border_distances(objects, max_distance=influence_radius(w0, sigma, tol))
        # Where d2 is infinite the term is exactly 0; skipping those pixels saves most of the
        # exponentials on sparse images.
        near = np.isfinite(d2)
        if border == "background":
            near &= objects == 0
        total = d1[near] + d2[near]  # (pixels near two objects,)
        weights[near] += w0 * np.exp(-(total * total) / (2.0 * sigma**2))
    return weights.astype(np.float32)


def unet_weight_map(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] = "balanced",
    border: str = "background",
    tol: float = TOLERANCE,
) -> np.ndarray:
    """The U-Net weight map from an instance label image (see the module docstring).

    Args:
        instances: 0 = background, every other value one object (any integer dtype).
        w0: height of the border term.
        sigma: width of the border term, in pixels.
        class_weights: ``"balanced"``, ``"none"``, or ``(w_background, w_foreground)``.
        border: ``"background"`` (the paper) or ``"everywhere"``.
        tol: largest allowed deviation of the border term from the full computation.

    Returns:
        The weight map, float32, ready for ``cross_entropy(..., pixel_weights=...)`` once
        stacked into a batch and wrapped with ``torch.from_numpy``.

    Shape:
        instances: (H, W); output: (H, W)
    """
    labels = _check_label_image(instances, "instance labels")
    classes = (labels > 0).astype(np.uint8)  # (H, W)
    return _weight_map(labels, classes, w0, sigma, class_weights, border, tol)


def instances_from_semantic(
    mask: np.ndarray, *, background: int = 0, connectivity: int = 1
) -> tuple[np.ndarray, int]:
    """Label the connected components of each non-background class as separate objects.

    Components are found per class value, so touching regions of different classes stay
    separate objects. ``connectivity=1`` joins pixels sharing an edge (4-neighbourhood; objects
    touching only at a corner stay apart), ``connectivity=2`` also joins diagonal neighbours
    (8-neighbourhood), as in ``scipy.ndimage.generate_binary_structure(2, connectivity)``.

    Returns:
        Instance labels (int32, 0 = background, 1..M) and the object count M.

    Shape:
        mask: (H, W); output: (H, W)
    """
    mask = _check_label_image(mask, "semantic mask")
    if connectivity not in (1, 2):
        raise ValueError(
            message("connectivity", "be 1 (4-neighbour) or 2 (8-neighbour)", connectivity)
        )
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels = np.zeros(mask.shape, np.int32)
    count = 0
    for value in np.unique(mask):
        if value == background:
            continue
        components, found = ndimage.label(mask == value, structure=structure)
        inside = components > 0
        labels[inside] = components[inside] + count
        count += found
    return labels, count


def weight_map_from_semantic(
    mask: np.ndarray,
    *,
    background: int = 0,
    connectivity: int = 1,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] = "balanced",
    border: str = "background",
    tol: float = TOLERANCE,
) -> np.ndarray:
    """The U-Net weight map of a semantic mask, its connected components taken as objects.

    Objects come from :func:`instances_from_semantic`; ``w_c`` balances the mask's classes
    (a sequence ``class_weights`` is indexed by mask value); the border term is as in
    :func:`unet_weight_map`, "background" meaning pixels equal to ``background``.

    Shape:
        mask: (H, W); output: (H, W) float32
    """
    mask = _check_label_image(mask, "semantic mask")
    objects, _ = instances_from_semantic(mask, background=background, connectivity=connectivity)
    return _weight_map(objects, mask, w0, sigma, class_weights, border, tol)
