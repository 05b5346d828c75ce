"""Segmentation data sets read from files: folders, CamVid, instance labels and TIFF stacks.

Every data set returns one dict per sample::

    {"image": float32 (C, H, W) in [0, 1], "mask": int64 (H, W), "path": str}

plus ``"instances"`` (int64 (H, W)) and ``"weight"`` (float32 (H, W), the U-Net weight map)
for instance-label data. Masks hold ``[0, K)`` or ``ignore_index``. ``load_sample(i)`` reads a
sample; ``dataset[i]`` also applies the data set's ``transform`` (see
:mod:`pixelwise.data.transforms`). Class names travel with the data set (``class_names``), read
from a ``classes.txt`` in the root when present, so that checkpoints can record them.

Files are paired by stem, so ``images/a.jpg`` pairs with ``masks/a.png``; every problem that
can be seen from the file names (missing folders, unpaired files, JPEG masks) is raised when
the data set is built, and every problem inside a file when it is read, each as one line
naming the file. :func:`pixelwise.data.checks.check_dataset` reads everything up front.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelwise._checks import check_choice, check_class_names, check_positive_int, message
from pixelwise.config import INSTANCE_TARGETS
from pixelwise.data._io import (
    IMAGE_SUFFIXES,
    check_exists,
    read_image,
    read_labels,
    read_mask,
    read_tiff_pages,
    refuse_lossy_mask,
    to_float,
)
from pixelwise.data.encoding import MaskEncoding, format_values, read_class_names

logger = logging.getLogger(__name__)

Sample = dict[str, object]
Transform = Callable[[Sample], Sample]
WeightFn = Callable[[np.ndarray], np.ndarray]

CAMVID_SPLITS = ("train", "val", "test")
# CamVid as used by SegNet: 11 classes, annotation value 11 is void and ignored.
CAMVID_ENCODING = MaskEncoding.index(11, ignore_values=(11,))
INSTANCE_CLASSES = ("background", "object")
THREE_CLASSES = ("background", "interior", "boundary")
CORE_CLASSES = (*THREE_CLASSES, "core")
# The classes each instance target (``data.instance_target``) trains.
TARGET_CLASSES = {"semantic": INSTANCE_CLASSES, "three_class": THREE_CLASSES, "core": CORE_CLASSES}
# A core pixel is at least this share of its object's largest distance from the object's edge.
CORE_FRACTION = 0.5


class SegmentationDataset(Dataset):
    """Base of the pixelwise data sets: subclasses implement ``__len__``, ``load_sample`` and
    ``sample_id``.

    Attributes:
        encoding: How mask files map to classes.
        class_names: One name per class, K in all.
        transform: Applied to each sample dict by ``__getitem__``; None for none.
    """

    def __init__(
        self,
        encoding: MaskEncoding,
        class_names: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        self.encoding = encoding
        self.class_names = tuple(class_names)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return self.encoding.num_classes

    @property
    def ignore_index(self) -> int:
        """The mask value excluded from loss and metrics."""
        return self.encoding.ignore_index

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """A short name of sample ``index`` (the file stem), as in a manifest."""
        raise NotImplementedError

    def load_sample(self, index: int) -> Sample:
        """Read sample ``index`` without the transform.

        Shape:
            image: (C, H, W) float32; mask: (H, W) int64; weight, instances: (H, W).
        """
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(message("sample index", f"lie in [0, {len(self)})", index))
        sample = self.load_sample(index % len(self))
        return self.transform(sample) if self.transform is not None else sample

    def subset(self, indices: Sequence[int], transform: Transform | None = None) -> DatasetView:
        """A view of some samples with its own transform (e.g. training augmentation)."""
        return DatasetView(self, indices, transform)


class DatasetView(SegmentationDataset):
    """Samples ``indices`` of ``base``, read without ``base.transform``, with their own."""

    def __init__(
        self,
        base: SegmentationDataset,
        indices: Sequence[int],
        transform: Transform | None = None,
    ) -> None:
        super().__init__(base.encoding, base.class_names, transform)
        self.base = base
        self.indices = [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(base)]
        if bad:
            raise IndexError(message("subset indices", f"lie in [0, {len(base)})", bad[:5]))

    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(self.indices[index])

    def load_sample(self, index: int) -> Sample:
        return self.base.load_sample(self.indices[index])

    def raw_instances(self, index: int) -> np.ndarray:
        """The base data set's instance labels as read (:meth:`InstanceDataset.raw_instances`)."""
        if not hasattr(self.base, "raw_instances"):
            raise AttributeError(f"{type(self.base).__name__} holds no instance labels")
        return self.base.raw_instances(self.indices[index])


