"""Optimizers, learning-rate schedules and the training clock.

Schedules multiply the learning rate by a factor after every optimizer step: ``poly``,
``(1 − t/T) ** power``; ``cosine``, ``(1 + cos(π t/T)) / 2``; ``none``, 1. Over
``"iterations"`` T is the run's number of optimizer steps (epochs × batches per epoch); over
``"time"`` t/T is the share of the time budget trained so far, so the schedule ends with the
budget however many iterations fit in it.

:class:`TrainingClock` measures training wall time against the budget
(``train.time_limit_minutes``) and the snapshot marks (``train.snapshot_minutes``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from pixelwise._checks import message


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


class TrainingClock:
    """Training wall time against a budget and snapshot marks.

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

    def fraction(self) -> float:
        """The share of the budget trained so far (0 without a budget)."""
        return self.seconds() / self.limit if self.limit > 0 else 0.0

    def due(self, seconds: float) -> list[float]:
        """The marks that ``seconds`` has reached, each returned once."""
        reached = [m for m in self.pending if 60.0 * m <= seconds]
        self.pending = self.pending[len(reached) :]
        return reached

    def over(self, seconds: float) -> bool:
        """Whether ``seconds`` has used up the budget."""
        return self.limit > 0 and seconds >= self.limit


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "adam",
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Adam, or SGD with (Nesterov) momentum, as ``[optim]`` names them."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    raise ValueError(message("optimizer", "be 'adam' or 'sgd'", repr(name)))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    power: float,
    over: str,
    total_steps: int,
    fraction: Callable[[], float],
    has_budget: bool,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule as a LambdaLR stepped after every optimizer step.

    Args:
        total_steps: The run's optimizer steps (for ``over = "iterations"``).
        fraction: The share of the time budget used so far (for ``over = "time"``); read at
            every step, so it may follow a clock that is replaced later.
        has_budget: Whether the run has a time budget (``over = "time"`` needs one).
    """
    if over == "time":
        if not has_budget:
            raise ValueError(
                message(
                    'schedule.over = "time"',
                    "come with a time budget",
                    "train.time_limit_minutes = 0",
                    'set train.time_limit_minutes or use schedule.over = "iterations"',
                )
            )
        factor = time_schedule_factor(name, fraction, power)
    else:
        factor = schedule_factor(name, total_steps, power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
