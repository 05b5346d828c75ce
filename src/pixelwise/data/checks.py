"""Read a whole data set before training: every file, every mask value, every size.

What ``pixelwise check-data`` runs. Each problem is one line naming the file (raised by the
readers in :mod:`pixelwise.data.datasets`); the summary is data for the command line to print.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pixelwise._checks import message
from pixelwise.data.datasets import SegmentationDataset

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DataSummary:
    """What :func:`check_dataset` found.

    Attributes:
        num_samples: Samples read.
        class_names: K names.
        class_pixels: Pixels per class over the data set, ``ignore_index`` excluded, length K.
        ignored_pixels: Pixels equal to ``ignore_index``.
        channels: Image channels (the same for every image).
        sizes: The distinct image sizes, (H, W), sorted.
        size_files: Per distinct size, how many images have it and the first one's path.
    """

    num_samples: int
    class_names: tuple[str, ...]
    class_pixels: tuple[int, ...]
    ignored_pixels: int
    channels: int
    sizes: tuple[tuple[int, int], ...]
    size_files: Mapping[tuple[int, int], tuple[int, str]] = dataclasses.field(default_factory=dict)

    @property
    def class_fractions(self) -> tuple[float, ...]:
        """Each class's share of the labelled (not ignored) pixels."""
        total = sum(self.class_pixels)
        return tuple(n / total for n in self.class_pixels)

    @property
    def absent_classes(self) -> tuple[str, ...]:
        """Names of the classes no pixel has."""
        return tuple(n for n, c in zip(self.class_names, self.class_pixels, strict=True) if not c)


def iter_masks(dataset: SegmentationDataset) -> Iterator[torch.Tensor]:
    """The masks of a data set, untransformed, e.g. for ``losses.class_weights.count_classes``.

    Shape:
        yields (H, W) int64.
    """
    for index in range(len(dataset)):
        yield dataset.load_sample(index)["mask"]


