"""Run state: the progress of a run as one value, saved whole and restored whole.

:class:`RunState` is what a checkpoint's training state holds beside the optimizer, schedule,
scaler and random states: the history (``metrics.csv`` rows), the best score, the epochs done,
the training seconds, the position inside an unfinished epoch and how the run stopped.
:func:`check_resume` refuses a resume that cannot continue (no training state, another model,
no epochs or time left), each in one line; :func:`changed_keys` names the config keys that
differ from the checkpoint's (a resume with those is not an exact continuation).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixelwise._checks import message
from pixelwise._toml import flatten
from pixelwise.config import RunConfig
from pixelwise.engine.checkpoint import Checkpoint, load_checkpoint, plain, rebuild_args
from pixelwise.engine.state import restore_rng_state

logger = logging.getLogger(__name__)

# Config keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = frozenset(
    {
        "train.epochs",
        "train.out_dir",
        "train.num_workers",
        "train.overlays",
        "train.time_limit_minutes",
        "train.snapshot_minutes",
        "train.val_every",
    }
)


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


def _no_best() -> dict[str, Any]:
    return {"value": -math.inf, "epoch": 0}


@dataclasses.dataclass
class RunState:
    """The progress of a run.

    Attributes:
        epochs_done: Whole epochs trained (before a resume too).
        history: The ``metrics.csv`` rows so far.
        best: ``{"value", "epoch"}`` of the best validation of ``train.metric``.
        seconds: Training seconds before this process started (a resumed run's earlier time).
        position: Where the current epoch is (None between epochs).
        stopped_by: ``"epochs"`` or ``"time_limit"``.
        snapshots: The snapshot files written, by minute mark (this process only).
    """

    epochs_done: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    best: dict[str, Any] = dataclasses.field(default_factory=_no_best)
    seconds: float = 0.0
    position: EpochPosition | None = None
    stopped_by: str = "epochs"
    snapshots: dict[float, Path] = dataclasses.field(default_factory=dict)

    def to_state(self, seconds: float) -> dict[str, Any]:
        """The saved part, with ``seconds`` trained so far (plain containers and tensors)."""
        return {
            "best": dict(self.best),
            "history": [dict(row) for row in self.history],
            "seconds": float(seconds),
            "position": None if self.position is None else self.position.to_state(),
        }

    @classmethod
    def from_checkpoint(cls, epoch: int, state: Mapping[str, Any]) -> RunState:
        """The state a checkpoint of ``epoch`` whole epochs recorded."""
        return cls(
            epochs_done=int(epoch),
            history=[dict(row) for row in state.get("history", [])],
            best=dict(state["best"]),
            seconds=float(state.get("seconds", 0.0)),
            position=EpochPosition.from_state(state.get("position")),
        )


def check_resume(
    checkpoint: Any,
    path: str | Path,
    *,
    model: tuple[object, object],
    epochs: int,
    time_limit_minutes: float,
) -> None:
    """Refuse a resume that cannot continue: a checkpoint without training state, of another
    model (``model`` is (ours, theirs) as comparable values), or with no epochs or time left."""
    if checkpoint.training is None:
        raise ValueError(
            message(
                f"checkpoint {path}",
                "hold the training state to resume from",
                "weights only",
                "resume from a run's last.pt (or best.pt)",
            )
        )
    ours, theirs = model
    if ours != theirs:
        raise ValueError(
            message(
                f"the model of checkpoint {path}",
                f"match the config's model {ours}",
                theirs,
                "resume with the checkpoint's own config (leave out the config file)",
            )
        )
    if checkpoint.epoch >= epochs:
        raise ValueError(
            message(
                "train.epochs",
                f"exceed the {checkpoint.epoch} epochs of checkpoint {path} to continue",
                epochs,
                f"e.g. --set train.epochs={checkpoint.epoch + 10}",
            )
        )
    minutes = float(checkpoint.training.get("seconds", 0.0)) / 60.0
    if time_limit_minutes > 0 and minutes >= time_limit_minutes:
        raise ValueError(
            message(
                "train.time_limit_minutes",
                f"exceed the {minutes:.2f} minutes checkpoint {path} has trained",
                time_limit_minutes,
                f"e.g. --set train.time_limit_minutes={math.ceil(minutes) + 15}, or 0 for none",
            )
        )


def changed_keys(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The keys of two configs (nested dicts) whose values differ, apart from those a resume
    may change."""
    a, b = flatten(ours), flatten(theirs)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [k for k in changed if k not in RESUMABLE_CHANGES]


def model_identity(model: nn.Module) -> tuple[object, object]:
    """What must match for a checkpoint to resume into ``model``: the registry name and
    arguments, or for a model built outside the registry its class and weight shapes."""
    name = getattr(model, "pixelwise_name", None)
    if name is not None:
        return name, plain(rebuild_args(model.pixelwise_args))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return type(model).__name__, shapes


def checkpoint_identity(checkpoint: Any, model: nn.Module) -> tuple[object, object]:
    if getattr(model, "pixelwise_name", None) is not None:
        return checkpoint.model_name, plain(rebuild_args(checkpoint.model_args))
    shapes = {k: list(v.shape) for k, v in checkpoint.state_dict.items()}
    return type(model).__name__, shapes


def load_resumable(
    path: str | Path, model: nn.Module, *, epochs: int, time_limit_minutes: float
) -> Checkpoint:
    """Read ``path`` and check that the run can continue from it into ``model``."""
    checkpoint = load_checkpoint(path)
    theirs = None
    if checkpoint.training is not None:
        theirs = checkpoint_identity(checkpoint, model)
    check_resume(
        checkpoint,
        path,
        model=(model_identity(model), theirs),
        epochs=epochs,
        time_limit_minutes=time_limit_minutes,
    )
    return checkpoint


def restore_training(
    checkpoint: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generators: Mapping[str, torch.Generator],
) -> RunState:
    """Put a checkpoint's weights, optimizer, schedule, scaler and random states back; returns
    its :class:`RunState`."""
    state = checkpoint.training
    model.load_state_dict(checkpoint.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"], generators)
    return RunState.from_checkpoint(checkpoint.epoch, state)


def restore_class_weights(parts: Any, loss: object, state: Mapping[str, Any]) -> None:
    """The class weights the checkpointed run trained with, into ``parts`` and the loss."""
    weights = state.get("class_weights")
    if weights is None or parts.class_weights is None:
        return
    parts.class_weights = weights
    buffer = getattr(getattr(loss, "loss", None), "weight", None)
    if isinstance(buffer, torch.Tensor) and buffer.shape == weights.shape:
        buffer.copy_(weights)


def warn_config_changes(ours: Mapping[str, Any], saved: Mapping[str, Any], as_config: bool) -> None:
    """Log the config keys that differ from the checkpoint's (``as_config``: both are run
    configs, compared after filling in defaults)."""
    theirs = RunConfig.from_dict(saved).to_dict() if as_config else dict(saved)
    changed = changed_keys(ours, theirs)
    if changed:
        logger.warning(
            "resuming with a changed config (%s): not an exact continuation", ", ".join(changed)
        )
