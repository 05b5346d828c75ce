"""Mirror padding (pixelwise.nn.padding) against numpy's reflect mode, for any pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.nn.padding import mirror_indices, mirror_pad


@pytest.mark.parametrize(("height", "width", "pad"), [(5, 7, 2), (3, 4, 9), (2, 6, 5)])
def test_mirror_pad_is_numpy_reflect_repeated(height, width, pad):
    x = torch.arange(2 * height * width, dtype=torch.float32).reshape(1, 2, height, width)
    expected = np.stack([np.pad(c, pad, mode="reflect") for c in x[0].numpy()])  # (2, H′, W′)
    got = mirror_pad(x, pad)
    assert got.shape == (1, 2, height + 2 * pad, width + 2 * pad)
    np.testing.assert_array_equal(got[0].numpy(), expected)


def test_mirror_indices_reflect_any_range():
    assert mirror_indices(-3, 10, 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert mirror_indices(2, 3, 3).tolist() == [2, 1, 0]
    assert mirror_indices(-2, 4, 1).tolist() == [0, 0, 0, 0]