def _count(mask: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[np.ndarray, int]:
    values = mask.numpy().ravel()
    ignored = values == ignore_index
    return np.bincount(values[~ignored], minlength=num_classes), int(ignored.sum())


def class_frequencies(dataset: SegmentationDataset) -> np.ndarray:
    """Pixel counts per class over the data set's masks, ``ignore_index`` excluded.

    Shape:
        returns (K,) int64.
    """
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for mask in iter_masks(dataset):
        counts += _count(mask, dataset.num_classes, dataset.ignore_index)[0]
    return counts


def _check_channels(sample: dict, channels: int | None, first_path: str) -> int:
    found = int(sample["image"].shape[0])
    if channels is not None and found != channels:
        raise ValueError(
            message(
                f"image {sample['path']}",
                f"have the {channels} channel(s) of the data set's first image {first_path}",
                found,
                "convert the images so that all have the same channels",
            )
        )
    return found


SHOWN_PROBLEMS = 20  # problems listed one per line; the rest are counted


class DataProblems(ValueError):
    """Several problems of a data set, one line each (at most :data:`SHOWN_PROBLEMS`, then a
    count of the rest)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = problems[:SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        lines = [f"{len(problems)} problems in the data:", *shown]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n".join(lines))


def raise_problems(problems: list[BaseException]) -> None:
    """Raise nothing for none, the one error as it is, or :class:`DataProblems` for several."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DataProblems([str(p) for p in problems])


def check_dataset(dataset: SegmentationDataset, progress: Progress | None = None) -> DataSummary:
    """Read every sample (without the transform) and check it, before training starts.

    Every problem is found, each one line naming the file: unreadable or truncated files,
    image/mask size mismatch, undeclared mask values, wrong channel counts, images whose
    channels differ from the first image's, or masks without any labelled pixel. One problem
    is raised as it is; several as :class:`DataProblems`, one line each.

    Args:
        dataset: Any pixelwise data set or view.
        progress: Called as ``progress(done, total)`` after each sample.

    Returns:
        Counts and sizes for the command line to print.
    """
    num_classes, ignore = dataset.num_classes, dataset.ignore_index
    counts = np.zeros(num_classes, dtype=np.int64)
    ignored, channels, first_path = 0, None, ""
    size_files: dict[tuple[int, int], tuple[int, str]] = {}
    problems: list[BaseException] = []
    for index in range(len(dataset)):
        try:
            sample = dataset.load_sample(index)
            channels = _check_channels(sample, channels, first_path)
        except (ValueError, FileNotFoundError) as problem:
            problems.append(problem)
            continue
        finally:
            if progress is not None:
                progress(index + 1, len(dataset))
        first_path = first_path or str(sample["path"])
        size = (int(sample["image"].shape[-2]), int(sample["image"].shape[-1]))
        count, path = size_files.get(size, (0, str(sample["path"])))
        size_files[size] = (count + 1, path)
        found, skipped = _count(sample["mask"], num_classes, ignore)
        counts += found
        ignored += skipped
    raise_problems(problems)
    if not counts.any():
        raise ValueError(
            message(
                "the masks",
                "label at least one pixel with a class",
                f"only ignore_index {ignore} in {len(dataset)} masks",
                "check the mask encoding",
            )
        )
    summary = DataSummary(
        len(dataset),
        dataset.class_names,
        tuple(int(c) for c in counts),
        ignored,
        channels,
        tuple(sorted(size_files)),
        dict(sorted(size_files.items())),
    )
    if summary.absent_classes:
        logger.warning("classes without any pixel: %s", ", ".join(summary.absent_classes))
    return summary


def check_splits(
    datasets: Mapping[str, SegmentationDataset],
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, DataSummary]:
    """:func:`check_dataset` of each split (e.g. ``{"train": ..., "val": ...}``), so that a bad
    file in any of them is found before training starts; every problem of every split is
    reported together.

    Args:
        datasets: The splits by name.
        progress: Called as ``progress(split, done, total)`` after each sample.
    """
    summaries: dict[str, DataSummary] = {}
    problems: list[BaseException] = []
    for name, dataset in datasets.items():
        step = None if progress is None else functools.partial(progress, name)
        try:
            summaries[name] = check_dataset(dataset, progress=step)
        except DataProblems as found:
            problems += [ValueError(p) for p in found.problems]
        except (ValueError, FileNotFoundError) as problem:
            problems.append(problem)
    raise_problems(problems)
    return summaries


def _size_list(summary: DataSummary, shown: int = 4) -> str:
    """``"3 of 32×32 (e.g. a.png), 1 of 1×1 (b.png)"``, the most common sizes first."""
    by_count = sorted(summary.size_files.items(), key=lambda item: -item[1][0])
    parts = [
        f"{n} of {h}×{w} ({'e.g. ' if n > 1 else ''}{path})"
        for (h, w), (n, path) in by_count[:shown]
    ]
    if len(by_count) > shown:
        parts.append(f"{len(by_count) - shown} more sizes")
    return ", ".join(parts)


def check_training_sizes(
    summary: DataSummary,
    *,
    crop_size: int | tuple[int, int] | None,
    batch_size: int,
    scale: tuple[float, float] | None = None,
    rot90: bool = False,
) -> list[str]:
    """Check that the training images can be batched as configured, before training starts.

    Without a crop, the images of a batch of more than one must share one size: mixed sizes,
    a random scale (a range, not one fixed factor), or 90° rotations of non-square images are refused in one line naming an
    image of each size. A crop larger than every image (so that each crop is mostly padding)
    is not an error; it is returned as a warning line with the sizes.

    Args:
        summary: :func:`check_dataset` of the training split.
        crop_size: ``data.crop_size`` (int or (h, w)), or None.
        batch_size: Training images per batch.
        scale: ``data.scale``, or None.
        rot90: ``data.rot90``.

    Returns:
        Warning lines (empty when all is well).
    """
    if crop_size is None:
        if batch_size == 1:
            return []
        fix = "set data.crop_size, or train.batch_size = 1"
        if len(summary.size_files) > 1:
            raise ValueError(
                message(
                    f"training images without data.crop_size (batch_size {batch_size})",
                    "share one size",
                    _size_list(summary),
                    fix,
                )
            )
        what = f"training with batch_size {batch_size} and without data.crop_size"
        if scale is not None and scale[0] != scale[1]:  # a fixed scale keeps one size
            raise ValueError(message(what, "not scale at random", f"data.scale {scale}", fix))
        [(height, width)] = list(summary.size_files)
        if rot90 and height != width:
            raise ValueError(
                message(what, "not rotate non-square images", f"rot90 of {height}×{width}", fix)
            )
        return []
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    if any(h >= crop_h and w >= crop_w for h, w in summary.size_files):
        return []
    covered = max(min(h, crop_h) * min(w, crop_w) for h, w in summary.size_files)
    largest = max(summary.size_files, key=lambda size: size[0] * size[1])
    return [
        f"data.crop_size {crop_h}×{crop_w} is larger than every training image (largest "
        f"{largest[0]}×{largest[1]}): at least {1 - covered / (crop_h * crop_w):.1%} of each "
        "crop is padding; a crop no larger than the images trains faster"
    ]
