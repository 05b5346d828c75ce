"""``pixelwise predict --shard i/N``: disjoint shards whose union is the unsharded run, byte
for byte; the shard of an image depends on its name alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.engine.checkpoint import save_checkpoint
from pixelwise.inference import parse_shard, shard_images, shard_of
from pixelwise.models import create_model

STEMS = [f"img{i:02d}" for i in range(12)]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, depth=2, base_width=4)
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt",
        model=model,
        class_names=("a", "b", "c"),
        ignore_index=255,
        normalisation=None,
        config={},
        epoch=1,
        metrics={},
    )
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in STEMS:
        pixels = rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{stem}.png")
    return checkpoint, images


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_union_of_shards_is_the_unsharded_run_byte_for_byte(setup, tmp_path, capsys):
    checkpoint, images = setup
    assert main(["predict", str(checkpoint), str(images), "--out", str(tmp_path / "all")]) == 0
    union: dict[str, str] = {}
    sizes = []
    for index in range(3):
        out = tmp_path / f"shard{index}"
        argv = ["predict", str(checkpoint), str(images), "--out", str(out)]
        assert main([*argv, "--shard", f"{index}/3"]) == 0
        printed = capsys.readouterr().out
        written = files(out) if out.exists() else {}
        sizes.append(len(written) // 3)
        assert f"shard {index}/3: {sizes[-1]} of 12 image(s)" in printed
        assert not set(written) & set(union)  # disjoint
        union.update(written)
    assert union == files(tmp_path / "all")
    assert sum(sizes) == 12


def test_the_shard_of_an_image_depends_on_its_name_alone(tmp_path):
    paths = [tmp_path / f"{stem}.png" for stem in STEMS]
    elsewhere = [Path("/other/folder") / f"{stem}.tif" for stem in reversed(STEMS)]
    for count in (1, 2, 5):
        shards = [shard_images(paths, i, count) for i in range(count)]
        assert sorted(p for s in shards for p in s) == sorted(paths)  # all, once
        for i in range(count):
            assert [p.stem for p in shard_images(elsewhere, i, count)] == [
                p.stem for p in reversed(shards[i])
            ]
    # A folder that grows keeps every existing image in its shard.
    grown = [*paths, tmp_path / "new.png"]
    assert [shard_of(p, 4) for p in grown[:-1]] == [shard_of(p, 4) for p in paths]
    digest = hashlib.sha256(b"img00").digest()
    assert shard_of(paths[0], 7) == int.from_bytes(digest[:8], "big") % 7


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "1/0", "1/2/3", ""])
def test_bad_shards_are_one_line_errors(text, setup, tmp_path, capsys):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
    checkpoint, images = setup
    argv = [
        "predict",
        str(checkpoint),
        str(images),
        "--out",
        str(tmp_path / "o"),
        f"--shard={text}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard" in err and not (tmp_path / "o").exists()


def test_parse_shard_reads_i_of_n():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)
