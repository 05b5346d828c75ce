"""The training loop: one run, epoch by epoch, over the parts that :mod:`.recipe` (from a
config) or :func:`pixelwise.fit` (from the user's own model and data) assembled.

:meth:`Trainer.fit` joins the process group when launched distributed, sets the determinism
flag and seeds from ``train.seed`` (:func:`.state.run_session`, undone when it returns); trains
with the step of :class:`~pixelwise.engine.task.SegmentationTask` and the optimizer and schedule
of :mod:`.schedule`; validates every ``train.val_every`` epochs and after the last one with
:func:`pixelwise.inference.evaluate` — the function ``pixelwise evaluate`` uses, so both score
the same pixels; and writes (rank 0) ``config.toml``, ``metrics.csv`` (a row per epoch, NaN
where an epoch was not validated), the checkpoints of :class:`.saver.CheckpointSaver` and the
report of :mod:`.report` into a new run folder. With ``train.ema`` the validation, the
checkpoints and the weights left in the network at the end are the moving average of the
weights (:mod:`.average`); the trained weights travel in the training state.

Time budget: ``train.time_limit_minutes`` (wall clock from the start of :meth:`Trainer.fit`,
validation and checkpoints included, continued across resumes) ends the run at the end of the
iteration that crosses it, mid-epoch if need be: that partial epoch is validated and
checkpointed (its row has a fractional ``epoch``, e.g. 3.4). ``train.snapshot_minutes`` saves
``snapshot_<m>min.pt`` at the first iteration past each mark.

Resume: ``fit(resume=checkpoint)`` restores the weights, optimizer, schedule, scaler, the
:class:`.resume.RunState` and every random state. With ``deterministic = true``, a
single-process run stopped after epoch k (or mid-epoch, with ``num_workers = 0``) and resumed
ends with exactly the weights of an uninterrupted run; a multi-process resume restores rank
0's random states on every rank (correct, not bit-identical). A resumed run writes a new run
folder whose ``metrics.csv`` repeats the earlier rows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pixelwise._checks import message
from pixelwise._files import remove_stale_temporaries, write_text_atomic
from pixelwise._toml import dump_toml
from pixelwise.config import RunConfig
from pixelwise.engine import distributed
from pixelwise.engine.average import WeightAverage
from pixelwise.engine.events import FitResult, Progress, emit, unvalidated_metrics
from pixelwise.engine.interrupt import StopRequest
from pixelwise.engine.loaders import eval_loader, single_group, train_loader
from pixelwise.engine.recipe import (
    RunParts,
    build_optimization,
    build_parts,
    build_task,
    model_encoder,
    resolve_device,
)
from pixelwise.engine.report import write_report
from pixelwise.engine.resume import (
    EpochPosition,
    RunState,
    load_resumable,
    restore_class_weights,
    restore_training,
    warn_config_changes,
)
from pixelwise.engine.runs import create_run_dir, epoch_row, write_csv_atomic
from pixelwise.engine.saver import CheckpointSaver
from pixelwise.engine.schedule import TrainingClock
from pixelwise.engine.state import rng_state, run_session
from pixelwise.engine.task import check_finite
from pixelwise.inference.evaluate import evaluate

logger = logging.getLogger(__name__)


class Trainer:
    """Trains and validates one run; see the module docstring for what a run does.

    Args:
        config: The run's config; its ``[train]``, ``[optim]`` and ``[schedule]`` tables drive
            the loop, and without ``parts`` the others build the data, model and loss.
        run_dir: The run folder; None for a new ``<train.out_dir>/<timestamp>`` folder. It is
            created by :meth:`fit`, must be new or empty, and is never overwritten.
        progress: A :class:`Progress`-like object or a function ``(event, info)``.
        parts: The model, data and loss when they are not built from ``config`` (see
            :func:`pixelwise.fit`).
        record: The config recorded in the run folder and the checkpoints (default:
            ``config.to_dict()``).

    Building a trainer has no global side effect; :meth:`fit` has them while it runs.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        progress: Progress | Callable[[str, dict], None] | None = None,
        parts: RunParts | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(config, RunConfig):
            raise TypeError(
                message("config", "be a RunConfig", type(config).__name__, "use load_config()")
            )
        self.config, self.progress, self.requested_run_dir = config, progress, run_dir
        train = config.train
        self.dist = distributed.context()
        self.device = resolve_device(train.device, self.dist)
        self.parts = parts or build_parts(config, device=self.device, rank=self.dist.rank)
        self.record = dict(record) if record is not None else config.to_dict()
        self.task = build_task(self.parts, train, self.device)
        self.loader_generator = torch.Generator().manual_seed(train.seed)
        self.augment_generator = self.parts.augment_generator or torch.Generator()
        self.train_loader = train_loader(
            self.parts.train_set, train, generator=self.loader_generator, dist=self.dist
        )
        self.train_sampler = self.train_loader.sampler
        self.val_loader = None if self.val_set is None else self.make_loader(self.val_set)
        self.clock = TrainingClock(train.time_limit_minutes, train.snapshot_minutes)
        self.total_steps = train.epochs * len(self.train_loader)
        self.encoder = model_encoder(self.model, config) if train.freeze_encoder > 0 else None
        self.optimizer, self.scheduler, self.scaler = build_optimization(
            self.model,
            self.config,
            factory=self.parts.optimizer,
            steps=self.total_steps,
            fraction=lambda: self.clock.fraction(),  # the clock may be replaced (tests)
            has_budget=self.clock.limit > 0,
            amp=self.task.amp,
        )
        # train.ema: the moving average of the weights, which validation and checkpoints use.
        self.average = WeightAverage(self.model, train.ema) if train.ema > 0 else None
        self._trained_weights: dict[str, torch.Tensor] | None = None  # while it is applied
        self.state, self.stop = RunState(), StopRequest()
        self.instances: dict[str, dict] = {}  # instance data: the post-processing recorded
        self.run_dir: Path | None = None

    def make_loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation loader over ``dataset``: in order, this process's share only."""
        return eval_loader(dataset, self.config.train, dist=self.dist)

    @property
    def model(self) -> nn.Module:
        """The network (unwrapped)."""
        return self.task.model

    @property
    def val_set(self) -> Dataset | None:
        return self.parts.val_set

    @property
    def normalisation(self) -> dict:
        """The input normalisation (settable, e.g. to evaluate a checkpoint's weights)."""
        return self.task.normalisation

    @normalisation.setter
    def normalisation(self, value: Mapping[str, Sequence[float]]) -> None:
        self.task.normalisation = value

    @property
    def batches_per_epoch(self) -> int:
        """Batches of a whole epoch (a resumed partial epoch has fewer left)."""
        return math.ceil(len(self.train_sampler.sampler) / self.config.train.batch_size)

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """The run's global state (:func:`.state.run_session`) and the DDP wrapper."""
        with (
            run_session(self.dist, self.device, self.config.train),
            self.task.distributed(self.dist),
            self.stop.listening(),
        ):
            yield

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train for ``train.epochs`` epochs or until ``train.time_limit_minutes`` (continuing a
        checkpoint's run with ``resume``), validating and checkpointing as configured; returns
        what happened."""
        with self._session():
            if resume is not None:
                self._resume(resume)
            self.run_dir = self._create_run_dir()
            self.saver = CheckpointSaver(self.run_dir, self._meta, writes=self.dist.is_main)
            if resume is not None:
                self.saver.adopt_best(resume, int(self.state.best["epoch"]))
            if self.dist.is_main:
                write_text_atomic(self.run_dir / "config.toml", dump_toml(self.record))
                emit(self.progress, "run_start", self._start_info())
            self.clock.start(self.state.seconds)
            metrics: dict[str, Any] = {}
            for epoch in range(self.state.epochs_done, self.config.train.epochs):
                metrics = self._run_epoch(epoch) or metrics
                if self.state.stopped_by != "epochs":
                    break
            return self._finish(metrics)

    def _start_info(self) -> dict[str, Any]:
        train = self.config.train
        return {
            "run_dir": self.run_dir,
            "model": getattr(self.model, "pixelwise_name", None) or type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "train_size": len(self.parts.train_set),
            "val_size": 0 if self.val_set is None else len(self.val_set),
            "epochs": train.epochs,
            "start_epoch": self.state.epochs_done,
            "batches": self.batches_per_epoch,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "time_limit_minutes": train.time_limit_minutes,
            "minutes_done": self.state.seconds / 60.0,
        }

    def _meta(self) -> dict[str, Any]:
        return {
            "class_names": self.task.class_names,
            "ignore_index": self.task.ignore_index,
            "normalisation": self.normalisation,
            "config": self.record,
        }

    @contextlib.contextmanager
    def _averaged(self) -> Iterator[None]:
        """The network holds the moving average of its weights inside the block (with
        ``train.ema``; else it is left as it is), its trained weights after it."""
        if self.average is None or self._trained_weights is not None:
            yield
            return
        with self.average.applied(self.model) as trained:
            self._trained_weights = trained
            try:
                yield
            finally:
                self._trained_weights = None

    def _finish(self, metrics: dict[str, Any]) -> FitResult:
        state, overlays = self.state, self.config.train.overlays
        if self.average is not None and self.average.updates:
            # The run's weights are the average from here on, as its checkpoints hold them.
            self.model.load_state_dict(self.average.weights())
        if self.dist.is_main:
            write_report(self.run_dir, state.history, self.task.segmenter(), self.val_set, overlays)
            if self.config.data.layout == "instances" and self.val_set is not None:
                from pixelwise.engine.instances import record_chosen_instances

                paths = (self.saver.best_path, self.saver.last_path)
                self.instances = record_chosen_instances(paths, self.val_set, self.device)
        distributed.barrier()
        result = FitResult.of(
            state,
            self.saver,
            metric=self.config.train.metric,
            metrics=metrics,
            minutes=self.clock.seconds() / 60.0,
            iterations=int(self.scheduler.last_epoch),
        )
        if self.dist.is_main:
            emit(self.progress, "run_end", result)
        return result

    def _run_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Train one epoch, validate it when due; returns its metrics (None: not validated)."""
        train, main = self.config.train, self.dist.is_main
        if main:
            emit(self.progress, "epoch_start", epoch + 1, train.epochs, self.batches_per_epoch)
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train_loss, speed = self._train_epoch(epoch)
        position = self.state.position  # None when the epoch ran to its end
        self.state.epochs_done = epoch + (position is None)
        out_of_time = (
            position is not None or self.stop.requested or self.clock.over(self._seconds())
        )
        due = (epoch + 1) % train.val_every == 0 or epoch + 1 == train.epochs
        with self._averaged():  # validated and saved: the moving average, with train.ema
            validate = (due or out_of_time) and self.val_set is not None
            metrics = self.evaluate() if validate else None
            row = epoch_row(
                epoch + 1,
                lr=lr,
                train_loss=train_loss,
                metrics=metrics or unvalidated_metrics(self.task.class_names),
                seconds=time.perf_counter() - start,
                images_per_second=speed,
            )
            if position is not None:  # stopped mid-epoch: how far, e.g. 3.4
                row["epoch"] = round(epoch + position.batch / self.batches_per_epoch, 4)
            row["iteration"] = int(self.scheduler.last_epoch)
            row["minutes"] = self._seconds() / 60.0
            self.state.history.append(row)
            if metrics is not None or (self.val_set is None and (due or out_of_time)):
                self._record(epoch, train_loss, metrics)
        if main:
            write_csv_atomic(self.run_dir / "metrics.csv", self.state.history)
            emit(self.progress, "epoch_end", epoch + 1, train.epochs, row)
        more = epoch + 1 < train.epochs
        if self.stop.requested:
            self.state.stopped_by = "interrupted"
        elif position is not None or (more and self.clock.over(self._seconds())):
            self.state.stopped_by = "time_limit"
        return metrics

    def _record(self, epoch: int, train_loss: float, metrics: dict[str, Any] | None) -> None:
        """Update the best score, write last.pt (and best.pt). Without validation data every
        checkpoint is the best so far."""
        metric, best = self.config.train.metric, self.state.best
        value = math.nan if metrics is None else float(metrics[metric])
        improved = best["epoch"] == 0 or metrics is None or value > best["value"]
        if improved:
            self.state.best = {"value": value, "epoch": epoch + 1}
        logger.info("epoch %d: train loss %.4f, val %s %.4f", epoch + 1, train_loss, metric, value)
        self.saver.save_validated(
            self.model,
            epoch=self.state.epochs_done,
            metrics={"train_loss": train_loss, **(metrics or {})},
            training=self.training_state(),
            improved=improved,
        )

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data (the rest of it after a resume mid-epoch), or less
        when the time budget runs out (then ``state.position`` stays set); returns (mean loss,
        images per second)."""
        position = self._begin_epoch(epoch)
        self.task.train_model.train()
        batches, world = self.batches_per_epoch, self.dist.world_size
        start = tick = time.perf_counter() - position.seconds
        for index, groups in enumerate(self.train_loader, start=position.batch + 1):
            batch = single_group(groups)
            n = batch["image"].shape[0]
            value = float(self._step(batch))
            check_finite(value, f"training loss (epoch {epoch + 1}, batch {index})")
            now = time.perf_counter()
            position.batch, position.seconds = index, now - start
            position.loss_sum, position.images = position.loss_sum + value * n, position.images + n
            if self.dist.is_main:
                speed = n * world / max(now - tick, 1e-9)
                emit(self.progress, "batch_end", epoch + 1, index, batches, value, speed)
            tick = now
            if self._after_iteration():
                break
        totals = torch.tensor([position.loss_sum, position.images], dtype=torch.float64)
        totals = distributed.all_reduce_sum(totals.to(self.device))
        if position.batch >= self.batches_per_epoch:
            self.state.position = None
        loss = float(totals[0] / totals[1].clamp_min(1))
        return loss, float(totals[1]) / max(position.seconds, 1e-9)

    def _begin_epoch(self, epoch: int) -> EpochPosition:
        """The epoch's position: where a resumed checkpoint left it, else at its start."""
        sampler = self.train_sampler.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        position = self.state.position
        if position is not None and position.epoch == epoch:
            # The epoch's order again (the loader draws it from this state), minus what ran.
            self.loader_generator.set_state(position.loader_state)
            self.train_sampler.skip = position.batch * self.config.train.batch_size
        else:
            position = EpochPosition(epoch, loader_state=self.loader_generator.get_state())
        self.state.position = position
        return position

    def encoder_frozen(self) -> bool:
        """Whether ``train.freeze_encoder`` holds the encoder now: within that share of the
        time budget (or, without one, of the run's iterations)."""
        share = self.config.train.freeze_encoder
        if self.encoder is None or share <= 0:
            return False
        if self.clock.limit > 0:
            used = self.clock.fraction()
        else:
            used = self.scheduler.last_epoch / max(1, self.total_steps)
        return used < share

    def _step(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        frozen = self.encoder_frozen()
        if self.encoder is not None:
            # A frozen encoder keeps its batch-norm statistics too (eval mode) and gets no
            # update (its gradients are dropped before the optimizer step).
            self.encoder.train(not frozen and self.model.training)
        loss = self.task(batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if frozen:
            for parameter in self.encoder.parameters():
                parameter.grad = None
        if self.config.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        return loss.detach()

    def _after_iteration(self) -> bool:
        """Save the snapshots that are due; whether to stop (budget used up, or Ctrl-C)."""
        if self.stop.shared(self.dist, self.device):
            return True
        if not self.clock.active:
            return False
        seconds = self._seconds()
        for minutes in self.clock.due(seconds):
            with self._averaged():
                self._save_snapshot(minutes, seconds)
        return self.clock.over(seconds)

    def _save_snapshot(self, minutes: float, seconds: float) -> None:
        self.saver.save_snapshot(
            self.model,
            minutes,
            position=self.state.position,
            batches=self.batches_per_epoch,
            seconds=seconds,
            iteration=int(self.scheduler.last_epoch),
            training=self.training_state(),
        )

    def _seconds(self) -> float:
        """Training seconds by rank 0's clock, so that every process stops at one iteration."""
        seconds = self.clock.seconds() if self.dist.is_main else 0.0
        if not self.dist.enabled:
            return seconds
        shared = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        return float(distributed.all_reduce_sum(shared)[0])

    def evaluate(self, data: Dataset | DataLoader | None = None) -> dict[str, Any]:
        """Metrics of the current model over ``data`` (default: the validation set) by
        :func:`pixelwise.inference.evaluate`, with ``loss`` (each image's training loss,
        averaged; NaN where it cannot be computed) and ``confusion_matrix``.

        A data set is split across the processes of a distributed run; a DataLoader is taken
        as this process's share. Every process must call this (``all_reduce`` sums the counts).
        """
        if data is None:
            loader = self.val_loader
        else:
            loader = data if isinstance(data, DataLoader) else self.make_loader(data)
        distributed.broadcast_buffers(self.model)
        reduce = distributed.all_reduce_sum if self.dist.enabled else None
        with self.task.autocast():
            return evaluate(
                self.task.segmenter(),
                loader,
                loss=self.task.image_loss,
                boundary=False,
                reduce=reduce,
            )

    def _create_run_dir(self) -> Path:
        run_dir = None
        if self.dist.is_main:
            run_dir = create_run_dir(self.config.train.out_dir, self.requested_run_dir)
        return Path(distributed.broadcast_object(str(run_dir) if run_dir else None))

    def training_state(self) -> dict[str, Any]:
        """What resuming needs beyond the weights: optimizer, schedule, scaler, random states
        and the :class:`RunState` (plain containers and tensors)."""
        weights = self.parts.class_weights
        average = None
        if self.average is not None:
            trained = self._trained_weights
            average = self.average.state(
                trained if trained is not None else self.model.state_dict()
            )
        return {
            "average": average,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self._generators()),
            "class_weights": None if weights is None else weights.cpu(),
            "world_size": self.dist.world_size,
            **self.state.to_state(self.clock.seconds()),
        }

    def _generators(self) -> dict[str, torch.Generator]:
        return {"loader": self.loader_generator, "augment": self.augment_generator}

    def _resume(self, path: str | Path) -> None:
        train = self.config.train
        if self.dist.is_main:
            remove_stale_temporaries(Path(path).parent)  # the killed run's half-written saves
        checkpoint = load_resumable(
            path, self.model, epochs=train.epochs, time_limit_minutes=train.time_limit_minutes
        )
        warn_config_changes(self.record, checkpoint.config, self.record == self.config.to_dict())
        self.state = restore_training(
            checkpoint,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            generators=self._generators(),
        )
        self._restore_average(checkpoint.training.get("average"))
        self.normalisation = dict(checkpoint.normalisation)
        restore_class_weights(self.parts, self.task.loss_fn, checkpoint.training)
        if self.dist.enabled and checkpoint.training.get("world_size") == 1:
            logger.warning("resuming a single-process run in %d processes", self.dist.world_size)
        logger.info("resumed from %s after epoch %d", path, checkpoint.epoch)

    def _restore_average(self, saved: Mapping[str, Any] | None) -> None:
        """After the checkpoint's weights are loaded: with ``train.ema`` they become the
        average and the network gets the trained weights back; without it, a checkpoint of a
        run that averaged resumes from its trained weights."""
        if self.average is not None:
            self.average.restore(self.model, saved)
        elif saved:
            self.model.load_state_dict(saved["trained_weights"])

    def close(self) -> None:
        """Nothing to release (:meth:`fit` undoes its global state); for ``with`` blocks."""

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
