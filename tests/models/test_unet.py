"""U-Net: the paper's shapes, the size arithmetic of the unpadded form, options and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pixelwise.models import create_model
from pixelwise.models.unet import unet_output_size, unet_valid_sizes_near
from pixelwise.nn.trace import trace_stages

# Figure 1 of the paper, per stage: (channels at base width 64, spatial size) for a 572 input.


PAPER_STAGES = [
    ("down.0", 64, 568),
    ("pool.0", 64, 284),
    ("down.1", 128, 280),
    ("pool.1", 128, 140),
    ("down.2", 256, 136),
    ("pool.2", 256, 68),
    ("down.3", 512, 64),
    ("pool.3", 512, 32),
    ("bottom", 1024, 28),
    ("up.3", 512, 56),
    ("dec.3", 512, 52),
    ("up.2", 256, 104),
    ("dec.2", 256, 100),
    ("up.1", 128, 200),
    ("dec.1", 128, 196),
    ("up.0", 64, 392),
    ("dec.0", 64, 388),
    ("head", 2, 388),
]


def _paper_unet(**options):
    return create_model(
        "unet", num_classes=2, in_channels=1, padding="valid", batch_norm=False, **options
    )


def test_paper_shapes_at_572_at_narrow_width():
    torch.manual_seed(0)
    model = _paper_unet(base_width=4)
    stages = trace_stages(model, (1, 1, 572, 572), receptive_fields=False)
    expected = [(n, (1, c if n == "head" else c // 16, s, s)) for n, c, s in PAPER_STAGES]
    assert [(s.name, s.shape) for s in stages] == expected
    assert model.output_size(572) == 388


def test_paper_shapes_and_parameter_count_at_full_width():
    # Full width traced on the meta device: the real channel arithmetic without the compute.
    with torch.device("meta"):
        model = _paper_unet()
        stages = trace_stages(model, (1, 1, 572, 572), receptive_fields=False)
    assert [(s.name, s.shape) for s in stages] == [(n, (1, c, s, s)) for n, c, s in PAPER_STAGES]

    # Counted by hand from Figure 1: 3×3 convs, 2×2 up-convs, the 1×1 head (weights + biases).
    def conv(k, i, o):
        return k * k * i * o + o

    widths = [64, 128, 256, 512, 1024]
    down = sum(
        conv(3, i, o) + conv(3, o, o) for i, o in zip([1, *widths[:-1]], widths, strict=True)
    )
    up = sum(conv(2, 2 * w, w) + conv(3, 2 * w, w) + conv(3, w, w) for w in widths[:-1])
    assert sum(p.numel() for p in model.parameters()) == down + up + conv(1, 64, 2) == 31_030_658


def _unchecked_sizes(model, size):
    """Run the layers without the size check; return (pool input sizes, output size) or None."""
    seen = []
    hooks = [
        p.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1])) for p in model.pool
    ]
    try:
        with torch.no_grad():
            out = model._encode_decode(torch.zeros(1, 1, size, size))
    except RuntimeError:  # a feature map shrank below the kernel size
        return None
    finally:
        for h in hooks:
            h.remove()
    return seen, out.shape[-1]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_size_arithmetic_matches_forward_passes(depth):
    # Brute force: a size is valid when the layers run and every pooling sees an even size.
    torch.manual_seed(0)
    model = create_model(
        "unet", num_classes=1, in_channels=1, depth=depth, base_width=1, padding="valid"
    ).eval()
    valid = {}
    for size in range(1, 110):
        result = _unchecked_sizes(model, size)
        if result is not None and all(s % 2 == 0 for s in result[0]) and result[1] >= 1:
            valid[size] = result[1]
    assert len(valid) >= 3
    for size in range(1, 110):
        assert model.is_valid_input_size(size) == (size in valid), size
        assert unet_output_size(size, depth=depth) == valid.get(size), size
        if size in valid:
            assert model.output_size(size) == valid[size]
    for size in range(1, 110 - 2**depth):
        lower = max((s for s in valid if s <= size), default=None)
        upper = min(s for s in valid if s >= size)
        assert model.valid_input_sizes_near(size) == (lower, upper), size


def test_paper_sizes_from_the_arithmetic():
    assert unet_output_size(572) == 388
    assert unet_valid_sizes_near(572) == (572, 572)
    assert unet_valid_sizes_near(500) == (492, 508)
    assert unet_valid_sizes_near(10) == (None, 188)
    assert unet_output_size(188) == 4 and unet_output_size(172) is None
    assert unet_output_size(67, padding="same") == 67
    assert unet_valid_sizes_near(67, padding="same") == (67, 67)


def test_valid_forward_on_a_valid_size_has_the_predicted_size():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, depth=2, base_width=2, padding="valid").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 60, 44))
    assert out.shape == (2, 3, model.output_size(60), model.output_size(44)) == (2, 3, 20, 4)


def test_invalid_size_is_one_line_naming_the_nearest_valid_sizes():
    model = create_model("unet", num_classes=2, base_width=1, padding="valid")
    with pytest.raises(ValueError) as info:
        model(torch.zeros(1, 3, 572, 500))
    assert str(info.value) == (
        "input width must be 16·k + 124 with k >= 4 (padding='valid', depth 4), got 500; "
        "the nearest valid sizes are 492 or 508; crop or pad the image, or use padding='same'"
    )
    with pytest.raises(ValueError, match=r"^input height must .* got 100; .* 188 \(the smallest\)"):
        model(torch.zeros(1, 3, 100, 572))
    with pytest.raises(ValueError, match=r"^input size must .* got 573;"):
        model.output_size(573)
    with pytest.raises(
        TypeError, match=r"^input size must be an int \(one axis\), got \(572, 572\)"
    ):
        model.output_size((572, 572))


def test_valid_padding_tiles_agree_with_the_whole_image():
    # No padding anywhere: a tile at an offset that is a multiple of 2**depth predicts exactly
    # the matching window of the whole image's prediction (overlap-tile prediction, paper §2).
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, depth=2, base_width=3, padding="valid")
    model = model.double().eval()
    image = torch.randn(1, 3, 60, 64, dtype=torch.float64)
    with torch.no_grad():
        whole = model(image)  # (1, 2, 20, 24)
        tile = model(image[..., 8:52, 12:56])  # 44 -> 4 pixels
    assert tile.shape[-2:] == (4, 4)
    torch.testing.assert_close(tile, whole[..., 8:12, 12:16], rtol=0, atol=1e-12)


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_same_padding_keeps_odd_sizes(upsampling, depth):
    torch.manual_seed(0)
    model = create_model(
        "unet", num_classes=4, depth=depth, base_width=2, upsampling=upsampling
    ).eval()
    assert model.size_divisor == 2**depth
    with torch.no_grad():
        out = model(torch.randn(2, 3, 67, 45))
    assert out.shape == (2, 4, 67, 45)
    assert torch.isfinite(out).all()


def test_same_padding_on_an_image_smaller_than_the_divisor():
    model = create_model("unet", num_classes=2, base_width=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 5, 7)).shape == (1, 2, 5, 7)


def test_depth_sets_levels_widths_and_bottom_size():
    model = create_model("unet", num_classes=2, depth=3, base_width=5)
    stages = {s.name: s.shape for s in trace_stages(model, (1, 3, 67, 45), receptive_fields=False)}
    assert len(model.pool) == 3 and "pool.3" not in stages
    # Padded inside to 72×48, then three halvings.
    assert stages["bottom"] == (1, 40, 9, 6)
    assert stages["dec.0"] == (1, 5, 72, 48)
    assert stages["head"] == (1, 2, 72, 48)


def test_upsampling_modes_halve_channels_and_double_size():
    x = torch.randn(1, 16, 7, 5)
    for mode, params_per_pair in (("transposed", 4), ("bilinear", 1)):
        model = create_model("unet", num_classes=2, depth=1, base_width=8, upsampling=mode)
        up = model.up[0]
        assert up(x).shape == (1, 8, 14, 10)
        assert sum(p.numel() for p in up.parameters()) == params_per_pair * 16 * 8 + 8
    # Bilinear mode is interpolation then the 1×1 convolution.
    conv = up[1]
    expected = conv(nn.functional.interpolate(x, scale_factor=2, mode="bilinear"))
    torch.testing.assert_close(up(x), expected)


def test_batch_norm_option():
    with_bn = create_model("unet", num_classes=2, depth=2, base_width=4)
    without = create_model("unet", num_classes=2, depth=2, base_width=4, batch_norm=False)
    count = sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert count == 2 * (2 * 2 + 1)  # two per double conv, five double convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())


def test_weights_follow_the_paper_initialisation():
    # Gaussian with std sqrt(2 / N), N = 9 · input channels for a 3×3 convolution.
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, depth=2, base_width=32, batch_norm=False)
    conv = model.bottom[0][0]  # 64 -> 128
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.02)
    assert conv.bias.abs().max().item() == 0
    up = model.up[1]  # 128 -> 64, one tap of each input channel per output unit
    assert up.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.03)


def test_valid_padding_trains_with_finite_gradients_and_evaluates_deterministically():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, depth=2, base_width=2, padding="valid")
    x = torch.randn(2, 3, 44, 48)
    model(x).logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"padding": "Valid"}, ValueError, r"padding must be one of .* got 'Valid'; did you mean"),
        ({"upsampling": "nearest"}, ValueError, r"upsampling must be one of"),
        ({"depth": 0}, ValueError, r"depth must be an integer >= 1, got 0"),
        ({"base_width": 2.5}, ValueError, r"base_width must be an integer >= 1, got 2.5"),
        ({"batch_norm": "yes"}, TypeError, r"batch_norm must be True or False, got 'yes'"),
    ],
)
def test_options_are_checked(options, error, pattern):
    with pytest.raises(error, match=pattern):
        create_model("unet", num_classes=2, **options)


def test_a_valid_size_is_called_valid_with_its_neighbours():
    model = create_model("unet", num_classes=2, base_width=2, padding="valid")
    assert model.describe_input_size(572, "height") == (
        "height 572 is a valid input size; the valid heights next to it are 556 and 588"
    )
    assert model.describe_input_size(570, "width") == (
        "width 570 is not a valid input size for this network; nearest valid: 556 or 572"
    )
    assert model.describe_input_size(10) == (
        "size 10 is not a valid input size for this network; nearest valid: 188 (the smallest)"
    )
    assert model.describe_input_size(188) == (
        "size 188 is a valid input size; the valid sizes next to it are - and 204"
    )
