"""An exponential moving average of the weights (``train.ema``), the weights a run validates,
checkpoints and predicts with.

After every optimizer step the average moves towards the network's weights and buffers
(batch-norm statistics too): ``a ← d·a + (1 − d)·w`` with the decay
``d = min(train.ema, (1 + n) / (10 + n))`` after ``n`` updates (the first copies the weights), so that the first updates are
not dominated by the random initial decoder (the warm-up of TensorFlow's moving averages).
With a decay of 0.99 the average spans the last ≈ 100 iterations: the noise of single
iterations at a small batch is averaged out, at the cost of one copy of the weights.

:meth:`WeightAverage.applied` puts the average into the network for validation and saving
and the trained weights back afterwards; a checkpoint's ``state_dict`` is the average, and its
training state keeps the trained weights (``"trained_weights"``) and the update count, so that
a resumed run continues both. Built on :class:`torch.optim.swa_utils.AveragedModel`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from pixelwise._checks import message

#: The decay's warm-up: (1 + n) / (WARMUP + n) after n updates.
WARMUP = 10


def decay_after(decay: float, updates: int) -> float:
    """The decay used for the update after ``updates`` earlier ones."""
    return min(decay, (1.0 + updates) / (WARMUP + updates))


class WeightAverage:
    """The moving average of ``model``'s weights and buffers with the given ``decay`` in
    (0, 1); see the module docstring."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(message("decay", "lie in (0, 1)", repr(decay)))
        self.decay = float(decay)
        self.average = AveragedModel(model, avg_fn=self._average, use_buffers=True)
        self._step_decay = 0.0  # the decay of the update under way

    def _average(
        self, averaged: torch.Tensor, current: torch.Tensor, _updates: torch.Tensor
    ) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current  # integer buffers (batch-norm's count of batches): the latest
        return averaged + (current - averaged) * (1.0 - self._step_decay)

    @property
    def updates(self) -> int:
        """Optimizer steps averaged so far."""
        return int(self.average.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights (after an optimizer step); the first
        update copies them."""
        self._step_decay = decay_after(self.decay, self.updates)
        self.average.update_parameters(model)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed as ``model.state_dict()``."""
        return self.average.module.state_dict()

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """``model`` holds the average inside the block (yields a copy of the trained weights)
        and its trained weights again after it. Before the first update the model is left
        as it is."""
        if self.updates == 0:
            yield {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.weights())
        try:
            yield trained
        finally:
            model.load_state_dict(trained)

    def state(self, trained: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """What a checkpoint's training state keeps to resume: the trained weights (the
        checkpoint's own are the average) and the update count."""
        return {
            "trained_weights": {k: v.detach().cpu() for k, v in trained.items()},
            "updates": self.updates,
            "decay": self.decay,
        }

    def restore(self, model: nn.Module, state: Mapping[str, Any] | None) -> None:
        """Resume: the average is ``model``'s weights now (the checkpoint's), and ``model``
        gets the trained weights of ``state`` back. A checkpoint saved without an average
        starts one from its weights."""
        self.average.module.load_state_dict(model.state_dict())
        if not state:
            self.average.n_averaged.fill_(0)
            return
        self.average.n_averaged.fill_(int(state["updates"]))
        model.load_state_dict(state["trained_weights"])
