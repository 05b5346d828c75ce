"""Two-process training runs for the distributed tests: each rank is its own interpreter with
one torch thread, running the CLI as torchrun would (environment variables, a free port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

WORKER = """
import sys, torch
torch.set_num_threads(1)
from pixelwise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_two_ranks(overrides: Sequence[str], out: Path, timeout: float = 240) -> list[str]:
    """``pixelwise train --set ... --out-dir OUT`` on ranks 0 and 1; each rank's output.

    Fails the test (assert) when a rank exits with an error, showing the end of its output.
    """
    argv = ["train", *(a for o in overrides for a in ("--set", o)), "--out-dir", str(out)]
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-c", WORKER, *argv]
        procs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = []
    for proc in procs:
        output, _ = proc.communicate(timeout=timeout)
        outputs.append(output.decode())
        assert proc.returncode == 0, outputs[-1][-3000:]
    return outputs
