"""Deterministic train/validation splits: by seed, in order, or by a manifest's groups.

The nuclei convention (``../shared/data/nuclei/manifest.csv``): within each ``group``, the first
75 % of the rows in file order train and the rest validate; "first 75 %" means the rows before
position ``floor(0.75 · n)``, so a group of 6 gives 4 + 2 and a group of 2 gives 1 + 1.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelwise._checks import message
from pixelwise.data.datasets import DatasetView, SegmentationDataset, Transform
from pixelwise.data.encoding import format_values


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(message(name, "lie strictly between 0 and 1", repr(value)))
    return float(value)


def split_indices(
    n: int, *, val_fraction: float = 0.2, seed: int = 0, shuffle: bool = True
) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted train and validation indices.

    ``round(n · val_fraction)`` samples validate, at least one and at most ``n - 1``. With
    ``shuffle`` they are drawn by ``seed`` (same seed, same split); without, the last ones
    validate (the ISBI 2012 convention: slices 00–19 train, 20–24 validate).
    """
    _check_fraction("val_fraction", val_fraction)
    if n < 2:
        raise ValueError(message("a split", "have at least 2 samples", n))
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    val = sorted(int(i) for i in order[n - n_val :])
    train = sorted(int(i) for i in order[: n - n_val])
    return train, val


def read_manifest(path: str | Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV manifest, checking that ``columns`` exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(message(f"manifest {path}", "be an existing CSV file", "missing"))
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(message(f"manifest {path}", f"have the columns {list(columns)}", header))
    if not rows:
        raise ValueError(message(f"manifest {path}", "have at least one row", "none"))
    return rows


def split_by_manifest(
    manifest: str | Path,
    *,
    train_fraction: float = 0.75,
    group_column: str = "group",
    id_column: str = "id",
) -> tuple[list[str], list[str]]:
    """Stratified split of a manifest's ids: per group, the first ``floor(f · n)`` rows train.

    Returns:
        (train ids, validation ids), each in manifest order.
    """
    _check_fraction("train_fraction", train_fraction)
    rows = read_manifest(manifest, (id_column, group_column))
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row[group_column], []).append(row[id_column])
    train_ids = set()
    for ids in groups.values():
        train_ids.update(ids[: math.floor(train_fraction * len(ids) + 1e-9)])
    train = [r[id_column] for r in rows if r[id_column] in train_ids]
    val = [r[id_column] for r in rows if r[id_column] not in train_ids]
    return train, val


def _indices_of(dataset: SegmentationDataset, ids: Sequence[str], manifest: Path) -> list[int]:
    position = {dataset.sample_id(i): i for i in range(len(dataset))}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise ValueError(
            message(
                f"ids in manifest {manifest}",
                "name samples of the data set",
                f"{len(unknown)} unknown: {format_values(unknown, 3)}",
            )
        )
    return [position[i] for i in ids]


def split_dataset(
    dataset: SegmentationDataset,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    shuffle: bool = True,
    manifest: str | Path | None = None,
    train_transform: Transform | None = None,
    val_transform: Transform | None = None,
) -> tuple[DatasetView, DatasetView]:
    """Split a data set into a training and a validation view, each with its own transform.

    With a ``manifest``, the split is stratified by its ``group`` column (train fraction
    ``1 - val_fraction``) and every sample must be listed; otherwise :func:`split_indices`.
    """
    if manifest is None:
        train, val = split_indices(
            len(dataset), val_fraction=val_fraction, seed=seed, shuffle=shuffle
        )
    else:
        manifest = Path(manifest)
        train_ids, val_ids = split_by_manifest(manifest, train_fraction=1.0 - val_fraction)
        train = _indices_of(dataset, train_ids, manifest)
        val = _indices_of(dataset, val_ids, manifest)
        unlisted = len(dataset) - len(set(train) | set(val))
        if unlisted:
            raise ValueError(
                message(f"manifest {manifest}", "list every sample", f"{unlisted} unlisted")
            )
    return dataset.subset(train, train_transform), dataset.subset(val, val_transform)
