"""Mirror padding for any image size: the reflection of ``numpy.pad(mode="reflect")``, repeated.

Used below both the models (the patch classifier's dense mode pads its input) and inference
(a valid-padding U-Net sees a mirror-padded image, as in the U-Net paper's overlap-tile
strategy), so it lives with the other operators.
"""

from __future__ import annotations

import torch


def mirror_indices(
    start: int, length: int, size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Indices of ``range(start, start + length)`` reflected into ``[0, size)``.

    The reflection of ``numpy.pad(mode="reflect")``, repeated as often as needed (period
    ``2·(size − 1)``); an axis of one pixel repeats it.

    Shape:
        returns (length,) int64.
    """
    idx = torch.arange(start, start + length, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def mirror_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Mirror-pad H and W by ``pad`` on every side, for any image size.

    The same as ``F.pad(x, (pad,) * 4, mode="reflect")`` where that is defined
    (``pad < H`` and ``pad < W``); beyond it the reflection repeats (period 2·(n − 1), as
    ``numpy.pad(mode="reflect")``), and a side of one pixel is replicated.

    Shape:
        x: (N, C, H, W) -> (N, C, H + 2·pad, W + 2·pad)
    """
    for dim in (-2, -1):
        n = x.shape[dim]
        x = x.index_select(dim, mirror_indices(-pad, n + 2 * pad, n, x.device))
    return x
