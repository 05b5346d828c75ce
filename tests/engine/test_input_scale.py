"""A run trained at ``data.input_scale = 0.5``: its checkpoint predicts, evaluates and exports
at that scale, with outputs at the input's size, and validation agrees with ``evaluate``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.data.build import evaluation_dataset
from pixelwise.engine import Trainer
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.inference import predict_mask
from pixelwise.nn.rescale import Rescaled

SIZE = 64


def write_folder(root: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        top, left = rng.integers(0, SIZE - 24, 2)
        mask[top : top + 24, left : left + 24] = 1
        image = (255 * (0.2 + 0.6 * mask + 0.1 * rng.random((SIZE, SIZE)))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, last.pt) of one epoch of a tiny U-Net at input scale 0.5."""
    tmp = tmp_path_factory.mktemp("scaled")
    root = write_folder(tmp / "data")
    config = load_config(
        None,
        [
            "data.layout=folders",
            f"data.root={root}",
            "data.encoding={kind='index', num_classes=2}",
            "data.val_fraction=0.5",
            "data.input_scale=0.5",
            "model.options={depth=2, base_width=4}",
            "loss.name=ce",
            "train.epochs=1",
            "train.batch_size=3",
            "train.device=cpu",
            "train.overlays=1",
            f"train.out_dir={tmp / 'runs'}",
        ],
    )
    with Trainer(config) as trainer:
        result = trainer.fit()
    return root, result.last_path


def test_the_checkpoint_predicts_at_its_scale_with_the_inputs_size(run):
    _, last = run
    segmenter = load_model(last)
    assert segmenter.input_scale == 0.5 and isinstance(segmenter.network, Rescaled)
    assert segmenter.meta()["input_scale"] == 0.5 and segmenter.meta()["model_name"] == "unet"
    assert list(load_checkpoint(last).state_dict) == list(segmenter.network.network.state_dict())
    for size in ((SIZE, SIZE), (50, 70)):
        image = torch.rand(1, *size, generator=torch.Generator().manual_seed(0))
        assert predict_mask(segmenter, image).shape == size
        assert segmenter.predict(image, tile=32).shape == size  # tiled


def test_validation_equals_pixelwise_evaluate_on_the_checkpoint(run, capsys):
    root, last = run
    recorded = load_checkpoint(last).metrics
    assert sum(map(sum, recorded["confusion_matrix"])) == 3 * SIZE * SIZE  # full resolution
    assert main(["evaluate", str(last), str(root), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_images"] == 3
    assert evaluated["mean_iou"] == pytest.approx(recorded["mean_iou"], abs=1e-9)
    assert evaluated["pixel_accuracy"] == pytest.approx(recorded["pixel_accuracy"], abs=1e-9)
    # The recorded loss is that of the checkpoint's logits (scaled in, back to full size).
    segmenter = load_model(last)
    val = evaluation_dataset(segmenter.checkpoint.config["data"], "val")
    losses = [
        F.cross_entropy(segmenter.predict_logits(s["image"])[None], s["mask"][None]).item()
        for s in (val[i] for i in range(len(val)))
    ]
    assert recorded["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_predict_writes_masks_of_the_input_size_and_info_shows_the_scale(run, tmp_path, capsys):
    root, last = run
    out = tmp_path / "pred"
    assert main(["predict", str(last), str(root / "images"), "--out", str(out)]) == 0
    capsys.readouterr()
    masks = sorted(out.glob("*_mask.png"))
    assert len(masks) == 6
    assert {Image.open(m).size for m in masks} == {(SIZE, SIZE)}
    assert main(["info", str(last)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "input scale    0.5 (images resized by 0.5 in, logits back to the image size)" in lines


def test_exports_include_the_resizing_at_a_second_size(run, tmp_path, capsys):
    _, last = run
    segmenter = load_model(last)
    images = torch.rand(2, 1, 50, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = segmenter.network(images)  # the graph takes normalised images
    assert expected.shape == (2, 2, 50, 70)
    ts = tmp_path / "m.ts"
    assert main(["export", str(last), "--format", "torchscript", "--out", str(ts)]) == 0
    assert "any N, H, W" in capsys.readouterr().out
    files = {"pixelwise.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(ts), _extra_files=files)
    assert json.loads(files["pixelwise.json"])["input_scale"] == 0.5
    torch.testing.assert_close(traced(images), expected, atol=1e-5, rtol=1e-5)
    pytest.importorskip("onnx", reason="ONNX export needs pixelwise[export]")
    ort = pytest.importorskip("onnxruntime", reason="ONNX tests need pixelwise[export]")
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(last), "--out", str(onnx_path)]) == 0
    assert "(onnx, opset 17; input 'images' (N, C, H, W): any N, H, W)" in capsys.readouterr().out
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
