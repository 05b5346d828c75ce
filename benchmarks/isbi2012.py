"""Benchmark: U-Net on ISBI 2012 (Ronneberger et al. 2015, Table 1) within a CPU time budget.

Trains ``unet`` with ``configs/isbi2012_bench.toml`` on the config's training slices (00–19 of
the challenge's 25) for ``--minutes`` of wall time (``pixelwise train``, snapshots at a
quarter, half and all of the budget), predicts its validation slices (20–24) from each
snapshot with overlap-tile prediction averaged over the eight flips and rotations
(:func:`pixelwise.inference.tiling.predict`), and scores the membrane maps as the challenge
did: pixel error, foreground-restricted Rand error and V_info at threshold 0.5, and the
maximal V_rand / V_info over the thresholds 0.0 … 1.0 (one threshold for all the slices).
Beside the challenge's thresholded segments, ``min_rand_error_watershed`` scores the same
search with each threshold's segments made by a seeded watershed
(:func:`pixelwise.metrics.membrane_to_segments` with ``seed_threshold``: markers where the map
is under a quarter of the threshold; one-pixel membrane lines where floods meet), so cells a
faint membrane gap joins stay apart.
The slices scored are printed and recorded by name (``validation_samples`` in the JSON).

    .venv/bin/python benchmarks/isbi2012.py [--minutes 60] [--out DIR] [--data DIR] [--smoke]

Writes ``OUT/isbi2012.json``, ``OUT/scores.png`` (errors against training time, the paper's
beside them), ``OUT/sliceNN.png`` for the first validation slice NN (image | membrane
probability | predicted segments | true segments), ``OUT/membranes/NN.png`` (the final membrane probabilities, 0–255) and the
run folder under ``OUT/runs/``. Paper (challenge test set, 10 h on a GPU): Rand error 0.0382,
pixel error 0.0611.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

import _runs
from pixelwise import load_checkpoint, load_model
from pixelwise._files import save_png_atomic
from pixelwise.inference import evaluation_dataset
from pixelwise.inference.tiling import predict as tiled_predict
from pixelwise.metrics import isbi_scores, maximal_isbi_scores, membrane_to_segments
from pixelwise.report.palette import class_palette, to_rgb

NAME = "isbi2012"
CONFIG = _runs.ROOT / "configs" / "isbi2012_bench.toml"
PAPER = {"rand_error": 0.0382, "pixel_error": 0.0611, "setting": "challenge test set, 10 h GPU"}
GOAL = {"pixel_error": 0.0611, "rand_error": 0.05}
TILE, OVERLAP = 256, 0.25  # prediction tiles: the training crop, a quarter shared
SMOKE = [
    "model.options={depth=2, base_width=4, padding='same', batch_norm=true}",
    "data.crop_size=64",
    "train.val_every=1",
    "train.overlays=1",
]
SMOKE_SLICES = 1  # --smoke scores the first validation slice only: tiled prediction with TTA dominates its time
MEMBRANE = 0  # class index of membrane in the config's value map
# Watershed markers where the membrane map is under this fraction of the threshold: a quarter
# parted more merged cells than a half on the 15-minute snapshot of the first run scored.
SEED_FRACTION = 0.25
TABLE_KEYS = ("pixel_error", "rand_error", "min_rand_error", "min_rand_error_watershed", "v_info")


def membrane_probabilities(path: Path, dataset: object) -> list[np.ndarray]:
    """The checkpoint's membrane probability for each validation slice (tiled, with TTA).

    Shape:
        each (H, W) float64 in [0, 1].
    """
    model = load_model(path)
    torch.manual_seed(0)
    maps = []
    for index in range(len(dataset)):
        image = dataset[index]["image"]  # (1, H, W) in [0, 1]
        logits = tiled_predict(
            model,
            image,
            tile=TILE,
            overlap=OVERLAP,
            tta=True,
        )  # (2, H, W)
        maps.append(logits.softmax(dim=0)[MEMBRANE].double().numpy())
    return maps


def true_segments(dataset: object) -> list[np.ndarray]:
    """Cell interiors of each validation slice as 4-connected segments, membrane 0."""
    return [
        membrane_to_segments(dataset[i]["mask"].numpy() == MEMBRANE) for i in range(len(dataset))
    ]


def slice_means(searches: Sequence[object], key: str) -> np.ndarray:
    """One score of threshold searches, averaged over the slices at each threshold.

    Shape:
        (thresholds,).
    """
    return np.mean([[getattr(s, key) for s in search.scores] for search in searches], axis=0)


def score(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, object]:
    """Scores at 0.5 (means over the slices) and the maximal V_rand / V_info of the stack."""
    searches = [maximal_isbi_scores(m, t) for m, t in zip(maps, truths, strict=True)]
    thresholds = searches[0].thresholds
    v_rand, v_info, pixel = (
        slice_means(searches, key) for key in ("v_rand", "v_info", "pixel_error")
    )
    half = [isbi_scores(t, membrane_to_segments(m, 0.5)) for m, t in zip(maps, truths, strict=True)]
    best_rand, best_info = int(np.argmax(v_rand)), int(np.argmax(v_info))
    seeded = [
        maximal_isbi_scores(m, t, seed_fraction=SEED_FRACTION)
        for m, t in zip(maps, truths, strict=True)
    ]
    v_rand_seeded, pixel_seeded = (slice_means(seeded, key) for key in ("v_rand", "pixel_error"))
    best_seeded = int(np.argmax(v_rand_seeded))
    return {
        "pixel_error": float(np.mean([s.pixel_error for s in half])),
        "rand_error": float(np.mean([s.rand_error for s in half])),
        "v_info": float(np.mean([s.v_info for s in half])),
        "min_rand_error": float(1.0 - v_rand[best_rand]),
        "min_rand_error_threshold": thresholds[best_rand],
        "pixel_error_at_that_threshold": float(pixel[best_rand]),
        "min_rand_error_watershed": float(1.0 - v_rand_seeded[best_seeded]),
        "min_rand_error_watershed_threshold": thresholds[best_seeded],
        "pixel_error_at_watershed_threshold": float(pixel_seeded[best_seeded]),
        "watershed_seed_fraction": SEED_FRACTION,
        "max_v_info": float(v_info[best_info]),
        "max_v_info_threshold": thresholds[best_info],
        "per_slice": [
            {"pixel_error": s.pixel_error, "rand_error": s.rand_error, "v_info": s.v_info}
            for s in half
        ],
    }


def segments_rgb(segments: np.ndarray) -> np.ndarray:
    """Segments in cycling colours, membrane black. Shape: (H, W) -> (H, W, 3) uint8."""
    colors = np.concatenate([[[0, 0, 0]], class_palette(12)])  # (13, 3)
    return colors[np.where(segments > 0, (segments - 1) % 12 + 1, 0)].astype(np.uint8)


def save_example(path: Path, image: torch.Tensor, prob: np.ndarray, truth: np.ndarray) -> None:
    """image | membrane probability | predicted segments (at 0.5) | true segments."""
    grey = np.rint(np.repeat(prob[..., None], 3, axis=-1) * 255).astype(np.uint8)
    panels = [to_rgb(image), grey, segments_rgb(membrane_to_segments(prob)), segments_rgb(truth)]
    gap = np.full((prob.shape[0], 4, 3), 255, dtype=np.uint8)
    save_png_atomic(path, np.concatenate([p for q in panels for p in (q, gap)][:-1], axis=1))


def plot_scores(path: Path, results: Mapping[str, Mapping], slices: str) -> None:
    labels = list(results)
    _runs.bar_chart(
        path,
        [*labels, "paper"],
        {
            "pixel error": [*(r["pixel_error"] for r in results.values()), PAPER["pixel_error"]],
            "Rand error (0.5)": [*(r["rand_error"] for r in results.values()), None],
            "min Rand error": [
                *(r["min_rand_error"] for r in results.values()),
                PAPER["rand_error"],
            ],
        },
        title=f"ISBI 2012 {slices} by training time (paper: challenge test set)",
        ylabel="error (lower is better)",
    )


def evaluate(
    run: _runs.Run, minutes: float, out: Path, slices: int | None
) -> tuple[list[str], dict[str, dict]]:
    """Score every checkpoint (on the first ``slices`` validation slices; None: all of them);
    write the final membrane maps and the example figure.

    Returns:
        The names of the slices scored, and the scores by checkpoint.
    """
    checkpoints = run.checkpoints(minutes)
    dataset = evaluation_dataset(load_checkpoint(run.run_dir / "last.pt").config["data"], "val")
    if slices is not None:
        dataset = dataset.subset(range(slices))
    names, truths = _runs.sample_names(dataset), true_segments(dataset)
    results, scored = {}, {}
    for label, (path, iteration) in checkpoints.items():
        if iteration not in scored:  # snapshots of one iteration hold the same weights
            maps = membrane_probabilities(path, dataset)
            scored[iteration] = score(maps, truths)
        results[label] = {"checkpoint": str(path), "iteration": iteration, **scored[iteration]}
    for name, prob in zip(names, maps, strict=True):
        save_png_atomic(out / "membranes" / f"{name}.png", np.rint(prob * 255).astype(np.uint8))
    save_example(out / f"slice{names[0]}.png", dataset[0]["image"], maps[0], truths[0])
    plot_scores(out / "scores.png", results, f"slice{'s' * (len(names) > 1)} {', '.join(names)}")
    return names, results


def main(argv: Sequence[str] | None = None) -> int:
    args = _runs.parse_args(NAME, "isbi2012", __doc__.splitlines()[0], argv)
    overrides = _runs.common_overrides(args, SMOKE)
    run = _runs.runs_for(args, NAME, {"unet": overrides}, CONFIG)["unet"]
    start = time.perf_counter()
    names, results = evaluate(run, args.minutes, args.out, SMOKE_SLICES if args.smoke else None)
    report = {
        **_runs.report_header(NAME, args, argv, CONFIG, overrides),
        "paper": PAPER,
        "goal": GOAL,
        "train": run.summary(),
        "evaluate_seconds": round(time.perf_counter() - start, 1),
        "prediction": {"tile": TILE, "overlap": OVERLAP, "tta": "8 flips/rotations"},
        "validation_samples": names,
        "results": results,
    }
    path = _runs.write_json(args.out / f"{NAME}.json", report)
    print(
        f"U-Net on ISBI 2012, {_runs.describe_samples(names)}, {args.minutes:g} min budget "
        f"(smoke: {args.smoke})"
    )
    _runs.print_table(
        [
            "checkpoint",
            "iteration",
            "pixel error",
            "Rand error",
            "min Rand error",
            "watershed",
            "V_info",
        ],
        [[k, r["iteration"], *(r[key] for key in TABLE_KEYS)] for k, r in results.items()]
        + [["paper", None, PAPER["pixel_error"], None, PAPER["rand_error"], None, None]],
    )
    print(f"trained {run.minutes:.2f} min ({run.iterations} iterations); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
