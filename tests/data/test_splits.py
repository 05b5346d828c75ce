"""Splits: deterministic by seed, ordered, or stratified by a manifest's groups."""

from __future__ import annotations

import pytest

from pixelwise.data import (
    FolderDataset,
    MaskEncoding,
    split_by_manifest,
    split_dataset,
    split_indices,
)


def test_seeded_split_is_deterministic_disjoint_and_complete():
    train, val = split_indices(25, val_fraction=0.2, seed=3)
    assert (train, val) == split_indices(25, val_fraction=0.2, seed=3)
    assert len(val) == 5 and sorted(train + val) == list(range(25))
    assert split_indices(25, val_fraction=0.2, seed=4)[1] != val


def test_ordered_split_validates_on_the_last_samples():
    # The ISBI 2012 convention: slices 00-19 train, 20-24 validate.
    assert split_indices(25, val_fraction=0.2, shuffle=False) == (
        list(range(20)),
        list(range(20, 25)),
    )


def test_split_keeps_at_least_one_sample_on_each_side():
    assert len(split_indices(3, val_fraction=0.01)[1]) == 1
    assert len(split_indices(3, val_fraction=0.99)[0]) == 1
    with pytest.raises(
        ValueError, match=r"val_fraction must lie strictly between 0 and 1, got 1\.0"
    ):
        split_indices(10, val_fraction=1.0)


def _manifest(tmp_path, groups):
    lines = ["id,group"] + [f"{g}{i},{g}" for g, n in groups for i in range(n)]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_split_takes_the_first_75_percent_of_each_group(tmp_path):
    path = _manifest(tmp_path, [("a", 8), ("b", 6), ("c", 3), ("d", 2)])
    train, val = split_by_manifest(path)
    assert train == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "b3", "c0", "c1", "d0"]
    assert val == ["a6", "a7", "b4", "b5", "c2", "d1"]


def test_manifest_split_of_a_dataset_maps_ids_to_samples(make_folder, tmp_path):
    root = make_folder(stems=("a0", "a1", "a2", "a3", "b0", "b1"))
    dataset = FolderDataset(root, MaskEncoding.index(3))
    path = _manifest(tmp_path, [("a", 4), ("b", 2)])
    train, val = split_dataset(dataset, val_fraction=0.25, manifest=path)
    assert [train.sample_id(i) for i in range(len(train))] == ["a0", "a1", "a2", "b0"]
    assert [val.sample_id(i) for i in range(len(val))] == ["a3", "b1"]
    path.write_text("id,group\na0,a\nzz,a\n")
    with pytest.raises(
        ValueError,
        match=r"ids in manifest .* must name samples of the data set, got 1 unknown: \[zz\]",
    ):
        split_dataset(dataset, manifest=path)
    path.write_text("id,group\na0,a\na1,a\n")
    with pytest.raises(ValueError, match="must list every sample, got 4 unlisted"):
        split_dataset(dataset, manifest=path)
    path.write_text("name,group\na0,a\n")
    with pytest.raises(
        ValueError, match=r"must have the columns \['id', 'group'\], got \['name', 'group'\]"
    ):
        split_by_manifest(path)
