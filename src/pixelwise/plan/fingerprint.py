"""What a data folder holds, read once: the facts a training plan is chosen from.

:func:`detect_layout` recognises the folder shapes pixelwise reads (``images/`` + ``masks/``,
``images/`` + ``instances/``, the CamVid ``train/`` + ``trainannot/`` pairs, a TIFF stack);
:func:`propose_encoding` turns the mask values found into a mask encoding, or says why it
cannot; :func:`fingerprint` reads the folder into a :class:`Fingerprint` (image count, sizes,
channels, intensity statistics, class frequencies, whether the scenes have an up direction,
and for instance labels the object sizes and how many touch).

Nothing here keys on a data set's name or its file names: only on the folder shape the
layouts document and on the pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pixelwise._checks import message
from pixelwise.data._io import read_labels, read_pixels
from pixelwise.data.datasets import CAMVID_ENCODING, list_images, pair_by_stem
from pixelwise.data.encoding import MaskEncoding

# At most this many masks (evenly spaced) are read for values and frequencies, and this many
# images for intensity statistics: a fingerprint takes seconds, also of large folders.
MAX_MASKS = 400
MAX_IMAGES = 64
# More distinct grey values than this is not a class encoding (JPEG noise, a probability map,
# instance labels); more colours than this is not a palette.
MAX_CLASSES = 64
# Grey values that are not 0…k (with 255 as void) are classes only when this few: a handful of
# grey levels (0, 128, 255) is an encoding, dozens of scattered values are not.
MAX_GREY_LEVELS = 16
# Class histograms of the top and bottom thirds of the masks further apart than this (total
# variation distance), or mean intensities further apart than this many standard deviations:
# the scenes have an up direction (sky above road), so vertical flips and rotations would
# show the network scenes that never occur.
UPRIGHT_TVD = 0.15
UPRIGHT_INTENSITY = 0.25


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the samples of a data folder are: the ``[data]`` keys that read it."""

    layout: str  # "folders" | "instances" | "camvid" | "tiff"
    images: str
    masks: str

    def table(self, root: str | Path) -> dict[str, object]:
        """The ``[data]`` keys of this layout under ``root``."""
        return {
            "layout": self.layout,
            "root": str(root),
            "images": self.images,
            "masks": self.masks,
        }


