"""Seeds, determinism flags and the random-number state a resumed run needs.

A run is reproducible from ``train.seed``: :func:`seed_everything` seeds Python's ``random``,
NumPy's global generator and torch (CPU and CUDA); the trainer seeds its own generators for
the DataLoader's shuffling and worker seeds and for the augmentation; :func:`seed_worker` seeds
``random`` and NumPy inside each DataLoader worker from the worker's torch seed.

:func:`rng_state` captures all of these as tensors and plain numbers (so a checkpoint holding
them loads with ``weights_only=True``) and :func:`restore_rng_state` puts them back: a run
resumed from the checkpoint of epoch k draws exactly what the uninterrupted run drew after
epoch k.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from pixelwise.engine import distributed

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed ``random``, NumPy's global generator and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> bool:
    """Set torch's determinism flags for a run; returns the previous
    ``torch.are_deterministic_algorithms_enabled()`` so that it can be restored.

    ``deterministic=True``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op
    without a deterministic implementation warns instead of stopping the run), cuDNN
    deterministic and not benchmarking, and on CUDA ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless
    set. ``False``: cuDNN benchmarks its algorithms on CUDA (faster, not bit-reproducible).
    """
    previous = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    return previous


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def rng_state(generators: Mapping[str, torch.Generator]) -> dict:
    """Every random state of this process: torch (CPU, CUDA), NumPy, Python and ``generators``.

    Returns plain containers of tensors and numbers, as a checkpoint's ``training`` holds them.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(),
        "python": _python_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng_state(state: Mapping, generators: Mapping[str, torch.Generator]) -> None:
    """Put back what :func:`rng_state` captured (CUDA states only where the devices match)."""
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        logger.warning("CUDA random state of %d devices not restored on this machine", len(cuda))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    for name, generator in generators.items():
        saved = state["generators"].get(name)
        if saved is not None:
            generator.set_state(saved)


@contextlib.contextmanager
def run_session(dist: Any, device: torch.device, train: Any) -> Iterator[None]:
    """A run's global state for as long as it trains: the process group (when launched
    distributed), ``train.deterministic`` and the seeds of ``train.seed``. The process group
    this joined is left, the determinism flag and the global random states are put back.

    Args:
        dist: The :class:`~pixelwise.engine.distributed.DistContext`.
        device: The run's device.
        train: The ``[train]`` table (``deterministic``, ``seed``).
    """
    saved = rng_state({})
    owns_group = distributed.init_process_group(dist, device)
    previous = configure_determinism(train.deterministic, device)
    seed_everything(train.seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        restore_rng_state(saved, {})
        if owns_group:
            distributed.destroy_process_group()
