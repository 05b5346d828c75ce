"""The run folder: a new folder per run, files written atomically, the per-epoch table.

A run folder is never reused: :func:`create_run_dir` makes ``<out_dir>/<YYYYmmdd-HHMMSS>``
(``-2``, ``-3``, ... when that exists). Every file in it is written to a temporary file in the
same folder and moved into place with ``os.replace``, so a reader (or a run killed mid-write)
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pixelwise._checks import message
from pixelwise._files import remove_stale_temporaries, write_text_atomic
from pixelwise._metric_names import SUMMARY_KEYS


def create_run_dir(out_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """Create a new, empty run folder and return it.

    Args:
        out_dir: Parent of timestamped run folders (created if missing).
        run_dir: An explicit folder instead; it must not exist yet, or be empty.

    The earlier run folders under ``out_dir`` lose the temporary files that runs killed
    mid-save left behind (:func:`pixelwise._files.remove_stale_temporaries`).

    Raises:
        FileExistsError: ``run_dir`` exists and holds files.
    """
    if run_dir is not None:
        run_dir = Path(run_dir)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise FileExistsError(
                message(
                    f"run folder {run_dir}",
                    "be new or empty (runs are never overwritten)",
                    "an existing folder with files" if run_dir.is_dir() else "a file",
                    "choose another folder, or leave it out for a new timestamped one",
                )
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for earlier in out_dir.iterdir():  # what killed runs left half-written
        if earlier.is_dir():
            remove_stale_temporaries(earlier)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        candidate = out_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(message(f"run folders in {out_dir}", "be creatable", "10000 taken"))


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def write_csv_atomic(path: str | Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """Write ``rows`` (one dict per line, columns in first-seen order) as CSV, atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def epoch_row(
    epoch: int,
    *,
    lr: float,
    train_loss: float,
    metrics: Mapping[str, object],
    seconds: float,
    images_per_second: float,
) -> dict[str, object]:
    """One line of ``metrics.csv``: the epoch's training loss and validation metrics.

    Per-class IoU and Dice become ``iou_<class>`` and ``dice_<class>`` columns.
    """
    row: dict[str, object] = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "val_loss": metrics.get("loss", math.nan),
    }
    for key in SUMMARY_KEYS:
        row[key] = metrics[key]
    for name, scores in metrics.get("classes", {}).items():
        row[f"iou_{name}"] = scores["iou"]
    for name, scores in metrics.get("classes", {}).items():
        row[f"dice_{name}"] = scores["dice"]
    row["seconds"] = seconds
    row["images_per_second"] = images_per_second
    return row