def detect_layout(root: str | Path) -> Layout:
    """The layout of a data folder, from its shape alone.

    ``images/`` with ``masks/`` is ``folders``; ``images/`` with ``instances/`` is
    ``instances``; ``train/`` with ``trainannot/`` (and ``val/`` with ``valannot/``) is
    ``camvid``; exactly two ``.tif`` stacks, one of them named ``*label*``, are ``tiff``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: none of the shapes, in one line listing what the folder holds.
    """
    root = Path(root)
    if not root.is_dir():
        actual = "a file" if root.exists() else "a missing folder"
        raise FileNotFoundError(message(f"data folder {root}", "be a folder", actual))
    names = {p.name for p in root.iterdir()}
    folders = {n for n in names if (root / n).is_dir()}
    if {"images", "masks"} <= folders:
        return Layout("folders", "images", "masks")
    if {"images", "instances"} <= folders:
        return Layout("instances", "images", "instances")
    if {"train", "trainannot", "val", "valannot"} <= folders:
        return Layout("camvid", "train", "val")
    stacks = sorted(n for n in names if n.lower().endswith((".tif", ".tiff")))
    labels = [n for n in stacks if "label" in n.lower()]
    if len(stacks) == 2 and len(labels) == 1:
        return Layout("tiff", next(n for n in stacks if n not in labels), labels[0])
    shown = sorted(names)[:8]
    raise ValueError(
        message(
            f"data folder {root}",
            "hold images/ and masks/ (or instances/), train/ and trainannot/ with val/ and "
            "valannot/, or a TIFF stack and its *label* stack",
            f"{len(names)} entries {shown}" if names else "an empty folder",
            "arrange the files so, or write a run config",
        )
    )


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposed mask encoding, or None with the reason it cannot be proposed."""

    encoding: MaskEncoding | None
    reason: str


def _spelled(values: Sequence[int]) -> str:
    """``[0, 1, ..., 11, ...] (n values)``; past :data:`MAX_CLASSES` (where reading stops)
    the count is "more than" it."""
    shown = ", ".join(str(v) for v in values[:12])
    count = f"more than {MAX_CLASSES}" if len(values) > MAX_CLASSES else str(len(values))
    return f"[{shown}{', ...' if len(values) > 12 else ''}] ({count} values)"


def propose_encoding(
    values: Sequence[int] = (), colors: Sequence[tuple[int, int, int]] = ()
) -> Proposal:
    """The encoding that the mask values found imply.

    Grey masks: exactly {0, 255} is the binary value map ``{0: 0, 255: 1}``; values 0…k are
    class indices (K = k + 1, k < :data:`MAX_CLASSES`); 0…k and 255 are class indices with 255
    ignored (the usual "void" value); up to :data:`MAX_GREY_LEVELS` other values are classes
    in increasing order of value. RGB masks
    with a few colours are a palette, in increasing order of colour. Anything else (too many
    values or colours, both grey and colour masks) is ambiguous: no proposal, and a reason
    that shows the values found.

    Args:
        values: Distinct values of the single-channel masks, sorted.
        colors: Distinct colours of the RGB masks, sorted.
    """
    values = sorted(int(v) for v in values)
    colors = sorted(tuple(int(c) for c in color) for color in colors)
    ask = "declare data.encoding in a run config"
    if values and colors:
        return Proposal(None, f"masks are both grey and colour; {ask}")
    if colors:
        if len(colors) > MAX_CLASSES:
            return Proposal(None, f"{len(colors)} mask colours are too many for classes; {ask}")
        found = ", ".join(str(list(c)) for c in colors[:6]) + (" ..." if len(colors) > 6 else "")
        return Proposal(MaskEncoding.palette(colors), f"{len(colors)} mask colours: {found}")
    if not values:
        return Proposal(None, f"no masks were read; {ask}")
    if len(values) > MAX_CLASSES:
        return Proposal(None, f"mask values {_spelled(values)} are too many for classes; {ask}")
    if values == [0, 255]:
        return Proposal(MaskEncoding.values({0: 0, 255: 1}), "mask values {0, 255}: binary")
    classes = [v for v in values if v != 255]
    if classes and classes[-1] < MAX_CLASSES:
        k = classes[-1] + 1
        if 255 in values:
            return Proposal(
                MaskEncoding.index(k, ignore_values=(255,)),
                f"mask values 0..{k - 1} are classes and 255 is void (ignored)",
            )
        return Proposal(MaskEncoding.index(k), f"mask values 0..{k - 1} are class indices")
    if len(values) > MAX_GREY_LEVELS:
        return Proposal(
            None, f"mask values {_spelled(values)} are neither 0..k nor a few grey levels; {ask}"
        )
    table = {v: i for i, v in enumerate(values)}
    return Proposal(
        MaskEncoding.values(table), f"mask values {_spelled(values)} are classes in this order"
    )


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The facts of a data folder a plan is chosen from.

    Attributes:
        root, layout: The folder and how it is laid out.
        num_images: Samples (training and validation together, except ``camvid``: training).
        num_val: The layout's own validation samples (``camvid``), else 0.
        sizes: Image sizes (H, W) of the images read, sorted.
        channels: Image channels.
        mean, std: Intensity statistics per channel, in [0, 1].
        proposal: The mask encoding found (instances: fixed, two classes).
        class_fractions: Each class's share of the labelled pixels (empty when no encoding).
        upright: The scenes have an up direction (tests in the module docstring).
        objects_per_image, object_area, touching: Instance layouts: median objects per image,
            median object area (pixels), the share of objects touching another; else 0.
        manifest: A ``manifest.csv`` under the root with a ``group`` column (the split is
            then stratified by group), or None.
    """

    root: str
    layout: Layout
    num_images: int
    num_val: int
    sizes: tuple[tuple[int, int], ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    proposal: Proposal
    class_fractions: tuple[float, ...] = ()
    upright: bool = False
    objects_per_image: float = 0.0
    object_area: float = 0.0
    touching: float = 0.0
    manifest: str | None = None

    @property
    def median_size(self) -> tuple[int, int]:
        """The median image height and width."""
        heights, widths = zip(*self.sizes, strict=True)
        return int(np.median(heights)), int(np.median(widths))

    @property
    def num_classes(self) -> int:
        """K, of the proposed encoding (0 when there is none)."""
        encoding = self.proposal.encoding
        return 0 if encoding is None else encoding.num_classes


def _spaced(items: Sequence, limit: int) -> list:
    """At most ``limit`` items, evenly spaced, first and last included."""
    if len(items) <= limit:
        return list(items)
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, limit)]


