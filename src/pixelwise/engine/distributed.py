"""Multi-process training on one or more machines with torch.distributed.

How a run becomes distributed:
    - ``torchrun --nproc_per_node N -m pixelwise.cli train ...`` (or any launcher that sets
      ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``): each
      process reads its rank from the environment (:func:`context`) and
      :func:`init_process_group` joins the group.
    - ``pixelwise train --nproc N`` on one machine: :func:`launch` runs
      ``python -m torch.distributed.run --standalone --nproc_per_node N -m pixelwise.cli
      train ...`` (torchrun as a module of the running interpreter) with the same arguments
      minus ``--nproc``, and waits for it. torchrun picks a free port, sets the environment
      above for every process and stops the others when one fails. Unless set,
      ``OMP_NUM_THREADS`` gives each process an equal share of the CPU cores.

Backends: NCCL when the processes train on CUDA, gloo on CPU. The trainer wraps the model in
DistributedDataParallel, shards the training data with DistributedSampler (``set_epoch`` every
epoch) and the validation data with :class:`ShardSampler` (no padding, so every validation
sample is counted exactly once); validation confusion matrices are summed with one
``all_reduce``. Only rank 0 writes files and reports progress.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from pixelwise._checks import message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and reports progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            message(f"environment variable {name}", "be an integer", repr(raw))
        ) from None


def context() -> DistContext:
    """The rank, world size and local rank: from an initialised process group, else from the
    ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` environment, else a single process."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistContext(rank, dist.get_world_size(), _env_int("LOCAL_RANK", rank))
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            message("RANK and WORLD_SIZE", "satisfy 0 <= RANK < WORLD_SIZE", (rank, world_size))
        )
    return DistContext(rank, world_size, _env_int("LOCAL_RANK", rank))


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(ctx: DistContext, device: torch.device) -> bool:
    """Join the process group of a distributed run (a no-op for one process or when joined).

    Returns:
        True if this call created the group (and :func:`destroy_process_group` should end it).
    """
    if not ctx.enabled or dist.is_initialized():
        return False
    if not dist.is_available():
        raise ValueError(
            message("torch.distributed", "be available for WORLD_SIZE > 1", "not built in")
        )
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(
                message(
                    f"environment variable {name}",
                    "be set for a distributed run",
                    "nothing",
                    "launch with torchrun or pixelwise train --nproc N",
                )
            )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=ctx.rank, world_size=ctx.world_size)
    logger.info("rank %d of %d joined (%s)", ctx.rank, ctx.world_size, backend_for(device))
    return True


def destroy_process_group() -> None:
    """Leave the process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op for one process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value: object, src: int = 0) -> object:
    """Rank ``src``'s ``value`` on every process (``value`` itself for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. batch-norm running statistics) to every process.

    DistributedDataParallel broadcasts buffers at the start of each training forward, so after
    the last step every process holds its own statistics; validation and the checkpoint must
    use one set.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=src)


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``length``: each sample on exactly one process.

    Unlike DistributedSampler nothing is padded or repeated, so metrics summed over the
    processes equal those of one process over the whole data set.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def launch_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command that runs ``pixelwise <argv>`` in ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "pixelwise.cli",
        *argv,
    ]


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``pixelwise <argv>`` in ``nproc`` processes on this machine; returns the exit status.

    Args:
        argv: The command line after ``pixelwise``, without ``--nproc``.
        nproc: Number of processes (>= 2; one per GPU on CUDA machines).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(message("--nproc", "be an integer >= 1", repr(nproc)))
    command = launch_command(argv, nproc)
    logger.info("launching: %s", " ".join(command))
    if "OMP_NUM_THREADS" in os.environ:
        return subprocess.call(command)
    # Each process gets its share of the cores (torchrun would otherwise set 1 and say so).
    threads = max(1, (os.cpu_count() or 1) // nproc)
    return subprocess.call(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
