"""The trainer: one run of a :class:`~pixelwise.config.RunConfig`, epoch by epoch.

What a run does, in order:

1. Seeds everything from ``train.seed`` (:mod:`pixelwise.engine.state`), sets the determinism
   flags, joins the process group when launched distributed (:mod:`.distributed`).
2. Builds the data (:func:`pixelwise.data.build_datasets`), computes the input normalisation
   (per-channel mean and std of up to 256 training images, untransformed, once) and, when
   asked, class weights from the training masks; builds the model through the registry with
   ``num_classes`` and ``in_channels`` taken from the data.
3. Trains: Adam or SGD (momentum, Nesterov), the learning rate multiplied by the schedule's
   factor after every optimizer step (``poly``: ``(1 − t/T) ** power``, ``cosine``:
   ``(1 + cos(π t/T)) / 2``, T = epochs × batches per epoch), optional gradient clipping by
   global norm, mixed precision (float16 autocast with a gradient scaler) on CUDA only,
   channels-last memory format on CUDA (or when asked).
4. Validates every ``train.val_every`` epochs and after the last one: a
   :class:`~pixelwise.metrics.ConfusionMatrix` over the validation set (pixel accuracy, mean
   accuracy, per-class and mean IoU, Dice) and the validation loss; in a distributed run each
   process counts its share and one ``all_reduce`` sums the matrices.
5. Writes (rank 0 only) into a new run folder: ``config.toml`` (the resolved config),
   ``metrics.csv`` (one row per epoch, validation columns NaN where an epoch was not
   validated; ``iteration`` and ``minutes`` of training so far), ``last.pt`` at each
   validation and ``best.pt`` when the ``train.metric`` improves (each with a
   ``.safetensors`` beside it), and at the end ``loss.png``, ``miou.png`` and ``overlays/``
   (predictions on a few validation images).

Time budget: ``train.time_limit_minutes`` (wall clock from the start of :meth:`Trainer.fit`,
validation and checkpoints included, continued across resumes) ends the run at the end of
the iteration that crosses it, mid-epoch if need be: that partial epoch is validated and
checkpointed (its ``metrics.csv`` row has a fractional ``epoch``, e.g. 3.4). An epoch whose
validation ends past the limit ends the run there. ``train.snapshot_minutes`` (e.g.
``[15, 30, 60]``) saves ``snapshot_15min.pt`` ... at the first iteration past each mark,
without validating, so what a run had reached at each time can be evaluated afterwards.

Resume: ``fit(resume=checkpoint)`` restores the weights, optimizer, schedule, gradient scaler,
epoch, history, best score, training time and every random state (torch, CUDA, NumPy, Python,
the DataLoader generator, the augmentation generator). With ``deterministic = true`` and the
same config, a single-process run stopped after epoch k and resumed ends with exactly the
weights of an uninterrupted run. So does one stopped mid-epoch (by the time limit, or resumed
from a snapshot) when ``num_workers = 0``: the checkpoint holds the position in the epoch
and the loader's random state at its start, and the resumed epoch skips the batches already
seen (with workers, their augmentation seeds differ after a mid-epoch resume). A resumed run
writes a new run folder whose ``metrics.csv`` repeats the earlier rows. (A multi-process
resume restores rank 0's random states on every rank, so it continues correctly but not
bit-identically.)

Valid-padding U-Net: the logits are smaller than the input; targets and weight maps are
centre-cropped to the logits' size for the loss and the metrics.

Progress: ``progress`` is an object with any of the methods ``run_start(info)``,
``epoch_start(epoch, epochs, batches)``, ``batch_end(epoch, batch, batches, loss,
images_per_second)``, ``epoch_end(epoch, epochs, row)``, ``run_end(result)`` (see
:class:`Progress`), or a function ``progress(event, info_dict)``. Epochs and batches count
from 1. Only rank 0 reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from pixelwise._checks import message
from pixelwise.config import RunConfig
from pixelwise.engine import distributed
from pixelwise.engine.checkpoint import (
    load_checkpoint,
    normalise_images,
    save_checkpoint,
)
from pixelwise.engine.runs import create_run_dir, epoch_row, write_csv_atomic, write_text_atomic
from pixelwise.engine.state import (
    configure_determinism,
    restore_rng_state,
    rng_state,
    seed_everything,
    seed_worker,
)
from pixelwise.metrics import ConfusionMatrix

logger = logging.getLogger(__name__)

# Normalisation statistics come from at most this many training images, evenly spaced.
STATS_SAMPLES = 256
_TENSOR_KEYS = ("image", "mask", "weight")
# Config keys that may differ between a checkpoint and the run that resumes it.
_RESUMABLE_CHANGES = {
    "train.epochs",
    "train.out_dir",
    "train.num_workers",
    "train.overlays",
    "train.time_limit_minutes",
    "train.snapshot_minutes",
    "train.val_every",
}
# The validation columns of metrics.csv, NaN in an epoch that train.val_every skips.
_VALIDATION_KEYS = (
    "loss",
    "pixel_accuracy",
    "mean_accuracy",
    "mean_iou",
    "frequency_weighted_iou",
    "mean_dice",
)


class Progress:
    """Progress callbacks, all no-ops here: subclass and override what you need.

    Called on rank 0 only; epochs and batches count from 1.
    """

    def run_start(self, info: Mapping[str, Any]) -> None:
        """``info``: run_dir, epochs, start_epoch, batches (per epoch), device, world_size,
        time_limit_minutes (None without a time budget)."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """Before the first batch of ``epoch``."""

    def batch_end(
        self, epoch: int, batch: int, batches: int, loss: float, images_per_second: float
    ) -> None:
        """After each optimizer step; ``images_per_second`` over all processes."""

    def epoch_end(self, epoch: int, epochs: int, row: Mapping[str, Any]) -> None:
        """After validation and the checkpoints; ``row`` is the epoch's ``metrics.csv`` row."""

    def run_end(self, result: FitResult) -> None:
        """After the plots and overlays."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        run_dir: The run folder.
        epochs: Epochs completed (including those before a resume).
        metric: The config's ``train.metric``.
        best_value: Its best validation value; ``best_epoch`` the epoch it was reached.
        metrics: The last validation's metrics (see :meth:`Trainer.evaluate`).
        history: The rows of ``metrics.csv``.
        best_path, last_path: The checkpoints.
        stopped_by: ``"epochs"`` (all of ``train.epochs`` ran) or ``"time_limit"``.
        minutes: Training wall time, including runs before a resume.
        iterations: Optimizer steps, including runs before a resume.
        snapshots: The ``snapshot_<m>min.pt`` files this run wrote, by minute mark.
    """

    run_dir: Path
    epochs: int
    metric: str
    best_value: float
    best_epoch: int
    metrics: dict
    history: list[dict]
    best_path: Path
    last_path: Path
    stopped_by: str = "epochs"
    minutes: float = 0.0
    iterations: int = 0
    snapshots: Mapping[float, Path] = dataclasses.field(default_factory=dict)


