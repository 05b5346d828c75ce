"""What a run reports as it goes: the :class:`Progress` callbacks and the :class:`FitResult`.

Progress is an object with any of the methods of :class:`Progress`, or a function
``progress(event, info)``; the CLI supplies one that draws bars on a terminal and prints plain
lines elsewhere. Only rank 0 reports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pixelwise.metrics import SUMMARY_KEYS


class Progress:
    """Progress callbacks, all no-ops here: subclass and override what you need.

    Called on rank 0 only; epochs and batches count from 1.
    """

    def run_start(self, info: Mapping[str, Any]) -> None:
        """``info``: run_dir, model, parameters, train_size, val_size, epochs, start_epoch,
        batches (per epoch), device, world_size, time_limit_minutes (0 without a budget),
        minutes_done (trained before a resume)."""

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
        stopped_by: ``"epochs"`` (all of ``train.epochs`` ran), ``"time_limit"`` or
            ``"interrupted"`` (Ctrl-C).
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

    @classmethod
    def of(
        cls, state: Any, saver: Any, *, metric: str, metrics: dict, minutes: float, iterations: int
    ) -> FitResult:
        """The result of a run whose :class:`~pixelwise.engine.resume.RunState` is ``state``
        and whose checkpoints ``saver`` (a :class:`~pixelwise.engine.saver.CheckpointSaver`)
        wrote."""
        return cls(
            run_dir=saver.run_dir,
            epochs=state.epochs_done,
            metric=metric,
            best_value=float(state.best["value"]),
            best_epoch=int(state.best["epoch"]),
            metrics=metrics,
            history=list(state.history),
            best_path=saver.best_path,
            last_path=saver.last_path,
            stopped_by=state.stopped_by,
            minutes=minutes,
            iterations=iterations,
            snapshots=dict(saver.snapshots),
        )


def emit(progress: object, event: str, *args: Any) -> None:
    if progress is None:
        return
    method = getattr(progress, event, None)
    if callable(method):
        method(*args)
    elif callable(progress) and not isinstance(progress, Progress):
        info = args[0] if event == "run_start" else {"args": args}
        progress(event, info)


def unvalidated_metrics(class_names: Sequence[str]) -> dict[str, Any]:
    """Validation metrics of an epoch that was not validated: NaN throughout."""
    classes = {name: {"iou": math.nan, "dice": math.nan} for name in class_names}
    return {**dict.fromkeys(("loss", *SUMMARY_KEYS), math.nan), "classes": classes}


class Callbacks(Progress):
    """Several progress objects (or ``(event, info)`` functions) called in order."""

    def __init__(self, callbacks: Sequence[object]) -> None:
        self.callbacks = list(callbacks)

    def _all(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            emit(callback, event, *args)

    def run_start(self, info: Mapping[str, Any]) -> None:
        self._all("run_start", info)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._all("epoch_start", epoch, epochs, batches)

    def batch_end(
        self, epoch: int, batch: int, batches: int, loss: float, images_per_second: float
    ) -> None:
        self._all("batch_end", epoch, batch, batches, loss, images_per_second)

    def epoch_end(self, epoch: int, epochs: int, row: Mapping[str, Any]) -> None:
        self._all("epoch_end", epoch, epochs, row)

    def run_end(self, result: FitResult) -> None:
        self._all("run_end", result)
