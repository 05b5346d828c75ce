"""Benchmark: the U-Net weight map, box-restricted transforms against one per object.

For every nuclei instance image of at least 512 × 512 pixels, times
:func:`pixelwise.losses.weight_map.unet_weight_map` (each object's distance transform inside
its bounding box grown by the influence radius) and the naive computation (a full-image
distance transform per object, keeping the two smallest distances), checks that the two maps
agree to 1e-5, and writes the timings as JSON.

    .venv/bin/python benchmarks/weight_map.py [--data ../shared/data/nuclei]
        [--out benchmarks/results/weight_map.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pixelwise._files import write_json_atomic
from pixelwise.losses.weight_map import class_balance_map, unet_weight_map

ROOT = Path(__file__).resolve().parents[1]
W0, SIGMA, TOLERANCE = 10.0, 5.0, 1e-5


def naive_weight_map(labels: np.ndarray) -> np.ndarray:
    """Eq. 2 with one full-image distance transform per object."""
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for label in np.unique(labels[labels > 0]):
        dist = ndimage.distance_transform_edt(labels != label)
        d2 = np.minimum(d2, np.maximum(d1, dist))
        d1 = np.minimum(d1, dist)
    term = W0 * np.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2)) * (labels == 0)
    weights = class_balance_map((labels > 0).astype(np.uint8), "balanced") + term
    return weights.astype(np.float32)


def fast_weight_map(labels: np.ndarray) -> np.ndarray:
    return unet_weight_map(labels, w0=W0, sigma=SIGMA)


def median_time(function, labels: np.ndarray, repeats: int) -> tuple[float, float, np.ndarray]:
    """Median wall and process CPU time of ``repeats`` calls, and the last result.

    CPU time is reported beside wall time because the benchmark machine may be shared: it
    counts only this process's work.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(labels)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), result


def large_images(data: Path) -> list[dict]:
    with open(data / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [r for r in rows if int(r["width"]) >= 512 and int(r["height"]) >= 512]


def run(data: Path, repeats: int) -> dict:
    results = []
    for row in large_images(data):
        labels = np.array(Image.open(data / "instances" / f"{row['id']}.png"))
        fast_s, fast_cpu_s, fast = median_time(fast_weight_map, labels, repeats)
        naive_s, naive_cpu_s, naive = median_time(naive_weight_map, labels, repeats)
        results.append(
            {
                "id": row["id"],
                "group": row["group"],
                "size": [labels.shape[1], labels.shape[0]],
                "objects": int(len(np.unique(labels)) - 1),
                "fast_s": fast_s,
                "naive_s": naive_s,
                "speedup": naive_s / fast_s,
                "fast_cpu_s": fast_cpu_s,
                "naive_cpu_s": naive_cpu_s,
                "cpu_speedup": naive_cpu_s / fast_cpu_s,
                "max_abs_diff": float(np.abs(fast - naive).max()),
            }
        )
    total_fast = sum(r["fast_s"] for r in results)
    total_naive = sum(r["naive_s"] for r in results)
    cpu_fast = sum(r["fast_cpu_s"] for r in results)
    cpu_naive = sum(r["naive_cpu_s"] for r in results)
    return {
        "benchmark": "weight_map",
        "params": {"w0": W0, "sigma": SIGMA, "repeats": repeats, "tolerance": TOLERANCE},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "images": results,
        "overall": {
            "fast_s": total_fast,
            "naive_s": total_naive,
            "speedup": total_naive / total_fast if total_fast else None,
            "fast_cpu_s": cpu_fast,
            "naive_cpu_s": cpu_naive,
            "cpu_speedup": cpu_naive / cpu_fast if cpu_fast else None,
            "min_speedup": min(r["speedup"] for r in results),
            "max_abs_diff": max((r["max_abs_diff"] for r in results), default=0.0),
            "all_within_tolerance": all(r["max_abs_diff"] <= TOLERANCE for r in results),
        },
    }


def print_table(report: dict) -> None:
    print(
        f"{'image':<10} {'size':>9} {'objects':>7} {'naive s':>8} {'fast s':>7} {'ratio':>6} "
        f"{'cpu ratio':>9} {'max diff':>9}"
    )
    rows = [(r["id"][:10], "{}x{}".format(*r["size"]), r["objects"], r) for r in report["images"]]
    rows.append(("overall", "", "", report["overall"]))
    for name, size, objects, r in rows:
        print(
            f"{name:<10} {size:>9} {objects:>7} {r['naive_s']:>8.3f} {r['fast_s']:>7.4f} "
            f"{r['speedup']:>5.1f}x {r['cpu_speedup']:>8.1f}x {r['max_abs_diff']:>9.2e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "nuclei")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/weight_map.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.data / "manifest.csv").is_file():
        print(f"skipped: nuclei data not found at {args.data} (expected manifest.csv there)")
        return 0
    report = run(args.data, args.repeats)
    if not report["images"]:
        print(f"skipped: no image of at least 512x512 in {args.data / 'manifest.csv'}")
        return 0
    write_json_atomic(args.out, report)
    print_table(report)
    print(f"wrote {args.out}")
    if not report["overall"]["all_within_tolerance"]:
        print(f"FAILED: a map differs from the naive one by more than {TOLERANCE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