def collate_groups(samples: list[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Stack samples into batches of ``image``, ``mask`` (and ``weight``), one per image size.

    Validation images may differ in size (a batch is then split by size); other keys (paths,
    instance labels) are dropped.

    Shape:
        each batch: image (N, C, H, W), mask (N, H, W), weight (N, H, W).
    """
    groups: dict[tuple[int, ...], list[Mapping[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sample["image"].shape), []).append(sample)
    return [
        {key: torch.stack([s[key] for s in group]) for key in _TENSOR_KEYS if key in group[0]}
        for group in groups.values()
    ]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of the last two axes (a no-op at that size).

    Shape:
        x: (..., H, W) → (..., h, w).
    """
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def image_statistics(dataset: Dataset, max_samples: int = STATS_SAMPLES) -> dict:
    """Per-channel mean and std of a data set's images (untransformed), as normalisation.

    Reads at most ``max_samples`` images, evenly spaced; a channel with std below 1e-6 gets
    std 1 (a constant channel is only shifted).
    """
    count = len(dataset)
    indices = np.unique(np.linspace(0, count - 1, min(count, max_samples)).round().astype(int))
    read = getattr(dataset, "load_sample", dataset.__getitem__)
    total = squares = None
    pixels = 0
    for index in indices:
        image = read(int(index))["image"].to(torch.float64)  # (C, H, W)
        sums, sq = image.sum(dim=(1, 2)), image.square().sum(dim=(1, 2))  # (C,)
        total, squares = (sums, sq) if total is None else (total + sums, squares + sq)
        pixels += image.shape[1] * image.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return {"mean": mean.tolist(), "std": std.tolist()}


def schedule_value(name: str, t: float, power: float) -> float:
    """The learning-rate factor at ``t`` in [0, 1] of the schedule's span."""
    t = min(max(t, 0.0), 1.0)
    if name == "poly":
        return (1.0 - t) ** power
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def schedule_factor(name: str, total_steps: int, power: float) -> Callable[[int], float]:
    """The learning-rate factor after ``step`` optimizer steps, for LambdaLR."""

    def factor(step: int) -> float:
        return schedule_value(name, min(step, total_steps) / max(total_steps, 1), power)

    return factor


def time_schedule_factor(
    name: str, fraction: Callable[[], float], power: float
) -> Callable[[int], float]:
    """The learning-rate factor at ``fraction()`` of the time budget trained so far, for
    LambdaLR (``schedule.over = "time"``): the schedule reaches its end as the budget does,
    however many iterations fit in it. Step 0 (before training) is the schedule's start."""

    def factor(step: int) -> float:
        return schedule_value(name, fraction() if step else 0.0, power)

    return factor


def resolve_device(name: str, ctx: distributed.DistContext) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; distributed CUDA runs use ``cuda:<local_rank>``."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            message(
                "train.device",
                "name an available device",
                "'cuda' without CUDA",
                "use 'auto' or 'cpu'",
            )
        )
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if ctx.enabled and ctx.local_rank >= torch.cuda.device_count():
        raise ValueError(
            message(
                "processes per machine",
                f"be at most the number of GPUs ({torch.cuda.device_count()})",
                ctx.local_rank + 1,
                "start fewer processes, or train on CPU with train.device = 'cpu'",
            )
        )
    return torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())


