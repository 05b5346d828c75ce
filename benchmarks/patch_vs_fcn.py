"""Patch-by-patch versus fully convolutional evaluation of the same patch classifier.

Both modes of ``patch_classifier`` compute the same logits with the same weights; this times
them in one run (same image, same thread count, warm-up excluded, median of the repeats),
checks that they agree, and writes the numbers to JSON.

    python benchmarks/patch_vs_fcn.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pixelwise._files import write_json_atomic
from pixelwise.models import create_model

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "patch_vs_fcn.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side H = W (default 128)")
    parser.add_argument("--patch-size", type=int, default=25, help="odd patch side P (default 25)")
    parser.add_argument("--width", type=int, default=16, help="model width D (default 16)")
    parser.add_argument("--num-classes", type=int, default=5, help="K (default 5)")
    parser.add_argument(
        "--chunk-size", type=int, default=256, help="patches per call (default 256)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (>= 5)")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result path")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}; the median needs several runs")
    return args


def time_mode(model: torch.nn.Module, x: torch.Tensor, mode: str, repeats: int):
    """Median seconds of ``repeats`` timed runs after one warm-up, and the last output."""
    model.mode = mode
    times = []
    with torch.inference_mode():
        out = model(x)  # warm-up, not timed
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of the convolutions: one dense pass, and one patch times H·W."""
    total = [0]

    def hook(conv, _inputs, out):
        total[0] += out.numel() * conv.in_channels // conv.groups * conv.weight[0, 0].numel()

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_hook(hook) for c in convs]
    p = model.patch_size
    try:
        with torch.inference_mode():
            model.body(torch.zeros(1, x.shape[1], p, p))  # (1, K, 1, 1)
            per_patch, total[0] = total[0], 0
            model.mode = "dense"
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {"dense": total[0], "patches": per_patch * x.shape[0] * x.shape[2] * x.shape[3]}


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": "cpu",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model(
        "patch_classifier",
        num_classes=args.num_classes,
        patch_size=args.patch_size,
        width=args.width,
        chunk_size=args.chunk_size,
    ).eval()
    x = torch.randn(1, 3, args.size, args.size)  # (1, 3, H, W)
    dense_s, dense_all, dense_out = time_mode(model, x, "dense", args.repeats)
    patch_s, patch_all, patch_out = time_mode(model, x, "patches", args.repeats)
    macs = count_macs(model, x)
    max_diff = (dense_out - patch_out).abs().max().item()
    agree = torch.allclose(dense_out, patch_out, rtol=1e-4, atol=1e-5)
    result = {
        "benchmark": "patch_vs_fcn",
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "config": {
            "image": [1, 3, args.size, args.size],
            "patch_size": args.patch_size,
            "width": args.width,
            "num_classes": args.num_classes,
            "chunk_size": args.chunk_size,
            "repeats": args.repeats,
            "seed": args.seed,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "timings_s": {
            "dense": {"median": dense_s, "runs": dense_all},
            "patches": {"median": patch_s, "runs": patch_all},
        },
        "speedup_dense_over_patches": patch_s / dense_s,
        "conv_macs": {**macs, "ratio_patches_over_dense": macs["patches"] / macs["dense"]},
        "outputs_agree": agree,
        "max_abs_diff": max_diff,
    }
    write_json_atomic(args.out, result)
    print(
        f"patch_classifier P={args.patch_size} D={args.width} on 1×3×{args.size}×{args.size}, "
        f"{result['threads']} threads, median of {args.repeats}"
    )
    print(f"{'mode':<10}{'median s':>12}{'pixels/s':>14}{'GMAC':>10}")
    for mode, secs in (("patches", patch_s), ("dense", dense_s)):
        print(f"{mode:<10}{secs:>12.4f}{args.size**2 / secs:>14.0f}{macs[mode] / 1e9:>10.2f}")
    print(
        f"dense is {patch_s / dense_s:.1f}× faster; max |diff| = {max_diff:.2e}; wrote {args.out}"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
