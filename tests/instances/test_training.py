"""Training on instance labels records the post-processing chosen on the validation split."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixelwise.cli import main
from pixelwise.engine.checkpoint import load_checkpoint


def blob_folder(root, count: int = 6, size: int = 48):
    """Images of bright discs, two of them touching, with their instance labels."""
    rng = np.random.default_rng(0)
    for sub in ("images", "instances"):
        (root / sub).mkdir(parents=True)
    rows, cols = np.ogrid[:size, :size]
    for index in range(count):
        labels = np.zeros((size, size), np.uint16)
        centres = [(14, 14), (14, 29), (34, 22 + int(rng.integers(-4, 5)))]
        for label, (r, c) in enumerate(centres, start=1):
            labels[((rows - r) ** 2 + (cols - c) ** 2 <= 64) & (labels == 0)] = label
        image = np.where(labels > 0, 200, 40) + rng.normal(0, 10, (size, size))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{index}.png")
        Image.fromarray(labels).save(root / "instances" / f"{index}.png")
    return root


def test_a_three_class_run_records_its_instance_post_processing(tmp_path):
    data = blob_folder(tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[data]
layout = "instances"
root = "{data}"
instance_target = "three_class"
boundary_width = 1
val_fraction = 0.34
[model]
name = "unet"
options = {{ depth = 2, base_width = 4 }}
[loss]
name = "ce"
[train]
epochs = 2
batch_size = 2
overlays = 0
device = "cpu"
"""
    )
    assert main(["train", str(config), "--out-dir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    for name in ("best.pt", "last.pt", "best.safetensors"):
        chosen = load_checkpoint(run / name).instances
        assert chosen is not None, name
        assert chosen["method"] in ("components", "watershed") and chosen["interior_class"] == 1
        assert 0.0 <= chosen["score"] <= 1.0
    assert load_checkpoint(run / "best.pt").class_names == ("background", "interior", "boundary")