def _pairs(root: Path, layout: Layout) -> tuple[list[tuple[Path, Path]], int]:
    """(image, label) file pairs to read, and the layout's own validation count."""
    if layout.layout == "camvid":
        val = len(list_images(root / "val", "image folder"))
        return pair_by_stem(root / "train", root / "trainannot"), val
    return pair_by_stem(root / layout.images, root / layout.masks), 0


def _mask_values(paths: Sequence[Path]) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Distinct grey values and RGB colours over the masks (palette images: their indices)."""
    values: set[int] = set()
    colors: set[tuple[int, int, int]] = set()
    for path in paths:
        pixels, _ = read_pixels(path, "mask", lossless=True, expand_palette=False)
        if pixels.ndim == 3 and not (pixels[..., :1] == pixels[..., :3]).all():
            codes = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
            colors.update(tuple(int(c) for c in row) for row in codes)
        else:
            grey = pixels if pixels.ndim == 2 else pixels[..., 0]
            values.update(int(v) for v in np.unique(grey))
        if len(values) > MAX_CLASSES or len(colors) > MAX_CLASSES:
            break  # the answer is known: too many
    return sorted(values), sorted(colors)


def _thirds(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    third = max(array.shape[0] // 3, 1)
    return array[:third], array[-third:]


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance of two histograms."""
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def _upright(classes: Sequence[np.ndarray], images: Sequence[np.ndarray], k: int) -> bool:
    """Whether top and bottom of the scenes differ (see the module constants)."""
    top, bottom = np.zeros(max(k, 1)), np.zeros(max(k, 1))
    for mask in classes:
        upper, lower = _thirds(mask)
        top += np.bincount(upper[upper < k].ravel(), minlength=k)[:k]
        bottom += np.bincount(lower[lower < k].ravel(), minlength=k)[:k]
    if top.sum() and bottom.sum() and _tvd(top, bottom) > UPRIGHT_TVD:
        return True
    grey = [image.mean(axis=-1) for image in images]
    if not grey:
        return False
    upper = np.mean([_thirds(g)[0].mean() for g in grey])
    lower = np.mean([_thirds(g)[1].mean() for g in grey])
    spread = float(np.mean([g.std() for g in grey])) or 1.0
    return abs(upper - lower) / spread > UPRIGHT_INTENSITY


def _touching(label: np.ndarray) -> set[int]:
    """The objects of a label image that share an edge with another object."""
    ids: set[int] = set()
    for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
        meet = (a > 0) & (b > 0) & (a != b)
        ids.update(np.unique(a[meet]).tolist() + np.unique(b[meet]).tolist())
    return ids


