"""Benchmark: ISBI 2012 scores of pixelwise against scikit-image on the 25 ISBI training masks.

Each mask (0 = membrane, 255 = interior) gives the ground-truth segments (4-connected interior
regions); a deterministic perturbation of its membrane gives the predicted segments: the
membrane is eroded in the left half (gaps close, cells merge) and dilated in the right half
(thin cells break, cells split), by 1 + (index mod 3) pixels. For every pair it compares
:func:`pixelwise.metrics.isbi_scores` under scikit-image's conventions
(``pred_background="segment"``, ``distinct_pairs=True``) with ``adapted_rand_error`` and
``variation_of_information(..., ignore_labels=(0,))``, mapping scikit-image's "precision" to
V_rand_split and its "recall" to V_rand_merge (scikit-image issue 6485). It also reports how far
the challenge's own conventions (predicted membrane as singletons, pairs with self) land from
scikit-image, and times both implementations (best of ``--repeats`` calls). Writes JSON atomically.

    .venv/bin/python benchmarks/metrics_crosscheck.py [--data ../shared/data/isbi2012]
        [--out benchmarks/results/metrics_crosscheck.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import skimage
from PIL import Image
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information

from pixelwise._files import write_json_atomic
from pixelwise.metrics import isbi_scores, membrane_to_segments

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-10
FIELDS = ("rand_error", "v_rand_split", "v_rand_merge", "vi_split", "vi_merge")


def perturb(membrane: np.ndarray, index: int) -> np.ndarray:
    """Erode the membrane in the left half and dilate it in the right, by 1 + index % 3 pixels."""
    cross = ndimage.generate_binary_structure(2, 1)
    steps, half = 1 + index % 3, membrane.shape[1] // 2
    out = membrane.copy()
    out[:, :half] = ndimage.binary_erosion(membrane, cross, steps, border_value=1)[:, :half]
    out[:, half:] = ndimage.binary_dilation(membrane, cross, steps)[:, half:]
    return out


def skimage_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """scikit-image's numbers under pixelwise's names (precision -> split, recall -> merge)."""
    are, precision, recall = adapted_rand_error(gt, pred)
    h_split, h_merge = variation_of_information(gt, pred, ignore_labels=(0,))
    values = (are, precision, recall, h_split, h_merge)
    return {name: float(v) for name, v in zip(FIELDS, values, strict=True)}


def best_time(function, repeats: int):
    """Shortest wall time of ``repeats`` calls (the least disturbed by other load), last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def compare(index: int, mask: np.ndarray, repeats: int) -> dict:
    membrane = mask == 0
    gt, pred = membrane_to_segments(membrane), membrane_to_segments(perturb(membrane, index))
    ours_s, ours = best_time(
        lambda: isbi_scores(gt, pred, pred_background="segment", distinct_pairs=True), repeats
    )
    peer_s, peer = best_time(lambda: skimage_scores(gt, pred), repeats)
    official = isbi_scores(gt, pred)
    return {
        "segments": [int(gt.max()), int(pred.max())],
        "abs_diff": {f: abs(getattr(ours, f) - peer[f]) for f in FIELDS},
        "convention_gap": {f: abs(getattr(official, f) - peer[f]) for f in FIELDS},
        "official": {
            "rand_error": official.rand_error,
            "v_rand_split": official.v_rand_split,
            "v_rand_merge": official.v_rand_merge,
            "v_info": official.v_info,
            "pixel_error": official.pixel_error,
        },
        "pixelwise_s": ours_s,
        "skimage_s": peer_s,
    }


def run(masks: list[Path], repeats: int) -> dict:
    images = []
    for index, path in enumerate(masks):
        result = compare(index, np.array(Image.open(path)), repeats)
        images.append({"mask": path.name, **result})
    max_diff = {f: max(r["abs_diff"][f] for r in images) for f in FIELDS}
    return {
        "benchmark": "metrics_crosscheck",
        "peer": f"scikit-image {skimage.__version__}",
        "mapping": {
            "rand_error": "adapted_rand_error()[0]",
            "v_rand_split": "adapted_rand_error()[1] ('precision', issue 6485)",
            "v_rand_merge": "adapted_rand_error()[2] ('recall', issue 6485)",
            "vi_split": "variation_of_information(gt, pred, ignore_labels=(0,))[0]",
            "vi_merge": "variation_of_information(gt, pred, ignore_labels=(0,))[1]",
        },
        "params": {
            "pred_background": "segment",
            "distinct_pairs": True,
            "tolerance": TOLERANCE,
            "repeats": repeats,
        },
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "cpus": os.cpu_count(),
        },
        "images": images,
        "overall": {
            "n_images": len(images),
            "max_abs_diff": max_diff,
            "max_convention_gap": {f: max(r["convention_gap"][f] for r in images) for f in FIELDS},
            "pixelwise_s": sum(r["pixelwise_s"] for r in images),
            "skimage_s": sum(r["skimage_s"] for r in images),
            "all_within_tolerance": all(v <= TOLERANCE for v in max_diff.values()),
        },
    }


def print_table(report: dict) -> None:
    print(f"{'mask':<8} {'segs gt/pred':>12} " + " ".join(f"{f:>13}" for f in FIELDS))
    for r in report["images"]:
        segs = f"{r['segments'][0]}/{r['segments'][1]}"
        print(
            f"{r['mask']:<8} {segs:>12} " + " ".join(f"{r['abs_diff'][f]:>13.2e}" for f in FIELDS)
        )
    o = report["overall"]
    print(f"{'max |diff|':<21} " + " ".join(f"{o['max_abs_diff'][f]:>13.2e}" for f in FIELDS))
    print(
        f"{'challenge vs skimage':<21} "
        + " ".join(f"{o['max_convention_gap'][f]:>13.2e}" for f in FIELDS)
    )
    print(
        f"time: pixelwise {o['pixelwise_s']:.3f} s, scikit-image {o['skimage_s']:.3f} s ({o['n_images']} images)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "isbi2012")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "metrics_crosscheck.json"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is kept)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    masks = sorted((args.data / "masks").glob("*.png"))
    if not masks:
        print(f"skipped: no ISBI 2012 masks found in {args.data / 'masks'}")
        return 0
    report = run(masks, args.repeats)
    write_json_atomic(args.out, report)
    print_table(report)
    print(f"wrote {args.out}")
    if not report["overall"]["all_within_tolerance"]:
        print(f"FAILED: a score differs from scikit-image by more than {TOLERANCE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
