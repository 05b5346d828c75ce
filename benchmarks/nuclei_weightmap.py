"""Benchmark: the U-Net weight map on touching nuclei (Ronneberger et al. 2015, section 3).

Trains one U-Net (``configs/nuclei_weightmap.toml``) twice on the nuclei training split, with
the same seed, data and time budget: with plain cross entropy and with cross entropy weighted
by the U-Net weight map (w0 = 10, σ = 5). Each model's validation predictions become
instances (4-connected components of the object class) and are scored against the true
nuclei: matched-object F1 at IoU 0.5, merged and split objects
(:func:`pixelwise.metrics.match_objects`), the touching true pairs kept apart
(:func:`pixelwise.metrics.touching_pairs`), the foreground-restricted Rand error
(:func:`pixelwise.metrics.isbi_scores`) and the Data Science Bowl mean average precision, for
the snapshots at a quarter, half and all of the budget.

    .venv/bin/python benchmarks/nuclei_weightmap.py [--minutes 60] [--out DIR] [--data DIR]
        [--smoke] [--jobs N] [--set SECTION.KEY=VALUE] [--rescore]

Writes ``OUT/nuclei_weightmap.json``, ``OUT/scores.png``, ``OUT/objects.png`` and
``OUT/overlays/ID.png`` (image | true nuclei | plain cross entropy | weight map, each object
in its own colour with its outline), and the two run folders under ``OUT/runs/``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

import _runs
from pixelwise import load_checkpoint, load_model, predict_mask
from pixelwise._files import save_png_atomic
from pixelwise.inference import evaluation_dataset
from pixelwise.metrics import isbi_scores, match_objects, mean_average_precision, touching_pairs
from pixelwise.report.palette import class_palette, to_rgb

NAME = "nuclei_weightmap"
CONFIG = _runs.ROOT / "configs" / "nuclei_weightmap.toml"
LOSSES = {"cross_entropy": ["loss.name=ce"], "weight_map": []}
SMOKE = [
    "model.options={depth=2, base_width=4, padding='same', batch_norm=true}",
    "data.crop_size=64",
    "data.elastic_std=0.0",
    "train.val_every=1",
    "train.overlays=1",
]
OVERLAYS = 3  # validation images drawn, evenly spaced
OBJECT = 1  # class index of nuclei
COLUMNS = {  # printed table: result key -> heading
    "f1": "F1@0.5",
    "merges": "merged",
    "splits": "split",
    "separation_rate": "pairs apart",
    "rand_error": "Rand error",
    "map": "mAP",
}


def instances(mask: np.ndarray) -> np.ndarray:
    """Predicted nuclei: 4-connected components of the object class, labelled 1..N."""
    labels, _ = ndimage.label(mask == OBJECT)
    return labels


def true_instances(data: Path, sample_id: str) -> np.ndarray:
    """The original instance labels (before the training targets' one-pixel gaps)."""
    return np.asarray(Image.open(data / "instances" / f"{sample_id}.png")).astype(np.int64)


def predict_instances(path: Path, dataset: object) -> dict[str, np.ndarray]:
    """Each validation image's predicted instances, by sample id."""
    model = load_model(path)
    found = {}
    for index in range(len(dataset)):
        image = dataset[index]["image"]  # (3, H, W)
        mask = predict_mask(model, image)  # (H, W)
        found[dataset.sample_id(index)] = instances(mask.numpy())
    return found


PAIR_KEYS = ("touching_pairs", "pairs_separated", "pairs_merged", "pairs_undetected")


def _pair_counts(truth: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """What became of the touching true nuclei (8-neighbours): kept apart, merged, missed."""
    pairs = touching_pairs(truth, pred)
    values = (pairs.pairs, pairs.separated, pairs.merged, pairs.undetected)
    return dict(zip(PAIR_KEYS, values, strict=True))


def score(truths: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray]) -> dict:
    """Pooled object counts and F1 at IoU 0.5, merges, splits; image means of the rest."""
    per_image = {}
    for sample_id, truth in truths.items():
        match = match_objects(truth, preds[sample_id], iou_threshold=0.5)
        per_image[sample_id] = {
            "objects": int(len(np.unique(truth)) - 1),
            "predicted": int(len(np.unique(preds[sample_id])) - 1),
            "tp": match.true_positives,
            "fp": match.false_positives,
            "fn": match.false_negatives,
            "merges": match.merges,
            "splits": match.splits,
            "f1": match.f1,
            "rand_error": isbi_scores(truth, preds[sample_id]).rand_error,
            "map": mean_average_precision(truth, preds[sample_id]),
            **_pair_counts(truth, preds[sample_id]),
        }
    rows = per_image.values()
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    pairs = {k: sum(r[k] for r in rows) for k in PAIR_KEYS}
    detected = pairs["pairs_separated"] + pairs["pairs_merged"]
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "merges": sum(r["merges"] for r in rows),
        "splits": sum(r["splits"] for r in rows),
        "objects": sum(r["objects"] for r in rows),
        **pairs,
        "separation_rate": pairs["pairs_separated"] / detected if detected else None,
        "rand_error": float(np.mean([r["rand_error"] for r in rows])),
        "mean_f1": float(np.nanmean([r["f1"] for r in rows])),
        "map": float(np.nanmean([r["map"] for r in rows])),
        "per_image": per_image,
    }


