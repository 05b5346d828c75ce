"""Small image/mask folders written with Pillow, odd sizes on purpose."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 45, 67
REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture
def save() -> Callable[..., Path]:
    """``save(path, array, **pillow_options)``: the mode follows the dtype and shape."""
    return _save


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def make_folder(tmp_path: Path, rng: np.random.Generator) -> Callable[..., Path]:
    """``make_folder(stems, image_ext=".png", channels=3, values=(0, 1, 2))`` → root folder.

    Images are random uint8, masks random picks from ``values`` (uint8, single channel).
    """

    def build(
        stems=("a", "b", "c"),
        image_ext: str = ".png",
        channels: int = 3,
        values=(0, 1, 2),
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "set"
        for stem in stems:
            shape = (HEIGHT, WIDTH, channels) if channels > 1 else (HEIGHT, WIDTH)
            _save(
                root / "images" / f"{stem}{image_ext}", rng.integers(0, 256, shape, dtype=np.uint8)
            )
            mask = rng.choice(np.asarray(values, dtype=np.uint8), (HEIGHT, WIDTH))
            _save(root / "masks" / f"{stem}.png", mask)
        return root

    return build


@pytest.fixture
def real_data() -> Callable[..., Path]:
    """``real_data(*parts)``: a path under ../shared/data, or a skip with a message."""

    def find(*parts: str) -> Path:
        path = REAL_DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not found at {path}; these tests read ../shared/data in place")
        return path

    return find
