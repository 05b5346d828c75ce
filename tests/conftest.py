"""Settings shared by the whole suite.

The suite runs on two pytest-xdist workers (pyproject's addopts); each uses one torch thread,
so the two workers fill two cores without oversubscribing them. Most tests run many tiny
operations, for which one thread is also the fastest.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
