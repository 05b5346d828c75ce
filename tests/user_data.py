"""A folder shaped like users' data: JPEG images and 0/255 PNG masks, spaces in the names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def user_folder(root: Path, count: int = 6, size: int = 32) -> Path:
    rng = np.random.default_rng(3)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"photo {index}.jpg", quality=90)
        mask = np.where(image[..., 0] > 127, 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"photo {index}.png")
    return root
