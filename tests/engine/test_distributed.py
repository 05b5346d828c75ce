"""Multi-process training: ranks from the environment, sharding, and a two-process gloo run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ddp_runs import train_two_ranks
from pixelwise.config import RunConfig
from pixelwise.engine import distributed
from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.engine.trainer import Trainer


def test_context_reads_the_launcher_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.context() == distributed.DistContext(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (
        3,
        4,
        1,
        True,
        False,
    )
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        distributed.context()


def test_shards_cover_every_sample_once():
    shards = [list(distributed.ShardSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


def test_launch_runs_torchrun_on_this_interpreter(monkeypatch):
    calls = []
    monkeypatch.setattr(
        distributed.subprocess, "call", lambda command, **kwargs: calls.append(command) or 0
    )
    assert distributed.launch(["train", "--set", "train.epochs=1"], 2) == 0
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pixelwise.cli",
            "train",
            "--set",
            "train.epochs=1",
        ]
    ]
    with pytest.raises(ValueError, match="--nproc must be an integer >= 1"):
        distributed.launch(["train"], 0)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_validate_exactly_like_one(tmp_path: Path):
    out = tmp_path / "runs"
    overrides = [
        "model.options={depth=2, base_width=4}",
        "data.num_train=8",
        "data.num_val=8",  # 4 per rank: one batch of 4 each, as one process's batches of 4
        "data.image_size=48",
        "train.batch_size=4",
        "train.epochs=1",
        "train.device=cpu",
        "train.overlays=1",
    ]
    outputs = train_two_ranks(overrides, out)
    runs = list(out.iterdir())
    assert len(runs) == 1  # rank 0 made one folder, both ranks used it
    assert "run folder:" in outputs[0] and "run folder:" not in outputs[1]
    run = runs[0]
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint.training["world_size"] == 2
    assert len(list((run / "overlays").iterdir())) == 1

    # One process, the same weights and normalisation, the whole validation set.
    config = RunConfig.from_dict(checkpoint.config)
    with Trainer(config) as trainer:
        trainer.model.load_state_dict(checkpoint.state_dict)
        trainer.normalisation = checkpoint.normalisation
        single = trainer.evaluate()
    assert single["confusion_matrix"] == checkpoint.metrics["confusion_matrix"]
    assert sum(map(sum, single["confusion_matrix"])) == 8 * 48 * 48
    assert single["mean_iou"] == checkpoint.metrics["mean_iou"]
    assert single["loss"] == pytest.approx(checkpoint.metrics["loss"], rel=1e-5)
    assert torch.isfinite(torch.tensor(checkpoint.metrics["train_loss"]))
