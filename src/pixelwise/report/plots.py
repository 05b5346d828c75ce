"""Training curves as PNG files: loss per epoch and validation mean IoU per epoch.

matplotlib is imported only when a plot is drawn, and only its object-oriented API with the
Agg canvas is used: no pyplot, no global backend switch, nothing opens a window.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pixelwise._checks import message
from pixelwise._files import write_bytes_atomic


def _series(rows: Sequence[Mapping[str, object]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of column ``key``, leaving out rows where it is missing or NaN."""
    epochs, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and not math.isnan(value):
            epochs.append(float(row["epoch"]))
            values.append(float(value))
    return epochs, values


def _save(figure: object, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return write_bytes_atomic(path, buffer.getvalue())


def _finish(figure: object, axes: object, path: Path, *, title: str, xlabel: str, ylabel: str):
    """Label, grid and legend the axes, then write the figure."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_curves(
    rows: Sequence[Mapping[str, object]],
    keys: Mapping[str, str],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    log_scale: bool = False,
) -> Path:
    """Draw columns ``keys`` (column → legend label) of ``rows`` against ``epoch`` to a PNG.

    Args:
        rows: One dict per epoch with an ``"epoch"`` key (the rows of ``metrics.csv``).
        keys: Columns to draw and their legend labels; missing or NaN values are skipped.
        path: The PNG to write (atomically).
        title, ylabel: Axis texts.
        log_scale: A logarithmic y axis when every value drawn is positive (losses fall over
            orders of magnitude; the first validation losses can be far above the rest).
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError(message("rows", "hold at least one epoch", "none"))
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    drawn: list[float] = []
    for key, label in keys.items():
        epochs, values = _series(rows, key)
        if values:
            axes.plot(epochs, values, marker="o", markersize=3, label=label)
            drawn += values
    if log_scale and drawn and min(drawn) > 0:
        axes.set_yscale("log")
    return _finish(figure, axes, Path(path), title=title, xlabel="epoch", ylabel=ylabel)


def plot_history(rows: Sequence[Mapping[str, object]], out_dir: str | Path) -> list[Path]:
    """``loss.png`` (training and validation loss) and ``miou.png`` (validation mean IoU)."""
    out_dir = Path(out_dir)
    return [
        plot_curves(
            rows,
            {"train_loss": "training", "val_loss": "validation"},
            out_dir / "loss.png",
            title="Loss per epoch",
            ylabel="loss",
            log_scale=True,
        ),
        plot_curves(
            rows,
            {"mean_iou": "validation mean IoU"},
            out_dir / "miou.png",
            title="Validation mean IoU per epoch",
            ylabel="mean IoU",
        ),
    ]


def plot_series(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Draw ``label -> (xs, ys)`` lines to a PNG (e.g. validation score against training
    minutes, one line per model); NaN points are left out."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for label, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    return _finish(figure, axes, Path(path), title=title, xlabel=xlabel, ylabel=ylabel)
