"""The VGG16 encoder: torchvision's layers regrouped by stage, and its weight transfer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from pixelwise.models.backbones import (
    VGG16_LAYOUT,
    VGGEncoder,
    check_width,
    read_state_dict,
    scale_channels,
    take_tensor,
)


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _torchvision_features(batch_norm: bool, width: float = 1.0) -> nn.Sequential:
    torch.manual_seed(1)
    layout = [v if v == "M" else scale_channels(v, width) for v in tv_vgg.cfgs["D"]]
    features = tv_vgg.make_layers(layout, batch_norm=batch_norm)
    for m in features.modules():  # non-trivial batch-norm state, so copying it is tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    return features.eval()


def _as_file_state(features: nn.Sequential) -> dict[str, torch.Tensor]:
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def test_layout_is_torchvisions_vgg16():
    assert tuple(tv_vgg.cfgs["D"]) == VGG16_LAYOUT
    assert sum(1 for v in VGG16_LAYOUT if v != "M") == 13


@pytest.mark.parametrize("batch_norm", [False, True])
def test_same_parameters_as_torchvision_vgg16_features(batch_norm):
    ours = VGGEncoder(batch_norm=batch_norm)
    theirs = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=batch_norm)
    assert [t.shape for t in ours.state_dict().values()] == [
        t.shape for t in theirs.state_dict().values()
    ]
    assert ours.channels == (64, 128, 256, 512, 512)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_loaded_encoder_computes_what_torchvision_computes(batch_norm):
    # Oracle: torchvision's own flat Sequential with the same tensors.
    theirs = _torchvision_features(batch_norm, width=0.25)
    ours = VGGEncoder(width=0.25, batch_norm=batch_norm).eval()
    ours.load_torchvision_features(_as_file_state(theirs), source="mem", what="weights")
    x = _images(2, 3, 64, 96)
    with torch.no_grad():
        pools = ours(x)
        expected = theirs(x)
    assert [p.shape[-2:] for p in pools] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    torch.testing.assert_close(pools[-1], expected, rtol=1e-5, atol=1e-5)
    for key, value in ours.state_dict().items():  # every tensor came from the file
        assert any(torch.equal(value, t) for t in theirs.state_dict().values()), key


def test_indices_and_sizes_undo_each_pooling():
    encoder = VGGEncoder(width=0.0625, ceil_mode=True).eval()
    with torch.no_grad():
        stages = encoder.forward_with_indices(_images(1, 3, 67, 45))
    assert [tuple(s.size) for s in stages] == [(67, 45), (34, 23), (17, 12), (9, 6), (5, 3)]
    assert [tuple(s.features.shape[-2:]) for s in stages] == [
        (34, 23),
        (17, 12),
        (9, 6),
        (5, 3),
        (3, 2),
    ]
    for s in stages:
        assert s.indices.shape == s.features.shape
        assert int(s.indices.max()) < s.size[0] * s.size[1]


def test_ceil_mode_rounds_odd_sizes_up_and_floor_mode_down():
    x = _images(1, 3, 45, 45)
    with torch.no_grad():
        up = VGGEncoder(width=0.0625, ceil_mode=True).eval()(x)
        down = VGGEncoder(width=0.0625, ceil_mode=False).eval()(x)
    assert [p.shape[-1] for p in up] == [23, 12, 6, 3, 2]
    assert [p.shape[-1] for p in down] == [22, 11, 5, 2, 1]


def test_other_in_channels_replace_the_first_convolution():
    encoder = VGGEncoder(in_channels=1, width=0.125)
    assert encoder.block1[0].weight.shape == (8, 1, 3, 3)
    with torch.no_grad():
        assert encoder(_images(2, 1, 32, 32))[-1].shape == (2, 64, 1, 1)


def test_init_is_torchvisions():
    encoder = VGGEncoder(batch_norm=True, width=0.5)
    conv = encoder.block3[0]
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    assert torch.equal(encoder.block3[1].weight, torch.ones(128))


def test_wrong_layout_names_the_tensor_the_file_lacks():
    vgg11 = tv_vgg.make_layers(tv_vgg.cfgs["A"])  # features.2 is a pool there, a conv in vgg16
    with pytest.raises(ValueError) as info:
        VGGEncoder().load_torchvision_features(_as_file_state(vgg11), source="v.pth", what="w")
    text = str(info.value)
    assert text.startswith("w must hold 'features.2.weight', got v.pth without it")
    assert "\n" not in text


def test_wrong_width_names_the_tensor_and_both_shapes():
    state = _as_file_state(_torchvision_features(False, width=0.5))
    with pytest.raises(
        ValueError,
        match=r"^w must hold 'features\.0\.weight' of shape \(64, 3, 3, 3\), "
        r"got \(32, 3, 3, 3\) in v\.pth; check the file is for this architecture$",
    ):
        VGGEncoder().load_torchvision_features(state, source="v.pth", what="w")


def test_take_tensor_returns_the_tensor_itself():
    t = torch.arange(6.0).reshape(2, 3)
    assert take_tensor({"a": t}, "a", (2, 3), source="s", what="w") is t


@pytest.mark.parametrize("bad", [0, -0.5, True, "1", math.nan, math.inf, None])
def test_width_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match=r"^width must be a positive number .*got "):
        check_width(bad)


def test_width_scales_and_rounds_channels():
    assert check_width(1) == 1.0
    assert [scale_channels(c, 0.125) for c in (64, 128, 512, 4096)] == [8, 16, 64, 512]
    assert scale_channels(64, 0.001) == 1


def test_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights file must be a readable torch") as info:
        read_state_dict(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
