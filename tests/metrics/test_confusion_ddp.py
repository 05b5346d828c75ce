"""Two processes on gloo: one all_reduce of ``matrix`` equals counting all batches in one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixelwise.metrics import ConfusionMatrix

K = 4

# Each rank runs as its own interpreter: test modules imported by pytest's importlib mode cannot
# be unpickled by torch.multiprocessing's spawned children.
WORKER = f"""
import sys, torch, torch.distributed as dist
from pixelwise.metrics import ConfusionMatrix
rank, init_file, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
g = torch.Generator().manual_seed(100 + rank)
cm = ConfusionMatrix({K}).update(torch.randn(3, {K}, 13, 11, generator=g), torch.randint(0, {K}, (3, 13, 11), generator=g))
dist.all_reduce(cm.matrix)
torch.save(cm.matrix, out)
dist.destroy_process_group()
"""


def shard(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(3, K, 13, 11, generator=g), torch.randint(0, K, (3, 13, 11), generator=g)


@pytest.mark.ddp
@pytest.mark.slow
def test_all_reduce_of_matrix_equals_single_process(tmp_path: Path) -> None:
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(rank), str(init), str(tmp_path / f"rank{rank}.pt")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output.decode()[-2000:]
    single = ConfusionMatrix(K)
    for rank in range(2):
        single.update(*shard(rank))
    assert int(single.matrix.sum()) == 2 * 3 * 13 * 11
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), single.matrix)
