"""A seeded two-class data set of sample dicts, for tests that train through ``pixelwise.fit``."""

from __future__ import annotations

import numpy as np
import torch


class TwoBlobs(torch.utils.data.Dataset):
    """Bright squares on a dark background: an easy, seeded two-class task."""

    class_names = ("background", "square")

    def __init__(self, count: int, seed: int, size: int = 24) -> None:
        rng = np.random.default_rng(seed)
        self.samples = []
        for _ in range(count):
            mask = np.zeros((size, size), np.int64)
            top, left = rng.integers(0, size - 8, 2)
            mask[top : top + 8, left : left + 8] = 1
            image = 0.2 + 0.6 * mask + 0.05 * rng.standard_normal((size, size))
            self.samples.append(
                {
                    "image": torch.tensor(image, dtype=torch.float32)[None],
                    "mask": torch.from_numpy(mask),
                    "name": f"s{len(self.samples)}",  # extra keys are ignored
                }
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]
