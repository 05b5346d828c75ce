"""Ctrl-C as a request to stop: the run ends at the end of the current iteration as it does at
its time budget (the partial epoch validated, ``last.pt`` and the report written), instead of a
traceback and a run folder without them. A second Ctrl-C stops at once."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import torch

from pixelwise.engine import distributed

logger = logging.getLogger(__name__)


class StopRequest:
    """Whether the user asked the run to stop (SIGINT while :meth:`listening`)."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stopping after this iteration (Ctrl-C again to stop at once)")

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Catch Ctrl-C in this block (only in the main thread, where signals arrive)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def shared(self, dist: distributed.DistContext, device: torch.device) -> bool:
        """Whether any process was asked to stop, so that all stop at the same iteration."""
        if not dist.enabled:
            return self.requested
        flag = torch.tensor([float(self.requested)], dtype=torch.float64, device=device)
        self.requested = bool(distributed.all_reduce_sum(flag)[0] > 0)
        return self.requested
