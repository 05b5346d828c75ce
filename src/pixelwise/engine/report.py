"""The run report: ``metrics.csv``, ``loss.png`` and ``miou.png``, and ``overlays/`` (image,
truth and prediction of a few validation images, predicted the way ``pixelwise predict`` and
``pixelwise evaluate`` predict them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelwise.engine.runs import write_csv_atomic
from pixelwise.inference.predict import predict_logits
from pixelwise.inference.segmenter import Segmenter
from pixelwise.report.palette import save_overlay
from pixelwise.report.plots import plot_history


def sample_name(dataset: Dataset, index: int) -> str:
    """A file-name-safe name for sample ``index``: its id where the data set has one."""
    sample_id = getattr(dataset, "sample_id", None)
    try:
        name = str(sample_id(index)) if callable(sample_id) else f"val_{index:03d}"
    except NotImplementedError:
        name = f"val_{index:03d}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or f"val_{index:03d}"


@torch.no_grad()
def write_overlays(
    folder: str | Path, segmenter: Segmenter, dataset: Dataset, count: int
) -> list[Path]:
    """Draw image | truth | prediction for ``count`` samples of ``dataset``, evenly spaced."""
    count = min(count, len(dataset))
    if count <= 0:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = segmenter.class_names
    background = 0 if names[0].lower() in ("background", "bg") else None
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    written = []
    for index in indices.tolist():
        sample = dataset[index]
        logits = predict_logits(segmenter, sample["image"])  # (K, H, W)
        path = folder / f"{sample_name(dataset, index)}.png"
        save_overlay(
            path,
            sample["image"],
            logits.argmax(dim=0).cpu(),
            sample["mask"],
            num_classes=segmenter.num_classes,
            background=background,
            ignore_index=segmenter.ignore_index,
            class_names=names,
        )
        written.append(path)
    return written


def write_report(
    run_dir: Path,
    history: Sequence[dict],
    segmenter: Segmenter,
    val_set: Dataset | None,
    overlays: int,
) -> None:
    """The table, the two plots and the overlays of a finished run."""
    if history:
        write_csv_atomic(run_dir / "metrics.csv", history)
        plot_history(history, run_dir)
    if val_set is not None:
        write_overlays(run_dir / "overlays", segmenter, val_set, overlays)