def _emit(progress: object, event: str, *args: Any, **info: Any) -> None:
    if progress is None:
        return
    method = getattr(progress, event, None)
    if callable(method):
        method(*args, **info)
    elif callable(progress) and not isinstance(progress, Progress):
        progress(event, {"args": args, **info})


def unvalidated_metrics(class_names: Sequence[str]) -> dict[str, Any]:
    """Validation metrics of an epoch that was not validated: NaN throughout."""
    nan = math.nan
    classes = {name: {"iou": nan, "dice": nan} for name in class_names}
    return {**dict.fromkeys(_VALIDATION_KEYS, nan), "classes": classes}


def snapshot_name(minutes: float) -> str:
    """``snapshot_15min.pt`` for 15, ``snapshot_0.5min.pt`` for 0.5."""
    return f"snapshot_{minutes:g}min.pt"


class TrainingClock:
    """Training wall time against a budget and snapshot marks (see the module docstring).

    Args:
        limit_minutes: The budget; 0 for none.
        snapshot_minutes: Increasing marks at which to save a snapshot.
        timer: Seconds from an arbitrary start (tests pass a fake one).
    """

    def __init__(
        self,
        limit_minutes: float,
        snapshot_minutes: Sequence[float],
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.limit = 60.0 * limit_minutes
        self.pending = [float(m) for m in snapshot_minutes]
        self.offset = 0.0
        self.timer = timer
        self._start = timer()

    @property
    def active(self) -> bool:
        """Whether anything depends on the time (then every iteration reads the clock)."""
        return self.limit > 0 or bool(self.pending)

    def start(self, offset: float = 0.0) -> None:
        """Start counting at ``offset`` seconds (a resumed run's earlier training time);
        marks already passed then are not due again."""
        self.offset = offset
        self.pending = [m for m in self.pending if 60.0 * m > offset]
        self._start = self.timer()

    def seconds(self) -> float:
        """Seconds trained, including the offset."""
        return self.offset + self.timer() - self._start

    def due(self, seconds: float) -> list[float]:
        """The marks that ``seconds`` has reached, each returned once."""
        reached = [m for m in self.pending if 60.0 * m <= seconds]
        self.pending = self.pending[len(reached) :]
        return reached

    def over(self, seconds: float) -> bool:
        """Whether ``seconds`` has used up the budget."""
        return self.limit > 0 and seconds >= self.limit


@dataclasses.dataclass
class EpochPosition:
    """How far a run is into an epoch: what a snapshot or a time-limited stop records so that
    resuming continues the same epoch exactly.

    Attributes:
        epoch: The epoch, from 0.
        batch: Batches done in it.
        loss_sum, images: The training loss summed over its images, and their count.
        seconds: Time spent in its batches.
        loader_state: The loader generator's state at the start of the epoch (it draws the
            epoch's order).
    """

    epoch: int
    batch: int = 0
    loss_sum: float = 0.0
    images: float = 0.0
    seconds: float = 0.0
    loader_state: torch.Tensor | None = None

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> EpochPosition | None:
        return None if not state else cls(**state)


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


class Trainer:
    """Trains and validates one run; see the module docstring for what a run does.

    Args:
        config: The run's config.
        run_dir: The run folder; None for a new ``<train.out_dir>/<timestamp>`` folder. It is
            created by :meth:`fit`, must be new or empty, and is never overwritten.
        progress: A :class:`Progress`-like object or a function ``(event, info)``.

    Everything but the files is built here: data, normalisation, model, optimizer, schedule.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        progress: Progress | Callable[[str, dict], None] | None = None,
    ) -> None:
        if not isinstance(config, RunConfig):
            raise TypeError(
                message("config", "be a RunConfig", type(config).__name__, "use load_config()")
            )
        self.config, self.progress, self.requested_run_dir = config, progress, run_dir
        train = config.train
        self.dist = distributed.context()
        self.device = resolve_device(train.device, self.dist)
        self._owns_group = distributed.init_process_group(self.dist, self.device)
        self._previous_deterministic = configure_determinism(train.deterministic, self.device)
        seed_everything(train.seed)
        self.amp = train.amp and self.device.type == "cuda"
        self.channels_last = (
            train.channels_last
            if isinstance(train.channels_last, bool)
            else self.device.type == "cuda"
        )
        self.clock = TrainingClock(train.time_limit_minutes, train.snapshot_minutes)
        self._build_data()
        self._build_model()
        self._build_optimization()
        self.run_dir: Path | None = None
        self.history: list[dict] = []
        self.best: dict[str, Any] = {"value": -math.inf, "epoch": 0}
        self.start_epoch = self.epochs_done = 0
        self.clock_offset = 0.0
        self.position: EpochPosition | None = None  # set while an epoch runs
        self.resume_position: EpochPosition | None = None
        self.snapshots: dict[float, Path] = {}
        self.stopped_by = "epochs"

    # --- set-up --------------------------------------------------------------------------

    def _build_data(self) -> None:
        from pixelwise.data import build_datasets

        seed, rank = self.config.train.seed, self.dist.rank
        self.augment_generator = torch.Generator().manual_seed(seed + 1_000_003 * rank)
        self.loader_generator = torch.Generator().manual_seed(seed)
        self.train_set, self.val_set = build_datasets(
            self.config.data, generator=self.augment_generator
        )
        self.class_names = tuple(self.train_set.class_names)
        self.num_classes = int(self.train_set.num_classes)
        self.ignore_index = int(self.train_set.ignore_index)
        first = self.train_set.load_sample(0)
        self.in_channels = int(first["image"].shape[0])
        if self.config.loss.name == "weighted_ce" and "weight" not in first:
            raise ValueError(
                message(
                    "loss 'weighted_ce'",
                    "have weight maps in the training samples",
                    f"samples of data layout '{self.config.data.layout}' without 'weight'",
                    "use loss.name = 'ce', instance data ('instances', 'synthetic') with "
                    "weights = true, or folders with data.weight_map_background",
                )
            )
        self.normalisation = self._normalisation()
        self.class_weights = self._class_weights()
        self.train_loader = self._train_loader()
        self.val_loader = self.make_loader(self.val_set)

    def _normalisation(self) -> dict:
        train = self.config.train
        if train.normalisation == "none":
            return {"mean": [0.0] * self.in_channels, "std": [1.0] * self.in_channels}
        if train.normalisation == "fixed":
            if len(train.mean) != self.in_channels:
                raise ValueError(
                    message(
                        "train.mean and train.std",
                        f"give one value per image channel ({self.in_channels})",
                        f"{len(train.mean)} values",
                    )
                )
            return {"mean": list(train.mean), "std": list(train.std)}
        stats = image_statistics(self.train_set)
        logger.info("normalisation from the training images: %s", stats)
        return stats

    def _class_weights(self) -> torch.Tensor | None:
        method = self.config.loss.class_weights
        if method == "none":
            return None
        from pixelwise.data import iter_masks
        from pixelwise.losses import class_weights

        weights = class_weights(
            iter_masks(self.train_set),
            self.num_classes,
            method=method,
            ignore_index=self.ignore_index,
        )
        logger.info("class weights (%s): %s", method, weights.tolist())
        return weights.to(self.device)

    def _train_loader(self) -> DataLoader:
        train = self.config.train
        if self.dist.enabled:
            sampler = DistributedSampler(
                self.train_set,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=train.seed,
            )
        else:
            # What DataLoader(shuffle=True) builds: the same draws from the same generator.
            sampler = RandomSampler(self.train_set, generator=self.loader_generator)
        self.train_sampler = ResumableSampler(sampler)
        return DataLoader(
            self.train_set,
            batch_size=train.batch_size,
            sampler=self.train_sampler,
            num_workers=train.num_workers,
            collate_fn=collate_groups,
            generator=self.loader_generator,
            worker_init_fn=seed_worker,
            pin_memory=self.device.type == "cuda",
        )

    def make_loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation loader: in order, this process's share only (no sample repeated).

        It has its own generator, so evaluating draws nothing from the global random state.
        """
        sampler = distributed.ShardSampler(len(dataset), self.dist.rank, self.dist.world_size)
        return DataLoader(
            dataset,
            batch_size=self.config.train.batch_size,
            sampler=sampler,
            num_workers=self.config.train.num_workers,
            collate_fn=collate_groups,
            generator=torch.Generator().manual_seed(self.config.train.seed),
            worker_init_fn=seed_worker,
            pin_memory=self.device.type == "cuda",
        )

    def _build_model(self) -> None:
        from pixelwise.models import create_model

        model_config = self.config.model
        model = create_model(
            model_config.name,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            **model_config.options,
        ).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.train_model: nn.Module = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def _build_optimization(self) -> None:
        optim, schedule = self.config.optim, self.config.schedule
        params = self.model.parameters()
        if optim.name == "adam":
            self.optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                params,
                lr=optim.lr,
                momentum=optim.momentum,
                weight_decay=optim.weight_decay,
                nesterov=optim.nesterov,
            )
        if schedule.over == "time":
            if not self.clock.limit > 0:
                raise ValueError(
                    message(
                        'schedule.over = "time"',
                        "come with a time budget",
                        "train.time_limit_minutes = 0",
                        'set train.time_limit_minutes or use schedule.over = "iterations"',
                    )
                )
            factor = time_schedule_factor(
                schedule.name, lambda: self.clock.seconds() / self.clock.limit, schedule.power
            )
        else:
            total = self.config.train.epochs * len(self.train_loader)
            factor = schedule_factor(schedule.name, total, schedule.power)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    # --- one step ------------------------------------------------------------------------

    def _prepare(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Images normalised on the device; mask and weight map (or None) beside them."""
        images = batch["image"].to(self.device, non_blocking=True)
        images = normalise_images(images, self.normalisation)  # (N, C, H, W)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["mask"].to(self.device, non_blocking=True)  # (N, H, W)
        weight = batch.get("weight")
        weight = weight.to(self.device, non_blocking=True) if weight is not None else None
        return images, target, weight

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """The configured loss (float32); target and weight are centre-cropped to the logits.

        Shape:
            logits: (N, K, h, w); target, weight: (N, H, W) with H >= h, W >= w; output: ().
        """
        from pixelwise.losses import ce_dice_loss, cross_entropy, soft_dice_loss

        size = tuple(logits.shape[-2:])
        logits, target = logits.float(), center_crop(target, size)
        config, common = self.config.loss, {"ignore_index": self.ignore_index}
        if config.name == "dice":
            return soft_dice_loss(logits, target, weight=self.class_weights, **common)
        if config.name == "ce_dice":
            return ce_dice_loss(
                logits,
                target,
                ce_weight=config.ce_weight,
                dice_weight=config.dice_weight,
                weight=self.class_weights,
                **common,
            )
        pixel_weights = None
        if config.name == "weighted_ce":
            if weight is None:
                raise ValueError(
                    message("loss 'weighted_ce'", "get a weight map with every batch", "none")
                )
            pixel_weights = center_crop(weight, size)
        return cross_entropy(
            logits, target, weight=self.class_weights, pixel_weights=pixel_weights, **common
        )

    def _step(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        images, target, weight = self._prepare(batch)
        with self._autocast():
            logits = self.train_model(images)  # (N, K, H, W)
        loss = self.loss(logits, target, weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data (the rest of it after a resume mid-epoch), or less
        when the time budget runs out (then ``self.position`` stays set); returns (mean loss,
        images per second)."""
        position = self._begin_epoch(epoch)
        self.train_model.train()
        batches, world = self.batches_per_epoch, self.dist.world_size
        start = tick = time.perf_counter() - position.seconds
        for index, groups in enumerate(self.train_loader, start=position.batch + 1):
            batch = self._single_group(groups)
            n = batch["image"].shape[0]
            value = float(self._step(batch))
            if not math.isfinite(value):
                raise ValueError(
                    message(
                        f"training loss (epoch {epoch + 1}, batch {index})",
                        "be finite",
                        value,
                        "lower optim.lr or set train.grad_clip",
                    )
                )
            now = time.perf_counter()
            position.batch, position.seconds = index, now - start
            position.loss_sum, position.images = position.loss_sum + value * n, position.images + n
            if self.dist.is_main:
                speed = n * world / max(now - tick, 1e-9)
                _emit(self.progress, "batch_end", epoch + 1, index, batches, value, speed)
            tick = now
            if self._after_iteration():
                break
        totals = [position.loss_sum, position.images]
        totals = distributed.all_reduce_sum(
            torch.tensor(totals, dtype=torch.float64, device=self.device)
        )
        if position.batch >= self.batches_per_epoch:
            self.position = None
        loss = float(totals[0] / totals[1].clamp_min(1))
        return loss, float(totals[1]) / max(position.seconds, 1e-9)

    def _begin_epoch(self, epoch: int) -> EpochPosition:
        """The epoch's position: where a resumed checkpoint left it, else at its start."""
        sampler = self.train_sampler.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        position, self.resume_position = self.resume_position, None
        if position is not None and position.epoch == epoch:
            # The epoch's order again (the loader draws it from this state), minus what ran.
            self.loader_generator.set_state(position.loader_state)
            self.train_sampler.skip = position.batch * self.config.train.batch_size
        else:
            position = EpochPosition(epoch, loader_state=self.loader_generator.get_state())
        self.position = position
        return position

    def _after_iteration(self) -> bool:
        """Save the snapshots that are due; whether the time budget is used up."""
        if not self.clock.active:
            return False
        seconds = self._seconds()
        for minutes in self.clock.due(seconds):
            self._save_snapshot(minutes, seconds)
        return self.clock.over(seconds)

    def _seconds(self) -> float:
        """Training seconds by rank 0's clock, so that every process stops at one iteration."""
        seconds = self.clock.seconds() if self.dist.is_main else 0.0
        if not self.dist.enabled:
            return seconds
        shared = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        return float(distributed.all_reduce_sum(shared)[0])

    @property
    def batches_per_epoch(self) -> int:
        """Batches of a whole epoch (a resumed partial epoch has fewer left)."""
        batch_size = self.config.train.batch_size
        return math.ceil(len(self.train_sampler.sampler) / batch_size)

    def _single_group(self, groups: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if len(groups) != 1:
            sizes = [tuple(g["image"].shape[-2:]) for g in groups]
            raise ValueError(
                message(
                    "training images in one batch",
                    "share one size",
                    f"sizes {sizes}",
                    "set data.crop_size, or train.batch_size = 1",
                )
            )
        return groups[0]

    # --- validation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, data: Dataset | DataLoader | None = None) -> dict[str, Any]:
        """Validation metrics of the current model over ``data`` (default: the validation set).

        A data set is split across the processes of a distributed run (each sample counted
        once); a DataLoader is taken as this process's share. Every process must call this:
        the confusion matrices and loss sums are combined with ``all_reduce``.

        Returns:
            :meth:`ConfusionMatrix.summary` (pixel_accuracy, mean_accuracy, mean_iou,
            frequency_weighted_iou, mean_dice, classes: name → iou/accuracy/dice/...), plus
            ``loss`` (the training loss of each image on its own, averaged over the images;
            NaN when it cannot be computed, e.g. ``weighted_ce`` on samples without weight
            maps) and ``confusion_matrix`` (K × K nested lists, rows target classes).
        """
        if data is None:
            loader = self.val_loader
        else:
            loader = data if isinstance(data, DataLoader) else self.make_loader(data)
        distributed.broadcast_buffers(self.model)
        matrix = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.device)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, images
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in loader:
                for group in batch if isinstance(batch, list) else [batch]:
                    self._evaluate_batch(group, matrix, totals)
        finally:
            self.model.train(was_training)
        distributed.all_reduce_sum(matrix.matrix)
        distributed.all_reduce_sum(totals)
        summary = matrix.summary(self.class_names)
        summary["loss"] = float(totals[0] / totals[1]) if totals[1] > 0 else math.nan
        summary["confusion_matrix"] = matrix.matrix.cpu().tolist()
        return summary

    def _evaluate_batch(
        self, batch: Mapping[str, torch.Tensor], matrix: ConfusionMatrix, totals: torch.Tensor
    ) -> None:
        images, target, weight = self._prepare(batch)
        with self._autocast():
            logits = self.model(images).float()  # (N, K, h, w)
        matrix.update(logits, center_crop(target, tuple(logits.shape[-2:])))
        if self.config.loss.name == "weighted_ce" and weight is None:
            return
        # Image by image, so that the mean does not depend on how images are batched or sharded.
        for i in range(images.shape[0]):
            w = None if weight is None else weight[i : i + 1]
            totals[0] += self.loss(logits[i : i + 1], target[i : i + 1], w).double()
            totals[1] += 1

    # --- the run -------------------------------------------------------------------------

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train for ``train.epochs`` epochs or until ``train.time_limit_minutes`` (continuing a
        checkpoint's run with ``resume``), validating and checkpointing as configured; returns
        what happened."""
        if resume is not None:
            self._resume(resume)
        train = self.config.train
        self.run_dir = self._create_run_dir()
        self.epochs_done = self.start_epoch
        if self.dist.is_main:
            write_text_atomic(self.run_dir / "config.toml", self.config.to_toml())
            _emit(
                self.progress,
                "run_start",
                {
                    "run_dir": self.run_dir,
                    "epochs": train.epochs,
                    "start_epoch": self.start_epoch,
                    "batches": self.batches_per_epoch,
                    "device": str(self.device),
                    "world_size": self.dist.world_size,
                    "time_limit_minutes": train.time_limit_minutes,
                },
            )
        self.clock.start(self.clock_offset)
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, train.epochs):
            metrics = self._run_epoch(epoch) or metrics
            if self.stopped_by != "epochs":
                break
        return self._finish(metrics)

    def _finish(self, metrics: dict[str, Any]) -> FitResult:
        if self.dist.is_main:
            self._write_report()
        distributed.barrier()
        result = FitResult(
            run_dir=self.run_dir,
            epochs=self.epochs_done,
            metric=self.config.train.metric,
            best_value=float(self.best["value"]),
            best_epoch=int(self.best["epoch"]),
            metrics=metrics,
            history=list(self.history),
            best_path=self.run_dir / "best.pt",
            last_path=self.run_dir / "last.pt",
            stopped_by=self.stopped_by,
            minutes=self.clock.seconds() / 60.0,
            iterations=int(self.scheduler.last_epoch),
            snapshots=dict(self.snapshots),
        )
        if self.dist.is_main:
            _emit(self.progress, "run_end", result)
        return result

    def _run_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Train one epoch, validate it when due; returns its metrics (None: not validated)."""
        train, main = self.config.train, self.dist.is_main
        if main:
            _emit(self.progress, "epoch_start", epoch + 1, train.epochs, self.batches_per_epoch)
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train_loss, speed = self._train_epoch(epoch)
        position = self.position  # None when the epoch ran to its end
        self.epochs_done = epoch + (position is None)
        out_of_time = position is not None or self.clock.over(self._seconds())
        due = (epoch + 1) % train.val_every == 0 or epoch + 1 == train.epochs
        metrics = self.evaluate() if due or out_of_time else None
        shown = metrics or unvalidated_metrics(self.class_names)
        row = epoch_row(
            epoch + 1,
            lr=lr,
            train_loss=train_loss,
            metrics=shown,
            seconds=time.perf_counter() - start,
            images_per_second=speed,
        )
        if position is not None:  # stopped mid-epoch: how far, e.g. 3.4
            row["epoch"] = round(epoch + position.batch / self.batches_per_epoch, 4)
        row["iteration"] = int(self.scheduler.last_epoch)
        row["minutes"] = self._seconds() / 60.0
        self.history.append(row)
        if metrics is not None:
            self._record(epoch, train_loss, metrics)
        if main:
            write_csv_atomic(self.run_dir / "metrics.csv", self.history)
            _emit(self.progress, "epoch_end", epoch + 1, train.epochs, row)
        more = epoch + 1 < train.epochs
        if position is not None or (more and self.clock.over(self._seconds())):
            self.stopped_by = "time_limit"
        return metrics

    def _record(self, epoch: int, train_loss: float, metrics: dict[str, Any]) -> None:
        """Log a validation, update the best score, write last.pt (and best.pt)."""
        train = self.config.train
        value = float(metrics[train.metric])
        improved = self.best["epoch"] == 0 or value > self.best["value"]
        if improved:
            self.best = {"value": value, "epoch": epoch + 1}
        logger.info(
            "epoch %d/%d: train loss %.4f, val %s %.4f",
            epoch + 1,
            train.epochs,
            train_loss,
            train.metric,
            value,
        )
        if self.dist.is_main:
            self._save(self.epochs_done, {"train_loss": train_loss, **metrics}, improved)

    def _create_run_dir(self) -> Path:
        run_dir = None
        if self.dist.is_main:
            run_dir = create_run_dir(self.config.train.out_dir, self.requested_run_dir)
        return Path(distributed.broadcast_object(str(run_dir) if run_dir else None))

    # --- checkpoints and resume ----------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """What resuming needs beyond the weights: optimizer, schedule, scaler, random states,
        history and best score (plain containers and tensors)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self._generators()),
            "best": dict(self.best),
            "history": [dict(row) for row in self.history],
            "class_weights": None if self.class_weights is None else self.class_weights.cpu(),
            "world_size": self.dist.world_size,
            "seconds": self.clock.seconds(),
            "position": None if self.position is None else self.position.to_state(),
        }

    def _generators(self) -> dict[str, torch.Generator]:
        return {"loader": self.loader_generator, "augment": self.augment_generator}

    def _save(self, epoch: int, metrics: dict[str, Any], improved: bool) -> None:
        common = {
            "model": self.model,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
            "normalisation": self.normalisation,
            "config": self.config.to_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "training": self.training_state(),
        }
        save_checkpoint(self.run_dir / "last.pt", **common)
        if improved:
            save_checkpoint(self.run_dir / "best.pt", **common)

    def _save_snapshot(self, minutes: float, seconds: float) -> None:
        """``snapshot_<minutes>min.pt``: the run as it is now, resumable, not validated."""
        path = self.run_dir / snapshot_name(minutes)
        self.snapshots[minutes] = path
        if not self.dist.is_main:
            return
        position = self.position
        save_checkpoint(
            path,
            model=self.model,
            class_names=self.class_names,
            ignore_index=self.ignore_index,
            normalisation=self.normalisation,
            config=self.config.to_dict(),
            epoch=position.epoch + (position.batch >= self.batches_per_epoch),
            metrics={
                "train_loss": position.loss_sum / max(position.images, 1),
                "minutes": seconds / 60.0,
                "iteration": int(self.scheduler.last_epoch),
            },
            training=self.training_state(),
        )
        logger.info("snapshot at %.2f minutes: %s", seconds / 60.0, path)

    def _resume(self, path: str | Path) -> None:
        from pixelwise.engine.checkpoint import plain, rebuild_args

        checkpoint = load_checkpoint(path)
        if checkpoint.training is None:
            raise ValueError(
                message(
                    f"checkpoint {path}",
                    "hold the training state to resume from",
                    "weights only",
                    "resume from a run's last.pt (or best.pt)",
                )
            )
        ours = (self.config.model.name, plain(rebuild_args(self.model.pixelwise_args)))
        theirs = (checkpoint.model_name, plain(rebuild_args(checkpoint.model_args)))
        if ours != theirs:
            raise ValueError(
                message(
                    f"the model of checkpoint {path}",
                    f"match the config's model {ours}",
                    theirs,
                    "resume with the checkpoint's own config (leave out the config file)",
                )
            )
        self._check_room_to_continue(checkpoint, path)
        self._warn_config_changes(checkpoint.config)
        self._load_training_state(checkpoint)
        logger.info("resumed from %s after epoch %d", path, checkpoint.epoch)

    def _check_room_to_continue(self, checkpoint: Any, path: str | Path) -> None:
        """Refuse a resume that would stop at once: no epochs or no time left."""
        train = self.config.train
        if checkpoint.epoch >= train.epochs:
            raise ValueError(
                message(
                    "train.epochs",
                    f"exceed the {checkpoint.epoch} epochs of checkpoint {path} to continue",
                    train.epochs,
                    f"e.g. --set train.epochs={checkpoint.epoch + 10}",
                )
            )
        minutes = float(checkpoint.training.get("seconds", 0.0)) / 60.0
        if train.time_limit_minutes > 0 and minutes >= train.time_limit_minutes:
            raise ValueError(
                message(
                    "train.time_limit_minutes",
                    f"exceed the {minutes:.2f} minutes checkpoint {path} has trained",
                    train.time_limit_minutes,
                    f"e.g. --set train.time_limit_minutes={math.ceil(minutes) + 15}, or 0 for none",
                )
            )

    def _load_training_state(self, checkpoint: Any) -> None:
        state = checkpoint.training
        self.model.load_state_dict(checkpoint.state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.normalisation = dict(checkpoint.normalisation)
        weights = state.get("class_weights")
        if weights is not None and self.class_weights is not None:
            self.class_weights = weights.to(self.device)
        self.history = [dict(row) for row in state.get("history", [])]
        self.best = dict(state["best"])
        self.start_epoch = checkpoint.epoch
        self.clock_offset = float(state.get("seconds", 0.0))
        self.resume_position = EpochPosition.from_state(state.get("position"))
        restore_rng_state(state["rng"], self._generators())
        if self.dist.enabled and state.get("world_size") == 1:
            logger.warning("resuming a single-process run in %d processes", self.dist.world_size)

    def _warn_config_changes(self, saved: Mapping[str, Any]) -> None:
        ours = _flatten(self.config.to_dict())
        theirs = _flatten(RunConfig.from_dict(saved).to_dict())
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        changed = [k for k in changed if k not in _RESUMABLE_CHANGES]
        if changed:
            logger.warning(
                "resuming with a changed config (%s): not an exact continuation", ", ".join(changed)
            )

    # --- report --------------------------------------------------------------------------

    def _write_report(self) -> None:
        from pixelwise.report.plots import plot_history

        if self.history:
            write_csv_atomic(self.run_dir / "metrics.csv", self.history)
            plot_history(self.history, self.run_dir)
        self.write_overlays(self.run_dir / "overlays", self.config.train.overlays)

    @torch.no_grad()
    def write_overlays(self, folder: str | Path, count: int) -> list[Path]:
        """Draw image | target | prediction for ``count`` validation images, evenly spaced."""
        from pixelwise.report.palette import save_overlay

        count = min(count, len(self.val_set))
        if count <= 0:
            return []
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        background = 0 if self.class_names[0].lower() in ("background", "bg") else None
        indices = np.unique(np.linspace(0, len(self.val_set) - 1, count).round().astype(int))
        was_training = self.model.training
        self.model.eval()
        written = []
        try:
            for index in indices.tolist():
                sample = self.val_set[index]
                images, _, _ = self._prepare(collate_groups([sample])[0])
                with self._autocast():
                    logits = self.model(images).float()  # (1, K, h, w)
                size = tuple(logits.shape[-2:])
                path = folder / f"{_file_name(self.val_set, index)}.png"
                save_overlay(
                    path,
                    center_crop(sample["image"], size),
                    logits.argmax(dim=1)[0].cpu(),
                    center_crop(sample["mask"], size),
                    num_classes=self.num_classes,
                    background=background,
                    ignore_index=self.ignore_index,
                    class_names=self.class_names,
                )
                written.append(path)
        finally:
            self.model.train(was_training)
        return written

    def close(self) -> None:
        """Leave the process group this trainer joined and restore torch's determinism flag."""
        torch.use_deterministic_algorithms(self._previous_deterministic)
        if self._owns_group:
            distributed.destroy_process_group()
            self._owns_group = False

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _file_name(dataset: Dataset, index: int) -> str:
    sample_id = getattr(dataset, "sample_id", None)
    try:
        name = str(sample_id(index)) if callable(sample_id) else f"val_{index:03d}"
    except NotImplementedError:
        name = f"val_{index:03d}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or f"val_{index:03d}"
