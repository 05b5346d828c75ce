"""Tiny runs: a 4-wide U-Net of depth 2 on a few 48×48 synthetic images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pixelwise.config import RunConfig, load_config

TINY = (
    "model.options={depth=2, base_width=4}",
    "data.num_train=8",
    "data.num_val=4",
    "data.image_size=48",
    "train.batch_size=4",
    "train.epochs=2",
    "train.device=cpu",
    "train.overlays=2",
)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., RunConfig]:
    """``tiny_config(*overrides)``: the tiny run, writing under ``tmp_path/runs``."""

    def build(*overrides: str) -> RunConfig:
        return load_config(None, [*TINY, f"train.out_dir={tmp_path / 'runs'}", *overrides])

    return build
