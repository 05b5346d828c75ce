"""Tiny feature networks and images shared by the style-transfer tests (random weights only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.engine.checkpoint import save_checkpoint
from pixelwise.models import create_model
from pixelwise.style import VGG19Features


@pytest.fixture(scope="session")
def vgg() -> VGG19Features:
    """VGG19 with torchvision's random initialisation, cut after conv5_1 (the paper's layers)."""
    return VGG19Features(weights="random", seed=0)


def _image(channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(channels, height, width, generator=generator)  # (C, H, W)


@pytest.fixture
def image() -> Callable[[int, int, int, int], torch.Tensor]:
    """``image(C, H, W, seed)``: uniform noise in [0, 1], (C, H, W)."""
    return _image


def _stripes(height: int, width: int, period: float = 3.0) -> np.ndarray:
    """A colour texture: diagonal stripes, (H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    wave = np.sin((x + y) / period)[..., None] * np.array([1.0, 0.5, -0.3])
    return ((wave + 1) * 127).astype(np.uint8)


@pytest.fixture
def stripes() -> Callable[..., np.ndarray]:
    return _stripes


def _write_images(folder: Path) -> tuple[Path, Path]:
    """content.png (45×67 noise) and style.png (50×41 stripes)."""
    rng = np.random.default_rng(0)
    content, style = folder / "content.png", folder / "style.png"
    Image.fromarray(rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)).save(content)
    Image.fromarray(_stripes(50, 41)).save(style)
    return content, style


def _grey_unet(padding: str = "same") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "unet", num_classes=2, in_channels=1, depth=2, base_width=4, padding=padding
    ).eval()


@pytest.fixture
def grey_unet() -> Callable[..., torch.nn.Module]:
    """``grey_unet(padding="same")``: a seeded one-channel U-Net of depth 2, 4 base channels."""
    return _grey_unet


def _write_checkpoint(path: Path, model: torch.nn.Module, normalisation: dict | None) -> Path:
    return save_checkpoint(
        path,
        model=model,
        class_names=("background", "cell"),
        ignore_index=255,
        normalisation=normalisation,
        config={},
        epoch=1,
        metrics={},
    )


@pytest.fixture
def write_checkpoint() -> Callable[..., Path]:
    """``write_checkpoint(path, model, normalisation)``: a pixelwise checkpoint of ``model``."""
    return _write_checkpoint


@pytest.fixture
def write_images() -> Callable[[Path], tuple[Path, Path]]:
    return _write_images
