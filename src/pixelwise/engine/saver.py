"""The checkpoint policy: ``last.pt`` at every validation, ``best.pt`` when the score improves,
``snapshot_<m>min.pt`` at the time marks; each with its ``.safetensors`` beside it.

Only the main process writes; the others keep the names, so that every process returns the
same result.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pixelwise._files import atomic_write
from pixelwise.engine.checkpoint import load_checkpoint, save_checkpoint
from pixelwise.engine.resume import EpochPosition

logger = logging.getLogger(__name__)


def snapshot_name(minutes: float) -> str:
    """``snapshot_15min.pt`` for 15, ``snapshot_0.5min.pt`` for 0.5."""
    return f"snapshot_{minutes:g}min.pt"


class CheckpointSaver:
    """Writes a run's checkpoints into its folder.

    Args:
        run_dir: The run folder.
        meta: Returns what every checkpoint records beside the weights: ``class_names``,
            ``ignore_index``, ``normalisation`` and ``config`` (read at each save).
        writes: Whether this process writes (the main process of a distributed run).
    """

    def __init__(
        self, run_dir: Path, meta: Callable[[], Mapping[str, Any]], *, writes: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.writes = writes
        self.snapshots: dict[float, Path] = {}

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def _save(self, path: Path, model: nn.Module, **fields: Any) -> None:
        save_checkpoint(path, model=model, **self.meta(), **fields)

    def save_validated(
        self,
        model: nn.Module,
        *,
        epoch: int,
        metrics: Mapping[str, Any],
        training: Mapping[str, Any],
        improved: bool,
    ) -> None:
        """``last.pt`` after a validation, and ``best.pt`` too when it improved the score."""
        if not self.writes:
            return
        fields = {"epoch": epoch, "metrics": metrics, "training": training}
        self._save(self.last_path, model, **fields)
        if improved or not self.best_path.exists():
            self._save(self.best_path, model, **fields)

    def adopt_best(self, checkpoint: str | Path, best_epoch: int) -> bool:
        """Copy the ``best.pt`` (and its ``.safetensors``) beside a resumed ``checkpoint`` into
        this run folder when it is the run's best so far (its epoch is ``best_epoch``), so
        that the resumed run's folder has a ``best.pt`` from the start. Returns whether it did;
        without one, the resumed run's first validation writes ``best.pt``."""
        source = Path(checkpoint).with_name("best.pt")
        if not self.writes or not source.is_file():
            return False
        if load_checkpoint(source).epoch != best_epoch:
            return False
        for suffix in (".pt", ".safetensors"):
            origin = source.with_suffix(suffix)
            if origin.is_file():
                with origin.open("rb") as stream:
                    atomic_write(
                        self.best_path.with_suffix(suffix),
                        lambda out, stream=stream: shutil.copyfileobj(stream, out),
                    )
        return True

    def save_snapshot(
        self,
        model: nn.Module,
        minutes: float,
        *,
        position: EpochPosition,
        batches: int,
        seconds: float,
        iteration: int,
        training: Mapping[str, Any],
    ) -> Path:
        """``snapshot_<minutes>min.pt``: the run as it is now, resumable, not validated.

        Args:
            position: Where the current epoch is; ``batches`` its batches in all.
            seconds, iteration: Training time and optimizer steps so far.
        """
        path = self.run_dir / snapshot_name(minutes)
        self.snapshots[minutes] = path
        if not self.writes:
            return path
        metrics = {
            "train_loss": position.loss_sum / max(position.images, 1),
            "minutes": seconds / 60.0,
            "iteration": iteration,
        }
        epoch = position.epoch + (position.batch >= batches)
        self._save(path, model, epoch=epoch, metrics=metrics, training=training)
        logger.info("snapshot at %.2f minutes: %s", seconds / 60.0, path)
        return path
