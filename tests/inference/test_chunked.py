"""Chunked prediction over Dask (:mod:`pixelwise.inference.chunked`): on a local cluster of two
worker processes, a giant image read from a TIFF or a Zarr folder is predicted exactly as the
in-process tiled prediction predicts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from pixelwise.engine.checkpoint import load_model, save_checkpoint  # noqa: E402
from pixelwise.inference.chunked import (  # noqa: E402
    default_depth,
    pooling_factor,
    predict_chunked,
    predict_chunked_to_zarr,
)
from pixelwise.inference.tiling import predict as predict_tiled  # noqa: E402
from pixelwise.models import create_model  # noqa: E402

pytestmark = pytest.mark.slow
HEIGHT, WIDTH = 2304, 2048  # a few thousand pixels a side


def checkpoint(folder: Path, padding: str = "valid") -> Path:
    torch.manual_seed(0)
    model = create_model(
        "unet", num_classes=3, in_channels=3, depth=2, base_width=4, padding=padding
    )
    return save_checkpoint(
        folder / f"{padding}.pt",
        model=model,
        class_names=("a", "b", "c"),
        ignore_index=255,
        normalisation={"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.2, 0.3]},
        config={},
        epoch=1,
        metrics={},
    )


def picture(height: int, width: int) -> np.ndarray:
    """Smooth structure plus noise, so that the classes vary across the image."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = 127 + 100 * np.sin(x / 37.0)[..., None] * np.cos(y / 53.0)[..., None]
    noise = rng.normal(0, 25, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def in_process(path: Path, pixels: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255)
    return predict_tiled(load_model(path), image, tile=256)  # (K, H, W)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def test_tiff_on_a_local_cluster_equals_the_in_process_prediction(tmp_path, cluster):
    path = checkpoint(tmp_path)
    pixels = picture(HEIGHT, WIDTH)
    tiff = tmp_path / "giant.tif"
    tifffile.imwrite(tiff, pixels, tile=(256, 256))
    expected = in_process(path, pixels)
    lazy = predict_chunked(path, tiff, chunk=700, tile=256)
    assert lazy.shape == (HEIGHT, WIDTH) and lazy.npartitions > 4
    mask = cluster.compute(lazy).result()
    np.testing.assert_array_equal(mask, expected.argmax(0).numpy())
    assert len(np.unique(mask)) > 1
    logits = cluster.compute(predict_chunked(path, tiff, chunk=700, output="logits")).result()
    np.testing.assert_allclose(logits, expected.permute(1, 2, 0).numpy(), atol=1e-4)


def test_zarr_in_zarr_out_atomically(tmp_path, cluster):
    path = checkpoint(tmp_path)
    pixels = picture(600, 700)
    source = tmp_path / "image.zarr"
    stored = zarr.open_array(
        str(source), mode="w", shape=pixels.shape, chunks=(128, 128, 3), dtype=pixels.dtype
    )
    stored[:] = pixels
    out = predict_chunked_to_zarr(path, source, tmp_path / "mask.zarr", chunk=256)
    written = zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_array_equal(written, in_process(path, pixels).argmax(0).numpy())
    with pytest.raises(FileExistsError, match=r"mask\.zarr"):
        predict_chunked_to_zarr(path, source, out, chunk=256)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_same_padding_model_differs_from_tiling_less_than_tiling_from_one_pass(tmp_path):
    """Not exact: a same-padding U-Net sees each tile's (and chunk's) zero padding. Chunks
    behave like larger tiles, so the chunked prediction is nearer the in-process tiled one
    than that is to one whole-image pass, and more borrowed context brings it nearer."""
    path = checkpoint(tmp_path, padding="same")
    pixels = picture(500, 450)
    tiled = in_process(path, pixels).permute(1, 2, 0).numpy()  # 256-pixel tiles
    image = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255)
    whole = predict_tiled(load_model(path), image, tile=512).permute(1, 2, 0).numpy()
    gaps = []
    for depth in (16, 64):
        lazy = predict_chunked(path, pixels, chunk=160, tile=128, depth=depth, output="logits")
        gaps.append(np.abs(lazy.compute(scheduler="threads") - tiled).mean())
    assert gaps[1] < gaps[0] < np.abs(tiled - whole).mean()


def test_depth_and_chunks_follow_the_pooling_grid(tmp_path):
    model = load_model(checkpoint(tmp_path))
    assert pooling_factor(model) == 4  # depth 2: 2**2
    depth = default_depth(model, tile=256)
    margin = model.output_margin
    assert depth % 4 == 0 and margin <= depth < margin + 4
    lazy = predict_chunked(model, np.zeros((300, 200, 3), np.uint8), chunk=99)
    assert lazy.chunks[0][0] % 4 == 0 and min(lazy.chunks[0]) >= depth


def test_bad_images_are_one_line_errors(tmp_path):
    path = checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"3 channel\(s\) last"):
        predict_chunked(path, np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        predict_chunked(path, np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tif"):
        predict_chunked(path, tmp_path / "nowhere.tif")
    with pytest.raises(ValueError, match="output"):
        predict_chunked(path, np.zeros((64, 64, 3), np.uint8), output="probabilities")
