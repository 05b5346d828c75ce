"""A progress object that kills a run right after an epoch's checkpoint (resume tests)."""

from __future__ import annotations


class Stop(Exception):
    """Stands for the run being killed right after an epoch's checkpoint."""


class StopAfter:
    """Raises :class:`Stop` at the end of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_end(self, epoch, epochs, row):
        if epoch == self.epoch:
            raise Stop