def resolve_class_names(
    class_names: Sequence[str] | None, root: Path | None, num_classes: int
) -> tuple[str, ...]:
    """Explicit names, else ``root/classes.txt``, else ``class_0 … class_{K-1}``."""
    if class_names is not None:
        names = check_class_names(tuple(class_names), "class_names")
        if len(names) != num_classes:
            raise ValueError(
                message("class_names", f"name all {num_classes} classes", f"{len(names)} names")
            )
        return names
    if root is not None and (root / "classes.txt").is_file():
        return read_class_names(root / "classes.txt", num_classes)
    return tuple(f"class_{i}" for i in range(num_classes))


def check_encoding(encoding: object) -> MaskEncoding:
    """Return ``encoding`` if it is a MaskEncoding, else raise a TypeError saying how to build one."""
    if not isinstance(encoding, MaskEncoding):
        raise TypeError(
            message(
                "encoding",
                "be a MaskEncoding",
                type(encoding).__name__,
                "build one with MaskEncoding.index, .values or .palette",
            )
        )
    return encoding


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (C, H, W)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_name: str, mask_name: str) -> None:
    """Raise a ValueError naming both files and sizes unless the (H, W) sizes agree."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            message(
                f"mask {mask_name}",
                f"have the size of its image {image_name}, (H, W) = {image.shape[:2]}",
                f"(H, W) = {mask.shape[:2]}",
                "pair the right files, or resize the mask with nearest-neighbour interpolation",
            )
        )


def _refuse_image_named_entry(path: Path, what: str) -> None:
    """A folder entry named like an image that is not a file (a folder, a link to one, a
    broken link) is refused: left out, its sample would go missing without a word."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return  # a subfolder (or other entry) of another name is not part of the data
    actual = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() else "no file"
    if path.is_symlink():
        actual += f" (a link to {os.readlink(path)})"
    raise ValueError(
        message(f"{what} {path}", "be an image file", actual, "remove it or link it to an image")
    )


def list_images(folder: Path, what: str) -> dict[str, Path]:
    """Image files of ``folder`` by stem; a missing or empty folder, or a repeated stem, raises."""
    if not folder.is_dir():
        actual = "a file" if folder.exists() else "a missing folder"
        raise FileNotFoundError(message(f"{what} folder {folder}", "exist", actual))
    files: dict[str, Path] = {}
    others = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file():
            _refuse_image_named_entry(path, what)
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            others.append(path.name)
            continue
        if path.stem in files:
            raise ValueError(
                message(
                    f"file stems in {folder}",
                    "be unique",
                    f"{files[path.stem].name} and {path.name}",
                    "keep one file per sample",
                )
            )
        files[path.stem] = path
    if not files:
        found = f"no image files (other files: {format_values(others, 3)})" if others else "none"
        raise ValueError(
            message(f"{what} folder {folder}", f"contain images {list(IMAGE_SUFFIXES)}", found)
        )
    return files


