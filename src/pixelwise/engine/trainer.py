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
4. Validates after every epoch: a :class:`~pixelwise.metrics.ConfusionMatrix` over the
   validation set (pixel accuracy, mean accuracy, per-class and mean IoU, Dice) and the
   validation loss; in a distributed run each process counts its share and one ``all_reduce``
   sums the matrices.
5. Writes (rank 0 only) into a new run folder: ``config.toml`` (the resolved config),
   ``metrics.csv`` (one row per epoch), ``last.pt`` every epoch and ``best.pt`` when the
   ``train.metric`` improves (each with a ``.safetensors`` beside it), and at the end
   ``loss.png``, ``miou.png`` and ``overlays/`` (predictions on a few validation images).

Resume: ``fit(resume=checkpoint)`` restores the weights, optimizer, schedule, gradient scaler,
epoch, history, best score and every random state (torch, CUDA, NumPy, Python, the DataLoader
generator, the augmentation generator). With ``deterministic = true`` and the same config, a
single-process run stopped after epoch k and resumed ends with exactly the weights of an
uninterrupted run. A resumed run writes a new run folder whose ``metrics.csv`` repeats the
earlier epochs. (A multi-process resume restores rank 0's random states on every rank, so it
continues correctly but not bit-identically.)

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
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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
_RESUMABLE_CHANGES = {"train.epochs", "train.out_dir", "train.num_workers", "train.overlays"}


class Progress:
    """Progress callbacks, all no-ops here: subclass and override what you need.

    Called on rank 0 only; epochs and batches count from 1.
    """

    def run_start(self, info: Mapping[str, Any]) -> None:
        """``info``: run_dir, epochs, start_epoch, batches (per epoch), device, world_size."""

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
        metrics: The last epoch's validation metrics (see :meth:`Trainer.evaluate`).
        history: The rows of ``metrics.csv``.
        best_path, last_path: The checkpoints.
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


def schedule_factor(name: str, total_steps: int, power: float) -> Callable[[int], float]:
    """The learning-rate factor after ``step`` optimizer steps, for LambdaLR."""

    def factor(step: int) -> float:
        t = min(step, total_steps) / max(total_steps, 1)
        if name == "poly":
            return (1.0 - t) ** power
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

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
        self._build_data()
        self._build_model()
        self._build_optimization()
        self.run_dir: Path | None = None
        self.history: list[dict] = []
        self.best: dict[str, Any] = {"value": -math.inf, "epoch": 0}
        self.start_epoch = 0

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
                    "use loss.name = 'ce', or instance data ('instances', 'synthetic') with weights = true",
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
        sampler = None
        if self.dist.enabled:
            sampler = DistributedSampler(
                self.train_set,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=train.seed,
            )
        return DataLoader(
            self.train_set,
            batch_size=train.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
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
        total = self.config.train.epochs * len(self.train_loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule_factor(schedule.name, total, schedule.power)
        )
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
        """One pass over the training data; returns (mean loss, images per second)."""
        if isinstance(self.train_loader.sampler, DistributedSampler):
            self.train_loader.sampler.set_epoch(epoch)
        self.train_model.train()
        batches, world = len(self.train_loader), self.dist.world_size
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, images
        start = tick = time.perf_counter()
        for index, groups in enumerate(self.train_loader, start=1):
            batch = self._single_group(groups)
            n = batch["image"].shape[0]
            loss = self._step(batch)
            value = float(loss)
            if not math.isfinite(value):
                raise ValueError(
                    message(
                        f"training loss (epoch {epoch + 1}, batch {index})",
                        "be finite",
                        value,
                        "lower optim.lr or set train.grad_clip",
                    )
                )
            totals += torch.tensor([value * n, n], dtype=torch.float64, device=self.device)
            now = time.perf_counter()
            speed = n * world / max(now - tick, 1e-9)
            tick = now
            if self.dist.is_main:
                _emit(self.progress, "batch_end", epoch + 1, index, batches, value, speed)
        distributed.all_reduce_sum(totals)
        seconds = time.perf_counter() - start
        return float(totals[0] / totals[1].clamp_min(1)), float(totals[1]) / max(seconds, 1e-9)

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
        """Train for ``train.epochs`` epochs (continuing a checkpoint's run with ``resume``),
        validating and checkpointing after each; returns what happened."""
        if resume is not None:
            self._resume(resume)
        train = self.config.train
        self.run_dir = self._create_run_dir()
        main = self.dist.is_main
        if main:
            write_text_atomic(self.run_dir / "config.toml", self.config.to_toml())
            _emit(
                self.progress,
                "run_start",
                {
                    "run_dir": self.run_dir,
                    "epochs": train.epochs,
                    "start_epoch": self.start_epoch,
                    "batches": len(self.train_loader),
                    "device": str(self.device),
                    "world_size": self.dist.world_size,
                },
            )
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, train.epochs):
            metrics = self._run_epoch(epoch)
        if main:
            self._write_report()
        distributed.barrier()
        result = FitResult(
            run_dir=self.run_dir,
            epochs=train.epochs,
            metric=train.metric,
            best_value=float(self.best["value"]),
            best_epoch=int(self.best["epoch"]),
            metrics=metrics,
            history=list(self.history),
            best_path=self.run_dir / "best.pt",
            last_path=self.run_dir / "last.pt",
        )
        if main:
            _emit(self.progress, "run_end", result)
        return result

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        train, main = self.config.train, self.dist.is_main
        if main:
            _emit(self.progress, "epoch_start", epoch + 1, train.epochs, len(self.train_loader))
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train_loss, speed = self._train_epoch(epoch)
        metrics = self.evaluate()
        row = epoch_row(
            epoch + 1,
            lr=lr,
            train_loss=train_loss,
            metrics=metrics,
            seconds=time.perf_counter() - start,
            images_per_second=speed,
        )
        self.history.append(row)
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
        if main:
            write_csv_atomic(self.run_dir / "metrics.csv", self.history)
            self._save(epoch + 1, {"train_loss": train_loss, **metrics}, improved)
            _emit(self.progress, "epoch_end", epoch + 1, train.epochs, row)
        return metrics

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
        if checkpoint.epoch >= self.config.train.epochs:
            raise ValueError(
                message(
                    "train.epochs",
                    f"exceed the {checkpoint.epoch} epochs of checkpoint {path} to continue",
                    self.config.train.epochs,
                    f"e.g. --set train.epochs={checkpoint.epoch + 10}",
                )
            )
        self._warn_config_changes(checkpoint.config)
        self._load_training_state(checkpoint)
        logger.info("resumed from %s after epoch %d", path, checkpoint.epoch)

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
        from pixelwise.report.overlay import save_overlay

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
