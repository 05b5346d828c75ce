"""Batches for training and evaluation.

Training draws a random order per epoch from its own generator (what ``DataLoader(shuffle=
True)`` builds, or a ``DistributedSampler`` in a multi-process run); :class:`ResumableSampler`
lets an epoch resumed mid-way skip the batches it already trained on. Evaluation reads each
process's share in order (:class:`~pixelwise.engine.distributed.ShardSampler`). Both batch with
:func:`collate_groups`, which splits a batch by image size.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from pixelwise._checks import message
from pixelwise.config import TrainConfig
from pixelwise.engine import distributed
from pixelwise.engine.state import seed_worker

_TENSOR_KEYS = ("image", "mask", "weight", "distance")


def collate_groups(samples: list[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Stack samples into batches of ``image``, ``mask`` (and ``weight``, ``distance``), one
    per image size.

    Validation images may differ in size (a batch is then split by size); the samples'
    ``path`` values are kept as a list under ``paths`` (for messages); other keys (instance
    labels) are dropped.

    Shape:
        each batch: image (N, C, H, W), mask, weight, distance (N, H, W).
    """
    groups: dict[tuple[int, ...], list[Mapping[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sample["image"].shape), []).append(sample)
    batches: list[dict[str, Any]] = []
    for group in groups.values():
        batch: dict[str, Any] = {
            key: torch.stack([s[key] for s in group]) for key in _TENSOR_KEYS if key in group[0]
        }
        if "path" in group[0]:
            batch["paths"] = [str(s["path"]) for s in group]
        batches.append(batch)
    return batches


class ResumableSampler(Sampler[int]):
    """Another sampler's indices; its next pass can skip the first ``skip`` of them (the
    batches an epoch resumed mid-way has already trained on). Draws the same random numbers
    as the wrapped sampler, skipped indices included."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def train_loader(
    dataset: Dataset,
    train: TrainConfig,
    *,
    generator: torch.Generator,
    dist: distributed.DistContext,
) -> DataLoader:
    """The training loader of ``[train]`` (batch size, workers, seed): a new random order each
    epoch, drawn from ``generator`` (or by a DistributedSampler), through a
    :class:`ResumableSampler`."""
    if dist.enabled:
        sampler: Sampler[int] = DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=train.seed
        )
    else:
        # What DataLoader(shuffle=True) builds: the same draws from the same generator.
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset,
        batch_size=train.batch_size,
        sampler=ResumableSampler(sampler),
        num_workers=train.num_workers,
        collate_fn=collate_groups,
        generator=generator,
        worker_init_fn=seed_worker,
        pin_memory=torch.cuda.is_available() and train.device != "cpu",
    )


def eval_loader(
    dataset: Dataset, train: TrainConfig, *, dist: distributed.DistContext
) -> DataLoader:
    """An evaluation loader: in order, this process's share only (no sample repeated).

    It has its own generator, so evaluating draws nothing from the global random state.
    """
    return DataLoader(
        dataset,
        batch_size=train.batch_size,
        sampler=distributed.ShardSampler(len(dataset), dist.rank, dist.world_size),
        num_workers=train.num_workers,
        collate_fn=collate_groups,
        generator=torch.Generator().manual_seed(train.seed),
        worker_init_fn=seed_worker,
        pin_memory=torch.cuda.is_available() and train.device != "cpu",
    )


def single_group(groups: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The one batch of a training step: training images must share one size."""
    if len(groups) != 1:
        found = []
        for group in groups:
            height, width = group["image"].shape[-2:]
            paths = group.get("paths")
            found.append(f"{height}×{width}" + (f" ({paths[0]})" if paths else ""))
        raise ValueError(
            message(
                "training images in one batch",
                "share one size",
                ", ".join(found),
                "set data.crop_size, or train.batch_size = 1",
            )
        )
    return groups[0]
