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


def interrupted_and_resumed(config, after: int = 2):
    """Train ``config`` uninterrupted; again, killed after epoch ``after``; then resume the
    killed run from its ``last.pt``. Returns (uninterrupted result, killed run folder, resumed
    result)."""
    import pytest

    from pixelwise.engine.trainer import Trainer

    with Trainer(config) as trainer:
        uninterrupted = trainer.fit()
    with Trainer(config, progress=StopAfter(after)) as trainer, pytest.raises(Stop):
        trainer.fit()
    killed = sorted(p for p in uninterrupted.run_dir.parent.iterdir())[-1]
    with Trainer(config) as trainer:
        resumed = trainer.fit(resume=killed / "last.pt")
    return uninterrupted, killed, resumed
