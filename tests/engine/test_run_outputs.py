"""What a run writes: new folders, atomic CSV, curves and overlays."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.engine.runs import create_run_dir, write_csv_atomic
from pixelwise.report.palette import class_palette, overlay, save_overlay, to_rgb
from pixelwise.report.plots import plot_history


def test_run_folders_are_new_every_time(tmp_path):
    first, second = create_run_dir(tmp_path), create_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        (first / "x").write_text("x")
        create_run_dir(tmp_path, first)
    assert create_run_dir(tmp_path, tmp_path / "named") == tmp_path / "named"


def test_csv_is_written_atomically_with_all_columns(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": math.nan, "extra": 3}]
    path = write_csv_atomic(tmp_path / "m.csv", rows)
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert read == [
        {"epoch": "1", "loss": "0.5", "extra": ""},
        {"epoch": "2", "loss": "nan", "extra": "3"},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_plots_are_pngs(tmp_path):
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 2 / e, "mean_iou": e / 4} for e in (1, 2, 3)
    ]
    paths = plot_history(rows, tmp_path)
    assert [p.name for p in paths] == ["loss.png", "miou.png"]
    for path in paths:
        assert Image.open(path).format == "PNG"


def test_overlay_blends_class_colours_and_keeps_the_rest():
    rgb = to_rgb(torch.full((1, 2, 3), 0.5))  # grey (2, 3, 3)
    assert rgb.shape == (2, 3, 3) and (rgb == 128).all()
    mask = np.array([[0, 1, 255], [2, 0, 1]])
    out = overlay(rgb, mask, class_palette(3), alpha=1.0, background=0)
    colors = class_palette(3)
    assert (out[0, 1] == colors[1]).all() and (out[1, 0] == colors[2]).all()
    assert (out[0, 0] == 128).all() and (out[0, 2] == 128).all()  # background, ignored


def test_save_overlay_enlarges_small_images(tmp_path):
    image = torch.rand(1, 50, 60)
    mask = torch.zeros(50, 60, dtype=torch.int64)
    path = save_overlay(tmp_path / "o.png", image, mask, mask, num_classes=2)
    # factor 4 (50 → 200 ≥ 192), under an 18-pixel title strip, over a one-line legend (30)
    assert Image.open(path).size == (3 * 240 + 2 * 4, 18 + 200 + 30)
