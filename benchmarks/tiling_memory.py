"""Benchmark: peak memory of tiled prediction against the image size, and of one whole-image pass.

Each measurement runs in a fresh Python process (peak RSS is a per-process high-water mark):
it builds a small U-Net (same padding, depth 4, base width 8, one input channel, K = 2),
allocates a random single-channel float32 image, predicts it with
:func:`pixelwise.inference.tiling.predict` (512² tiles, overlap 0.25, Gaussian blending,
batch 4) or in one forward pass, and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
beside the RSS before predicting (Python, torch, the model and the image). Tiled memory should
be the baseline plus the K·H·W·4-byte output plus a constant for the tile batch; the
whole-image pass grows with the activations of the whole image.

    .venv/bin/python benchmarks/tiling_memory.py [--sizes 2048 8192] [--whole-sizes 1024 2048]
        [--out benchmarks/results/tiling_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
NUM_CLASSES, TILE, OVERLAP, BATCH = 2, 512, 0.25, 4
MODEL = {"depth": 4, "base_width": 8, "padding": "same"}


def current_rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def measure(size: int, mode: str) -> dict:
    """Run in the child process: one prediction, its peak RSS and time."""
    import torch

    from pixelwise.inference.tiling import plan_tiles, predict
    from pixelwise.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", num_classes=NUM_CLASSES, in_channels=1, **MODEL).eval()
    image = torch.rand(1, size, size)
    baseline = current_rss_mib()
    start = time.perf_counter()
    if mode == "tiled":
        logits = predict(model, image, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
        tiles = len(plan_tiles(model, size, size, tile=TILE, overlap=OVERLAP))
    else:
        with torch.inference_mode():
            logits = model(image[None])[0]
        tiles = 1
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "mode": mode,
        "size": size,
        "tiles": tiles,
        "seconds": seconds,
        "rss_before_predict_mib": baseline,
        "peak_rss_mib": peak,
        "image_mib": image.numel() * 4 / MIB,
        "output_mib": logits.numel() * 4 / MIB,
        "peak_above_baseline_mib": peak - baseline,
        "peak_above_baseline_and_output_mib": peak - baseline - logits.numel() * 4 / MIB,
    }


def run_child(size: int, mode: str) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(size)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--whole-sizes", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/tiling_memory.json"))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[1]), args.child[0])))
        return 0
    from pixelwise._files import write_json_atomic

    runs = [run_child(size, "tiled") for size in args.sizes]
    runs += [run_child(size, "whole") for size in args.whole_sizes]
    for run in runs:
        print(
            f"{run['mode']:>5} {run['size']:>5}²: peak {run['peak_rss_mib']:.0f} MiB "
            f"(before {run['rss_before_predict_mib']:.0f}, output {run['output_mib']:.0f}, "
            f"rest {run['peak_above_baseline_and_output_mib']:.0f}), {run['seconds']:.1f} s"
        )
    result = {
        "benchmark": "tiling_memory",
        "params": {
            "model": {"name": "unet", "in_channels": 1, "num_classes": NUM_CLASSES, **MODEL},
            "tile": TILE,
            "overlap": OVERLAP,
            "batch_size": BATCH,
            "blend": "gaussian",
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": runs,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
