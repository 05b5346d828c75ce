"""The machine's measured float32 peak, and timing helpers shared by the benchmarks.

Two kernels stand for the peak: a 2048 × 2048 sgemm (``torch.mm``) and a channels-last 3×3
convolution (64 → 64 channels on a 512² map, batch 1), the best case of the convolutions a
U-Net is made of. They are timed inside the same rounds as the models, so that load from
other processes on a shared machine hits the peak and the models alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

GEMM_SIZE = 2048
CONV_SHAPE = (1, 64, 512, 512)  # (N, D, H, W); 3×3 kernel, D -> D channels


def seconds(call: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def peak_kernels(seed: int = 0) -> dict[str, tuple[Callable[[], object], float]]:
    """``name -> (call, floating-point operations per call)`` of the two peak kernels."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator)
    n, d, h, w = CONV_SHAPE
    x = torch.randn(*CONV_SHAPE, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(d, d, 3, 3, generator=generator).contiguous(
        memory_format=torch.channels_last
    )
    return {
        "sgemm_2048": (lambda: torch.mm(a, b), 2.0 * GEMM_SIZE**3),
        "conv3x3_channels_last": (
            lambda: F.conv2d(x, weight, padding=1),
            2.0 * n * d * d * 9 * h * w,
        ),
    }


def summarise_peak(times: dict[str, list[float]], flops: dict[str, float]) -> dict:
    """Median GFLOP/s of each peak kernel and ``peak_gflops``, the larger of the two."""
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        out[name] = {
            "median_s": median,
            "gflops": flops[name] / median / 1e9,
            "times_s": values,
        }
    out["peak_gflops"] = max(entry["gflops"] for entry in out.values())
    return out
