"""Read a whole data set before training: every file, every mask value, every size.

What ``pixelwise check-data`` runs. Each problem is one line naming the file (raised by the
readers in :mod:`pixelwise.data.datasets`); the summary is data for the command line to print.
"""

from __future__ import annotations

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
    """

    num_samples: int
    class_names: tuple[str, ...]
    class_pixels: tuple[int, ...]
    ignored_pixels: int
    channels: int
    sizes: tuple[tuple[int, int], ...]

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
    sizes: set[tuple[int, int]] = set()
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
        sizes.add(tuple(sample["image"].shape[-2:]))
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
        tuple(sorted(sizes)),
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