def pair_by_stem(image_dir: Path, mask_dir: Path, what: str = "mask") -> list[tuple[Path, Path]]:
    """Pair ``image_dir/x.*`` with ``mask_dir/x.*``; unpaired files on either side raise."""
    images = list_images(image_dir, "image")
    masks = list_images(mask_dir, what)
    # Named as on disk (``orphan.png``), the form a user searches the folder for.
    lonely_images = [images[s].name for s in sorted(images.keys() - masks.keys())]
    lonely_masks = [masks[s].name for s in sorted(masks.keys() - images.keys())]
    if lonely_images or lonely_masks:
        problems = []
        if lonely_images:
            problems.append(
                f"{len(lonely_images)} image(s) without one: {format_values(lonely_images, 5)}"
            )
        if lonely_masks:
            problems.append(
                f"{len(lonely_masks)} {what}(s) without an image: {format_values(lonely_masks, 5)}"
            )
        raise ValueError(
            message(
                f"every image in {image_dir} and {what} in {mask_dir}",
                "pair up by file stem",
                "; ".join(problems),
                "add the missing files or remove the unpaired ones",
            )
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


class PairedDataset(SegmentationDataset):
    """Explicit (image, mask) file pairs.

    Args:
        pairs: (image path, mask path) per sample.
        encoding: How the mask files map to classes.
        class_names: K names; default ``class_0 …``.
        channels: Channels every image must have (the model's ``in_channels``); None accepts any.
        transform: Applied to each sample by ``__getitem__``.

    Shape:
        sample["image"]: (C, H, W) float32; sample["mask"]: (H, W) int64.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str | Path, str | Path]],
        encoding: MaskEncoding,
        *,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        encoding = check_encoding(encoding)
        super().__init__(
            encoding, resolve_class_names(class_names, None, encoding.num_classes), transform
        )
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if not self.pairs:
            raise ValueError(message("pairs", "list at least one (image, mask) pair", "none"))
        for image_path, mask_path in self.pairs:
            check_exists(image_path, "image")
            check_exists(mask_path, "mask")
            refuse_lossy_mask(mask_path)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_id(self, index: int) -> str:
        return self.pairs[index][0].stem

    def load_sample(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.channels)  # (H, W, C)
        target = self.read_target(index, mask_path)
        check_same_size(image, target["mask"].numpy(), str(image_path), str(mask_path))
        return {"image": _image_tensor(image), **target, "path": str(image_path)}

    def read_target(self, index: int, mask_path: Path) -> dict[str, torch.Tensor]:
        """The target tensors of one sample: here the decoded mask."""
        return {"mask": torch.from_numpy(read_mask(mask_path, self.encoding))}


class FolderDataset(PairedDataset):
    """``root/images/`` and ``root/masks/`` paired by file stem (extensions may differ).

    Args:
        root: The data set folder; class names come from ``root/classes.txt`` when present.
        encoding: How the mask files map to classes.
        images: Name of the image folder under ``root``.
        masks: Name of the mask folder under ``root``.
        weight_map_background: Add the U-Net weight map to every sample, its objects the
            connected components of the other classes (4-connected; ignored pixels count as
            this class): for EM membranes (0) and cells, the cells. None: no weight map.
            Computed once per sample with the paper's w0 = 10, σ = 5 and balanced w_c
            (:func:`pixelwise.losses.weight_map.weight_map_from_semantic`).
        class_names, channels, transform: As in :class:`PairedDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        encoding: MaskEncoding,
        *,
        images: str = "images",
        masks: str = "masks",
        weight_map_background: int | None = None,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        root = _check_root(root)
        pairs = pair_by_stem(root / images, root / masks)
        num_classes = check_encoding(encoding).num_classes
        names = resolve_class_names(class_names, root, num_classes)
        super().__init__(pairs, encoding, class_names=names, channels=channels, transform=transform)
        self.root = root
        if weight_map_background is not None and not (
            isinstance(weight_map_background, int) and 0 <= weight_map_background < num_classes
        ):
            raise ValueError(
                message(
                    "weight_map_background",
                    f"be a class index in [0, {num_classes})",
                    repr(weight_map_background),
                    "name the class between the objects, e.g. 0 for membranes",
                )
            )
        self.weight_map_background = weight_map_background
        self._weights = WeightCache()

    def read_target(self, index: int, mask_path: Path) -> dict[str, torch.Tensor]:
        target = super().read_target(index, mask_path)
        if self.weight_map_background is None:
            return target
        mask = target["mask"].numpy()
        return {**target, "weight": self._weights.weight(index, lambda: self._weight_map(mask))}

    def _weight_map(self, mask: np.ndarray) -> np.ndarray:
        """The U-Net map of a semantic mask, ignored pixels counted as background.

        Shape:
            mask: (H, W); returns (H, W) float.
        """
        # Imported here: the weight map needs scipy, which only these data sets use.
        from pixelwise.losses.weight_map import weight_map_from_semantic

        background = self.weight_map_background
        mask = np.where(mask == self.ignore_index, background, mask)
        return weight_map_from_semantic(mask, background=background)


class CamVidDataset(FolderDataset):
    """The CamVid layout: ``train/`` + ``trainannot/``, ``val/`` + ``valannot/``, ``test/`` +
    ``testannot/``.

    The default encoding reads the annotations as 11 classes with value 11 (void) ignored.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        encoding: MaskEncoding = CAMVID_ENCODING,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        check_choice("CamVid split", split, CAMVID_SPLITS)
        super().__init__(
            root,
            encoding,
            images=split,
            masks=f"{split}annot",
            class_names=class_names,
            channels=channels,
            transform=transform,
        )
        self.split = split


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        actual = "a file" if root.exists() else "a missing folder"
        raise FileNotFoundError(message(f"data set folder {root}", "exist", actual))
    return root


def separate_touching(instances: np.ndarray) -> np.ndarray:
    """Cut a one-pixel background gap between touching objects.

    A pixel becomes background when one of its 8 neighbours belongs to an object with a larger
    label, so no two objects touch afterwards (not even diagonally) and the semantic mask keeps
    them apart: the thin gaps are what the U-Net weight map emphasises.

    Shape:
        instances: (H, W) → (H, W), same dtype.
    """
    padded = np.pad(instances, 1)
    height, width = instances.shape
    larger = np.zeros(instances.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            neighbour = padded[dy : dy + height, dx : dx + width]
            larger |= neighbour > instances
    out = instances.copy()
    out[(instances > 0) & larger] = 0
    return out


def three_class_target(instances: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """Background 0, interior 1, boundary 2 from instance labels: an object's pixels within
    ``boundary_width`` pixels (8-connected steps) of anything that is not the same object —
    background or a touching neighbour — are its boundary, the rest its interior. The class
    the U-Net paper's separation border and the Data Science Bowl 2018 winners trained, so that
    a network can learn where touching objects part.

    Shape:
        instances: (H, W) int -> (H, W) int64.
    """
    from skimage.segmentation import find_boundaries

    objects = instances > 0
    edge = find_boundaries(instances, connectivity=2, mode="inner") & objects
    if boundary_width > 1:
        from scipy import ndimage

        grown = ndimage.binary_dilation(edge, np.ones((3, 3), bool), iterations=boundary_width - 1)
        edge = grown & objects
    target = np.where(objects, 1, 0).astype(np.int64)
    target[edge] = 2
    return target


def core_target(
    instances: np.ndarray, boundary_width: int = 2, core_fraction: float = CORE_FRACTION
) -> np.ndarray:
    """:func:`three_class_target` with a fourth class, core (3): the interior pixels whose
    distance to the nearest pixel outside their object (background or a touching neighbour)
    is at least ``core_fraction`` of the largest such distance in that object (a disc of
    radius r: the concentric disc of radius r/2). Touching objects' cores lie apart by half
    of each object, however faint the line where they meet, so each core is one watershed
    seed; an object too small to keep an interior has no core.

    Shape:
        instances: (H, W) int -> (H, W) int64.
    """
    labels = np.asarray(instances)
    target = three_class_target(labels, boundary_width)
    for box, own, distance in _object_distances(labels):
        core = own & (distance >= core_fraction * distance.max())
        window = target[box]
        window[core & (window == 1)] = 3
    return target


def _object_distances(
    labels: np.ndarray,
) -> Iterator[tuple[tuple[slice, slice], np.ndarray, np.ndarray]]:
    """Per object of ``labels``: its bounding box, its pixels in the box, and each box pixel's
    Euclidean distance to the nearest pixel outside the object (background or a touching
    neighbour; the edge of the box counts as outside), 0 off the object.

    Shape:
        labels: (H, W) int -> boxes of (h, w) bool and (h, w) float64.
    """
    from scipy import ndimage

    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == index
        # Padded with background, so that the edge of the box counts as the object's edge.
        yield box, own, ndimage.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1]


def distance_target(instances: np.ndarray) -> np.ndarray:
    """Each object pixel's distance to the nearest pixel outside its object (background or a
    touching neighbour), divided by the largest such distance in the object; 0 on the
    background. Every object peaks at 1 whatever its size, and two touching objects meet in
    a valley at 1 / their largest distance, so a watershed of the map parts them
    (``data.distance_target``, :class:`pixelwise.nn.distance.DistanceHead`).

    Shape:
        instances: (H, W) int -> (H, W) float32 in [0, 1].
    """
    labels = np.asarray(instances)
    target = np.zeros(labels.shape, np.float32)
    for box, own, distance in _object_distances(labels):
        window = target[box]
        window[own] = (distance[own] / distance.max()).astype(np.float32)
    return target


def default_weight_fn(instances: np.ndarray) -> np.ndarray:
    """The U-Net weight map with the paper's defaults (w0 = 10, σ = 5 pixels)."""
    # Imported here: the weight map needs scipy, which only these data sets use.
    from pixelwise.losses.weight_map import unet_weight_map

    return unet_weight_map(instances)


def instance_target(
    instances: np.ndarray, *, separate: bool = True, weight_fn: WeightFn | None = None
) -> dict[str, torch.Tensor]:
    """Mask (0 background, 1 object), instance labels and, with ``weight_fn``, the weight map.

    Shape:
        instances: (H, W); every output: (H, W).
    """
    labels = separate_touching(instances) if separate else instances
    target = {
        "mask": torch.from_numpy((labels > 0).astype(np.int64)),
        "instances": torch.from_numpy(labels.astype(np.int64)),
    }
    if weight_fn is not None:
        target["weight"] = torch.from_numpy(_weight_of(weight_fn, labels))
    return target


def _weight_of(weight_fn: WeightFn, labels: np.ndarray) -> np.ndarray:
    """``weight_fn(labels)`` as float32, checked to have the labels' shape.

    Shape:
        labels: (H, W); returns (H, W) float32.
    """
    weight = np.asarray(weight_fn(labels), dtype=np.float32)
    if weight.shape != labels.shape:
        raise ValueError(
            message("weight_fn output", f"have shape {labels.shape}", f"shape {weight.shape}")
        )
    return weight


class WeightCache:
    """Per-sample weight maps, computed on a sample's first read and then reused.

    The weight map depends only on the labels, which do not change between epochs, while
    computing it takes one distance transform per object. Every data set with weight maps
    (folders of semantic masks, instance labels, synthetic cells) keeps them here.

    Args:
        weight_fn: ``instances (H, W) → weights (H, W)`` for :meth:`target`, or None for
            instance targets without a weight map.
        separate: Whether :meth:`target` cuts a background gap between touching objects.
    """

    def __init__(self, weight_fn: WeightFn | None = None, separate: bool = True) -> None:
        self.weight_fn, self.separate = weight_fn, separate
        self._weights: dict[int, torch.Tensor] = {}

    def weight(self, index: int, compute: Callable[[], np.ndarray]) -> torch.Tensor:
        """The weight map of sample ``index``: ``compute()`` the first time, the cache after.

        Shape:
            returns (H, W) float32.
        """
        cached = self._weights.get(index)
        if cached is None:
            cached = torch.from_numpy(np.asarray(compute(), dtype=np.float32))
            self._weights[index] = cached
        return cached

    def target(self, index: int, instances: np.ndarray) -> dict[str, torch.Tensor]:
        """As :func:`instance_target` with this cache's ``weight_fn``, cached under ``index``."""
        labels = separate_touching(instances) if self.separate else instances
        target = instance_target(labels, separate=False)
        if self.weight_fn is not None:
            weight_fn = self.weight_fn
            target["weight"] = self.weight(index, lambda: _weight_of(weight_fn, labels))
        return target


class InstanceDataset(PairedDataset):
    """Images with instance labels (0 background, 1..N one object each), as in the nuclei data.

    Samples hold a semantic mask (0 background, 1 object), the instance labels and the U-Net
    weight map. Touching objects are separated by a one-pixel background gap first
    (``separate=True``), as in the U-Net paper's training masks.

    Args:
        root: Folder with ``images/`` and ``instances/`` (and optionally ``manifest.csv``).
        images: Name of the image folder.
        instances: Name of the instance label folder (8- or 16-bit PNG or TIFF).
        weights: Compute the weight map (cached per sample after the first read).
        weight_fn: ``instances (H, W) int → weights (H, W) float``; default
            :func:`pixelwise.losses.weight_map.unet_weight_map` with the paper's parameters.
        separate: Cut a background gap between touching objects.
        target: ``"semantic"`` (background / object), ``"three_class"`` (background /
            interior / boundary, :func:`three_class_target` of the labels as read) or
            ``"core"`` (those and core, :func:`core_target`).
        boundary_width: The boundary's width in pixels, for ``"three_class"`` and ``"core"``.
        distance: Add each sample's :func:`distance_target` (``"distance"``, computed on its
            first read and then reused), for a network with a distance head.
        class_names: Two (three, four) names; default ``("background", "object")``
            (``("background", "interior", "boundary")``, and ``"core"``).
        channels, transform: As in :class:`PairedDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        images: str = "images",
        instances: str = "instances",
        weights: bool = True,
        weight_fn: WeightFn | None = None,
        separate: bool = True,
        target: str = "semantic",
        boundary_width: int = 2,
        distance: bool = False,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        root = _check_root(root)
        self.target = check_choice("instance target", target, INSTANCE_TARGETS)
        self.distance = bool(distance)
        self._distances: dict[int, torch.Tensor] = {}
        self.boundary_width = check_positive_int("boundary_width", boundary_width)
        names = TARGET_CLASSES[self.target]
        pairs = pair_by_stem(root / images, root / instances, what="instance image")
        super().__init__(
            pairs,
            MaskEncoding.index(len(names)),
            class_names=class_names or names,
            channels=channels,
            transform=transform,
        )
        self.root = root
        self.weights = WeightCache((weight_fn or default_weight_fn) if weights else None, separate)

    def raw_instances(self, index: int) -> np.ndarray:
        """Sample ``index``'s instance labels as the file holds them (touching objects still
        touching), for scoring objects.

        Shape:
            (H, W) integer labels.
        """
        return read_labels(self.pairs[index][1])

    def read_target(self, index: int, mask_path: Path) -> dict[str, torch.Tensor]:
        labels = read_labels(mask_path)
        target = self.weights.target(index, labels)
        if self.target == "three_class":
            target["mask"] = torch.from_numpy(three_class_target(labels, self.boundary_width))
        elif self.target == "core":
            target["mask"] = torch.from_numpy(core_target(labels, self.boundary_width))
        if self.distance:
            if index not in self._distances:
                self._distances[index] = torch.from_numpy(distance_target(labels))
            target["distance"] = self._distances[index]
        return target


class TiffStackDataset(SegmentationDataset):
    """Multi-page TIFF stacks, ISBI style: page i of ``images`` with page i of ``labels``.

    Both stacks are read when the data set is built (a few hundred megabytes at most for the
    stacks this layout is meant for), so damaged files fail before training.

    Args:
        images: TIFF file of P image pages (grey or multi-channel, 8/16-bit or float).
        labels: TIFF file of P label pages.
        encoding: How label values map to classes, e.g. ``MaskEncoding.values({0: 0, 255: 1})``.
        class_names, channels, transform: As in :class:`PairedDataset`.
    """

    def __init__(
        self,
        images: str | Path,
        labels: str | Path,
        encoding: MaskEncoding,
        *,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.images_path, self.labels_path = Path(images), Path(labels)
        encoding = check_encoding(encoding)
        super().__init__(
            encoding,
            resolve_class_names(class_names, self.images_path.parent, encoding.num_classes),
            transform,
        )
        refuse_lossy_mask(self.labels_path)
        self._images = read_tiff_pages(self.images_path, "image stack")
        self._labels = read_tiff_pages(self.labels_path, "label stack")
        if len(self._images) != len(self._labels):
            raise ValueError(
                message(
                    f"label stack {self.labels_path}",
                    f"have one page per page of {self.images_path} ({len(self._images)})",
                    f"{len(self._labels)} pages",
                )
            )
        self.channels = channels

    def __len__(self) -> int:
        return len(self._images)

    def sample_id(self, index: int) -> str:
        return f"{self.images_path.stem}_{index:03d}"

    def load_sample(self, index: int) -> Sample:
        image_name = f"{self.images_path} page {index}"
        label_name = f"{self.labels_path} page {index}"
        pixels = self._images[index]
        pixels = pixels if pixels.ndim == 3 else pixels[..., None]  # (H, W, C)
        if self.channels is not None and pixels.shape[-1] != self.channels:
            raise ValueError(
                message(
                    f"image {image_name}",
                    f"have {self.channels} channel(s) (channels={self.channels})",
                    pixels.shape[-1],
                    "convert the stack or set channels to match",
                )
            )
        labels = self._labels[index]
        if (labels.ndim == 2) != (self.encoding.channels == 1):
            raise ValueError(
                message(
                    f"labels {label_name}",
                    f"have {self.encoding.channels} channel(s) for the {self.encoding.kind} encoding",
                    f"shape {labels.shape}",
                    "declare the encoding that matches the label stack",
                )
            )
        mask = self.encoding.decode(labels, source=label_name)
        check_same_size(pixels, mask, image_name, label_name)
        image = to_float(pixels, Path(image_name))
        return {"image": _image_tensor(image), "mask": torch.from_numpy(mask), "path": image_name}