def instance_panel(image: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Objects tinted in cycling colours over the image, outlined in white.

    Shape:
        image: (3, H, W) in [0, 1]; labels: (H, W); returns (H, W, 3) uint8.
    """
    rgb = to_rgb(image).astype(np.float32)
    colors = class_palette(12).astype(np.float32)
    inside = labels > 0
    rgb[inside] = 0.5 * rgb[inside] + 0.5 * colors[(labels[inside] - 1) % 12]
    outline = inside & (
        ndimage.grey_erosion(labels, size=3) != ndimage.grey_dilation(labels, size=3)
    )
    rgb[outline] = 255
    return np.rint(rgb).astype(np.uint8)


def save_overlays(
    out: Path, dataset: object, truths: Mapping, predictions: Mapping[str, Mapping]
) -> None:
    """image | true nuclei | one panel per loss, for a few validation images."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(OVERLAYS, len(dataset))).round())
    for index in picks.astype(int).tolist():
        sample_id, image = dataset.sample_id(index), dataset[index]["image"]
        panels = [to_rgb(image), instance_panel(image, truths[sample_id])]
        panels += [instance_panel(image, preds[sample_id]) for preds in predictions.values()]
        gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
        row = np.concatenate([p for q in panels for p in (q, gap)][:-1], axis=1)
        save_png_atomic(out / "overlays" / f"{sample_id[:16]}.png", row)


def plot(out: Path, results: Mapping[str, Mapping]) -> None:
    labels = list(results)
    _runs.bar_chart(
        out / "scores.png",
        ["F1 @ IoU 0.5", "touching pairs kept apart", "Rand error", "mAP (DSB)"],
        {k: [r["f1"], r["separation_rate"], r["rand_error"], r["map"]] for k, r in results.items()},
        title="Touching nuclei, validation split: plain vs weighted cross entropy",
        ylabel="score",
    )
    _runs.bar_chart(
        out / "objects.png",
        ["merged", "split", "false positives", "false negatives"],
        {k: [results[k][c] for c in ("merges", "splits", "fp", "fn")] for k in labels},
        title=f"Objects ({next(iter(results.values()))['objects']} true nuclei)",
        ylabel="count",
    )


def evaluate(
    runs: Mapping[str, _runs.Run], budget: float, data: Path, out: Path
) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """Score each run's snapshots (15, 30 and 60 minutes of 60) and its end-of-budget weights
    on the validation split; overlays and plots show the end of the budget.

    Returns:
        The names of the validation images scored, and the scores by run and snapshot.
    """
    first = next(iter(runs.values())).run_dir / "last.pt"
    dataset = evaluation_dataset(load_checkpoint(first).config["data"], "val")
    ids = _runs.sample_names(dataset)
    truths = {sample_id: true_instances(data, sample_id) for sample_id in ids}
    results, final = {}, {}
    for label, run in runs.items():
        results[label], scored = {}, {}
        for mark, (path, iteration) in run.checkpoints(budget).items():
            if iteration not in scored:
                scored[iteration] = predict_instances(path, dataset)
            results[label][mark] = {
                "checkpoint": str(path),
                "iteration": iteration,
                **score(truths, scored[iteration]),
            }
        final[label] = scored[run.iterations]  # checkpoints() always hold the last iteration
    save_overlays(out, dataset, truths, final)
    plot(out, {label: list(r.values())[-1] for label, r in results.items()})
    return ids, results


def main(argv: Sequence[str] | None = None) -> int:
    args = _runs.parse_args(NAME, "nuclei", __doc__.splitlines()[0], argv)
    common = _runs.common_overrides(args, SMOKE)
    specs = {label: [*common, *extra] for label, extra in LOSSES.items()}
    runs = _runs.runs_for(args, NAME, specs, CONFIG)
    start = time.perf_counter()
    names, results = evaluate(runs, args.minutes, args.data, args.out)
    report = {
        **_runs.report_header(NAME, args, argv, CONFIG, specs),
        "weight_map": {"w0": 10.0, "sigma": 5.0},
        "train": {label: run.summary() for label, run in runs.items()},
        "evaluate_seconds": round(time.perf_counter() - start, 1),
        "validation_samples": names,
        "results": results,
    }
    path = _runs.write_json(args.out / f"{NAME}.json", report)
    print(
        f"Touching nuclei, {_runs.describe_samples(names)}, {args.minutes:g} min per model "
        f"(smoke: {args.smoke})"
    )
    _runs.print_table(
        ["loss", "checkpoint", "iteration", *COLUMNS.values()],
        [
            [k, mark, r["iteration"], *(r[c] for c in COLUMNS)]
            for k, marks in results.items()
            for mark, r in marks.items()
        ],
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
