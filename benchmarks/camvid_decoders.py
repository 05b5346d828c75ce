"""Benchmark: SegNet's decoder comparison on CamVid (Badrinarayanan et al. 2017, Table 1).

Trains ``segnet_basic`` with ``configs/camvid_decoders.toml`` three times with the same seed,
data and time budget, changing only how the decoder upsamples: ``unpool`` (max-unpooling
with the encoder's indices: SegNet-Basic), ``deconv`` (a learned, bilinear-initialised 2×
transposed convolution: FCN-style) and ``bilinear`` (fixed interpolation). Training and
evaluation are at half resolution (180×240), with median-frequency class balancing and void
(11) ignored. Each snapshot (a quarter, half and all of the budget) is scored on val/,
downsampled as the training images were: global accuracy, class-average accuracy, mean IoU
and boundary F1 (:func:`pixelwise.evaluate_dataset`).

    .venv/bin/python benchmarks/camvid_decoders.py [--minutes 60] [--out DIR] [--data DIR]
        [--smoke]

Writes ``OUT/camvid_decoders.json`` (with per-class IoU), ``OUT/scores.png`` (ours beside the
paper's), ``OUT/overlays/NAME.png`` (image | truth | one panel per decoder) and the three
run folders under ``OUT/runs/``. Paper (full resolution, trained to convergence), global /
class-average accuracy / mean IoU: SegNet-Basic 82.7 / 62.0 / 47.7, FCN-Basic 81.7 / 62.4 /
47.3, bilinear 77.9 / 61.1 / 43.3.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import _runs
from pixelwise import evaluate_dataset, load_checkpoint, load_model, predict_mask
from pixelwise._files import save_png_atomic
from pixelwise.data import CamVidDataset, MaskEncoding, build_transforms
from pixelwise.report.palette import class_palette, overlay

NAME = "camvid_decoders"
CONFIG = _runs.ROOT / "configs" / "camvid_decoders.toml"
DECODERS = {"segnet_basic": "unpool", "fcn_basic": "deconv", "bilinear": "bilinear"}
# Table 1 of the paper, median-frequency balancing: global, class-average accuracy, mean IoU.
PAPER = {
    "segnet_basic": {"global_accuracy": 82.7, "class_accuracy": 62.0, "mean_iou": 47.7},
    "fcn_basic": {"global_accuracy": 81.7, "class_accuracy": 62.4, "mean_iou": 47.3},
    "bilinear": {"global_accuracy": 77.9, "class_accuracy": 61.1, "mean_iou": 43.3},
}
GOAL = "mean IoU within 5 points of the paper's for each decoder, same ordering"
SMOKE = ["model.options={width=4, kernel_size=3}", "train.overlays=1"]
OVERLAYS = 2  # validation images drawn, evenly spaced
METRICS = {
    "global_accuracy": "pixel_accuracy",
    "class_accuracy": "mean_accuracy",
    "mean_iou": "mean_iou",
    "boundary_f1": "boundary_f1",
}


def half_resolution_val(config: Mapping) -> CamVidDataset:
    """val/ scaled as the training images were (``data.scale``): 180×240 for the benchmark."""
    data = config["data"]
    return CamVidDataset(
        data["root"],
        "val",
        encoding=MaskEncoding.from_config(data["encoding"]),
        channels=data["channels"],
        transform=build_transforms(scale=tuple(data["scale"])),
    )


def score(path: Path, dataset: CamVidDataset) -> dict[str, object]:
    """The four Table 1 scores in percent, and IoU per class."""
    model = load_model(path)
    model.ignore_index = dataset.ignore_index
    summary = evaluate_dataset(model, dataset)
    scores = {ours: 100.0 * float(summary[key]) for ours, key in METRICS.items()}
    scores["class_iou"] = {k: 100.0 * v["iou"] for k, v in summary["classes"].items()}
    return scores


def evaluate_run(run: _runs.Run, budget: float, dataset: CamVidDataset) -> dict[str, dict]:
    """Scores of each snapshot of one run (snapshots of one iteration scored once)."""
    results, scored = {}, {}
    for label, (path, iteration) in run.checkpoints(budget).items():
        if iteration not in scored:
            scored[iteration] = score(path, dataset)
        results[label] = {"checkpoint": str(path), "iteration": iteration, **scored[iteration]}
    return results


def save_overlays(out: Path, runs: Mapping[str, _runs.Run], dataset: CamVidDataset) -> None:
    """image | truth | each decoder's prediction (end of budget), in CamVid's colours."""
    models = {k: load_model(run.run_dir / "last.pt") for k, run in runs.items()}
    palette = class_palette(next(iter(models.values())).class_names)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(OVERLAYS, len(dataset))).round())
    for index in picks.astype(int).tolist():
        sample = dataset[index]
        image = sample["image"].numpy().transpose(1, 2, 0)  # (H, W, 3) in [0, 1]
        masks = [sample["mask"].numpy()]
        for model in models.values():
            mask = predict_mask(model, sample["image"])
            masks.append(mask.numpy())
        panels = [overlay(image, m, palette, 0.6, ignore_index=dataset.ignore_index) for m in masks]
        gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
        row = np.concatenate([np.rint(image * 255).astype(np.uint8), gap, *_joined(panels, gap)], 1)
        save_png_atomic(out / "overlays" / f"{dataset.sample_id(index)}.png", row)


def _joined(panels: Sequence[np.ndarray], gap: np.ndarray) -> list[np.ndarray]:
    return [p for panel in panels for p in (panel, gap)][:-1]


def plot(out: Path, final: Mapping[str, Mapping]) -> None:
    """Ours beside the paper's for each decoder: one colour per decoder, the paper hatched."""
    keys = ("global_accuracy", "class_accuracy", "mean_iou")
    series, styles = {}, {}
    for color, decoder in zip(("C0", "C1", "C2"), DECODERS, strict=True):
        series[f"{decoder} (ours)"] = [final[decoder][k] for k in keys]
        series[f"{decoder} (paper)"] = [PAPER[decoder][k] for k in keys]
        styles[f"{decoder} (ours)"] = {"color": color}
        styles[f"{decoder} (paper)"] = {"color": color, "alpha": 0.35, "hatch": "//"}
    _runs.bar_chart(
        out / "scores.png",
        ["global accuracy", "class-average accuracy", "mean IoU"],
        series,
        title="CamVid val/, ours at half resolution, the paper's at full",
        ylabel="%",
        styles=styles,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _runs.parse_args(NAME, "camvid", __doc__.splitlines()[0], argv)
    common = _runs.common_overrides(args, SMOKE)
    overrides = {k: [*common, f"model.options.decoder={d}"] for k, d in DECODERS.items()}
    runs = _runs.runs_for(args, NAME, overrides, CONFIG)
    start = time.perf_counter()
    dataset = half_resolution_val(load_checkpoint(runs["segnet_basic"].run_dir / "last.pt").config)
    results = {k: evaluate_run(run, args.minutes, dataset) for k, run in runs.items()}
    final = {k: list(r.values())[-1] for k, r in results.items()}
    save_overlays(args.out, runs, dataset)
    plot(args.out, final)
    report = {
        **_runs.report_header(NAME, args, argv, CONFIG, overrides),
        "paper": PAPER,
        "goal": GOAL,
        "evaluated_at": "val/ at 180×240 (data.scale 0.5)",
        "validation_samples": _runs.sample_names(dataset),
        "train": {k: run.summary() for k, run in runs.items()},
        "evaluate_seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    path = _runs.write_json(args.out / f"{NAME}.json", report)
    print(
        f"CamVid val/ at 180x240, {_runs.describe_samples(_runs.sample_names(dataset))}, "
        f"{args.minutes:g} min per model (smoke: {args.smoke})"
    )
    rows = []
    for key in DECODERS:
        for label, r in results[key].items():
            row = [r["global_accuracy"], r["class_accuracy"], r["mean_iou"], r["boundary_f1"]]
            rows.append([key, label, r["iteration"], *row])
        rows.append([key, "paper", None, *PAPER[key].values(), None])
    _runs.print_table(["decoder", "checkpoint", "iteration", "G", "C", "mIoU", "BF"], rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