def _objects(labels: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """Median objects per image, median object area, share of objects touching another."""
    counts, areas, touching = [], [], 0
    for label in labels:
        _, sizes = np.unique(label[label > 0], return_counts=True)
        counts.append(len(sizes))
        areas += sizes.tolist()
        touching += len(_touching(label))
    median_count = float(np.median(counts)) if counts else 0.0
    median_area = float(np.median(areas)) if areas else 0.0
    return median_count, median_area, touching / len(areas) if areas else 0.0


def _statistics(images: Sequence[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stacked = np.concatenate([i.reshape(-1, i.shape[-1]) for i in images])
    return tuple(float(m) for m in stacked.mean(0)), tuple(float(s) for s in stacked.std(0))


def _read_images(paths: Sequence[Path]) -> list[np.ndarray]:
    from pixelwise.data._io import read_image

    return [read_image(path) for path in paths]  # (H, W, C) float in [0, 1]


def fingerprint(root: str | Path, encoding: MaskEncoding | Mapping | None = None) -> Fingerprint:
    """Read a data folder into a :class:`Fingerprint` (a few seconds: at most
    :data:`MAX_MASKS` masks and :data:`MAX_IMAGES` images, evenly spaced).

    Args:
        root: The data folder (any layout :func:`detect_layout` knows).
        encoding: The mask encoding, when the user declared one; else it is proposed.
    """
    root = Path(root).absolute()  # run files name it from their own folder
    layout = detect_layout(root)
    if layout.layout == "tiff":
        return _tiff_fingerprint(root, layout, encoding)
    pairs, num_val = _pairs(root, layout)
    images = _read_images([image for image, _ in _spaced(pairs, MAX_IMAGES)])
    masks = [mask for _, mask in _spaced(pairs, MAX_MASKS)]
    extra: dict[str, object] = {}
    if layout.layout == "instances":
        labels = [read_labels(path) for path in masks]
        keys = ("objects_per_image", "object_area", "touching")
        extra = dict(zip(keys, _objects(labels), strict=True))
        proposal = Proposal(MaskEncoding.index(2), "instance labels: background and objects")
        classes = [(label > 0).astype(np.int64) for label in labels]
    else:
        proposal = _proposal(layout, masks, encoding)
        classes = _decoded(masks, proposal.encoding)
    return _assemble(root, layout, (len(pairs), num_val), images, classes, proposal, extra)


def _assemble(
    root: Path,
    layout: Layout,
    counts: tuple[int, int],
    images: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    proposal: Proposal,
    extra: Mapping[str, object],
) -> Fingerprint:
    """The :class:`Fingerprint` of what was read: ``counts`` is (samples, own validation)."""
    k = proposal.encoding.num_classes if proposal.encoding is not None else 0
    mean, std = _statistics(images)
    return Fingerprint(
        root=str(root),
        layout=layout,
        num_images=counts[0],
        num_val=counts[1],
        sizes=tuple(sorted(tuple(i.shape[:2]) for i in images)),
        channels=int(images[0].shape[-1]),
        mean=mean,
        std=std,
        proposal=proposal,
        class_fractions=_fractions(classes, k),
        upright=_upright(classes, images, k),
        manifest=_manifest(root),
        **extra,
    )


def _manifest(root: Path) -> str | None:
    """``manifest.csv`` when it has a ``group`` column (what ``data.manifest`` reads)."""
    import csv

    path = root / "manifest.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return path.name if "group" in header else None


def found_values(root: str | Path, layout: Layout) -> tuple[str, Proposal]:
    """The mask values (or colours) of a folders or tiff layout, spelled for a message, and
    the encoding they imply: what ``pixelwise check-data DATA`` reports when none is declared."""
    root = Path(root)
    if layout.layout == "tiff":
        from pixelwise.data._io import read_tiff_pages

        pages = _spaced(read_tiff_pages(root / layout.masks, "label stack"), MAX_MASKS)
        values = sorted({int(v) for page in pages for v in np.unique(page)})
        colors: list[tuple[int, int, int]] = []
    else:
        pairs, _ = _pairs(root, layout)
        values, colors = _mask_values([mask for _, mask in _spaced(pairs, MAX_MASKS)])
    spelled = _spelled(values) if values else f"{len(colors)} colours"
    return spelled, propose_encoding(values[: MAX_CLASSES + 1], colors)


def _proposal(
    layout: Layout, masks: Sequence[Path], encoding: MaskEncoding | Mapping | None
) -> Proposal:
    if encoding is not None:
        return Proposal(MaskEncoding.from_config(encoding), "declared")
    if layout.layout == "camvid":
        return Proposal(CAMVID_ENCODING, "the camvid layout's encoding (11 classes, 11 void)")
    return propose_encoding(*_mask_values(masks))


def _decoded(masks: Sequence[Path], encoding: MaskEncoding | None) -> list[np.ndarray]:
    from pixelwise.data._io import read_mask

    return [] if encoding is None else [read_mask(path, encoding) for path in masks]


def _fractions(classes: Sequence[np.ndarray], k: int) -> tuple[float, ...]:
    if not classes or k == 0:
        return ()
    counts = sum(np.bincount(c[c < k].ravel(), minlength=k)[:k] for c in classes)
    total = counts.sum()
    return tuple(float(c / total) for c in counts) if total else ()


def _tiff_fingerprint(
    root: Path, layout: Layout, encoding: MaskEncoding | Mapping | None
) -> Fingerprint:
    from pixelwise.data._io import read_tiff_pages

    pages = read_tiff_pages(root / layout.images, "image stack")
    labels = read_tiff_pages(root / layout.masks, "label stack")
    images = [p[..., None] if p.ndim == 2 else p for p in _spaced(pages, MAX_IMAGES)]
    scale = 255.0 if images[0].dtype == np.uint8 else float(max(i.max() for i in images) or 1)
    images = [i.astype(np.float64) / scale for i in images]
    if encoding is not None:
        proposal = Proposal(MaskEncoding.from_config(encoding), "declared")
    else:
        found = sorted({int(v) for page in _spaced(labels, MAX_MASKS) for v in np.unique(page)})
        proposal = propose_encoding(found[: MAX_CLASSES + 1])
    classes = []
    if proposal.encoding is not None:
        classes = [proposal.encoding.decode(p) for p in _spaced(labels, MAX_MASKS)]
    return _assemble(root, layout, (len(pages), 0), images, classes, proposal, {})
