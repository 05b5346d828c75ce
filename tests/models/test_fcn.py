"""FCN-32s/16s/8s: stage sizes, bilinear upsampling, the skip fusion, VGG16 weight transfer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import vgg as tv_vgg

from pixelwise.models import create_model
from pixelwise.models.fcn import FCN, BilinearUpsample
from pixelwise.nn.trace import trace_stages
from pixelwise.nn.upsample import bilinear_kernel

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
SMALL = 0.0625  # channels 4…32, fc6/fc7 256
K = 5


def _model(name: str, *, width: float = SMALL, num_classes: int = K, **options) -> FCN:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, width=width, **options)


def _images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _capture(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    for name in names:

        def hook(_module, _inputs, output, name=name):
            seen[name] = output

        model.get_submodule(name).register_forward_hook(hook)
    return seen


# --- stage sizes ---------------------------------------------------------------------------

EXPECTED_TAIL = {
    "fcn32s": [("upscore", 32)],
    "fcn16s": [("upscore2", 16), ("score_pool4", 16), ("upscore16", 1)],
    "fcn8s": [
        ("upscore2", 16),
        ("score_pool4", 16),
        ("upscore_pool4", 8),
        ("score_pool3", 8),
        ("upscore8", 1),
    ],
}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize(("size", "padded"), [(224, 224), (500, 512)])
def test_stages_at_the_papers_sizes_with_full_width(name, size, padded):
    # Shapes only, so the full-width net is built and traced on the meta device (no memory,
    # no arithmetic); test_meta_trace_matches_a_real_run shows meta gives the CPU's shapes.
    with torch.device("meta"):
        model = create_model(name, num_classes=21)
        stages = trace_stages(model, (1, 3, size, size), receptive_fields=False)
    got = {s.name: s.shape for s in stages}
    assert [s.name for s in stages] == list(model.stage_names)
    for b, channels in enumerate((64, 128, 256, 512, 512), start=1):
        side = padded // 2**b
        assert got[f"encoder.pool{b}"] == (1, channels, side, side)
    side = padded // 32
    assert got["fc6"] == got["fc7"] == (1, 4096, side, side)
    assert got["score_fr"] == (1, 21, side, side)
    final = {"fcn32s": "upscore", "fcn16s": "upscore16", "fcn8s": "upscore8"}[name]
    for stage, stride in EXPECTED_TAIL[name]:
        side = padded // stride if stage != final else padded
        assert got[stage] == (1, 21, side, side), stage


def test_meta_trace_matches_a_real_run():
    real = trace_stages(_model("fcn8s").eval(), (1, 3, 67, 45), receptive_fields=False)
    with torch.device("meta"):
        meta = trace_stages(_model("fcn8s"), (1, 3, 67, 45), receptive_fields=False)
    assert real == meta
    assert real[0].shape == (1, 4, 48, 32)  # padded to 96×64


@pytest.mark.parametrize("name", VARIANTS)
def test_odd_size_gives_logits_at_input_size(name):
    model = _model(name).eval()
    with torch.no_grad():
        out = model(_images(2, 3, 67, 45))
    assert out.shape == (2, K, 67, 45)
    assert torch.isfinite(out).all()
    assert model.size_divisor == 32


@pytest.mark.parametrize("name", VARIANTS)
def test_other_channel_counts(name):
    model = _model(name, num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        assert model(_images(1, 1, 33, 70)).shape == (1, 2, 33, 70)


@pytest.mark.parametrize(("name", "params"), [("fcn32s", 134e6), ("fcn8s", 134e6)])
def test_parameter_count_is_the_papers(name, params):
    # Table 1 of the paper: FCN-VGG16 has 134M parameters (21 classes).
    with torch.device("meta"):
        model = create_model(name, num_classes=21)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.005


# --- upsampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
@pytest.mark.parametrize("depthwise", [False, True])
def test_upsampling_is_bilinear_interpolation_at_init_borders_included(factor, depthwise):
    up = BilinearUpsample(3, factor, depthwise=depthwise)
    x = _images(2, 3, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(up(x), _bilinear(x, factor), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_upsampling_layer_starts_bilinear(name):
    model = _model(name)
    ups = {n: m for n, m in model.named_modules() if isinstance(m, BilinearUpsample)}
    assert len(ups) == {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}[name]
    for n, up in ups.items():
        w = up.deconv.weight  # (K, K or 1, 2f, 2f)
        kernel = bilinear_kernel(2 * up.factor)
        diagonal = w[:, 0] if up.deconv.groups == K else w[range(K), range(K)]
        assert torch.equal(diagonal, kernel.expand(K, -1, -1)), n
        assert w.detach().abs().sum().item() == pytest.approx(K * kernel.sum().item()), n


def test_final_upsampling_is_fixed_unless_asked_and_two_x_steps_learn():
    fixed = _model("fcn8s")
    assert not fixed.upscore8.deconv.weight.requires_grad
    assert fixed.upscore8.deconv.groups == K
    assert fixed.upscore2.deconv.weight.requires_grad
    assert fixed.upscore_pool4.deconv.weight.requires_grad
    assert fixed.upscore2.deconv.groups == 1  # full K×K, as in the paper
    learned = _model("fcn8s", learn_final_upsample=True)
    assert learned.upscore8.deconv.weight.requires_grad


# --- skip fusion ---------------------------------------------------------------------------


def _crop(x: torch.Tensor) -> torch.Tensor:
    # 67×45 is padded to 96×64 by pad_to_multiple: 14 top, 15 bottom, 9 left, 10 right.
    return x[..., 14 : 14 + 67, 9 : 9 + 45]


def test_fcn32s_is_its_scores_interpolated_and_cropped():
    model = _model("fcn32s").eval()
    seen = _capture(model, ["score_fr"])
    with torch.no_grad():
        out = model(_images(2, 3, 67, 45))
    assert seen["score_fr"].shape == (2, K, 3, 2)
    torch.testing.assert_close(out, _crop(_bilinear(seen["score_fr"], 32)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_zero_skip_scores_make_finer_nets_start_from_fcn32s_scores(name):
    # With fcn32s's weights shared, the finer net's skips add zero at init, so its output is
    # fcn32s's own score_fr taken through bilinear ×2 steps and the final step instead.
    coarse = _model("fcn32s").eval()
    fine = _model(name).eval()
    result = fine.load_state_dict(coarse.state_dict(), strict=False)
    assert all(not k.startswith(("encoder", "fc6", "fc7", "score_fr")) for k in result.missing_keys)
    assert result.unexpected_keys == ["upscore.deconv.weight"]
    for skip in ("score_pool4", "score_pool3"):
        if hasattr(fine, skip):
            assert not getattr(fine, skip).weight.any() and not getattr(fine, skip).bias.any()
    seen = _capture(coarse, ["score_fr"])
    x = _images(2, 3, 67, 45)
    with torch.no_grad():
        coarse(x)
        out = fine(x)
    expected = _bilinear(seen["score_fr"], 2)
    if name == "fcn8s":
        expected = _bilinear(expected, 2)
    expected = _bilinear(expected, 16 if name == "fcn16s" else 8)
    torch.testing.assert_close(out, _crop(expected), rtol=0, atol=1e-5)


def test_fcn8s_fuses_pool4_then_pool3_scores_before_the_final_step():
    model = _model("fcn8s").eval()
    torch.manual_seed(2)
    for skip in (model.score_pool4, model.score_pool3):  # as if trained
        torch.nn.init.normal_(skip.weight, std=0.1)
        torch.nn.init.normal_(skip.bias, std=0.1)
    seen = _capture(model, ["score_fr", "score_pool4", "score_pool3"])
    with torch.no_grad():
        out = model(_images(2, 3, 67, 45))
    assert seen["score_pool3"].abs().sum() > 0 and seen["score_pool4"].abs().sum() > 0
    fuse_pool4 = _bilinear(seen["score_fr"], 2) + seen["score_pool4"]
    fuse_pool3 = _bilinear(fuse_pool4, 2) + seen["score_pool3"]
    torch.testing.assert_close(out, _crop(_bilinear(fuse_pool3, 8)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_zero_initialised_skips_still_receive_gradient(name):
    model = _model(name).train()
    torch.manual_seed(3)
    target = torch.randint(0, K, (2, 37, 53))
    F.cross_entropy(model(_images(2, 3, 37, 53)), target).backward()
    for p in model.parameters():
        assert p.grad is None if not p.requires_grad else torch.isfinite(p.grad).all()
    assert model.score_pool4.weight.grad.abs().sum() > 0
    assert model.encoder.block1[0].weight.grad.abs().sum() > 0


def test_dropout_is_active_in_training_only():
    model = _model("fcn32s")
    x = _images(1, 3, 64, 64)
    torch.manual_seed(4)
    with torch.no_grad():
        a, b = model.train()(x), model(x)
        c, d = model.eval()(x), model(x)
    assert not torch.equal(a, b)
    assert torch.equal(c, d)


# --- local VGG16 weights -------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A torchvision vgg16 saved to a file, and a full-width fcn8s built from that file."""
    torch.manual_seed(5)
    vgg = torchvision.models.vgg16(weights=None, init_weights=False).eval()
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    model = create_model("fcn8s", num_classes=21, encoder_weights=str(path)).eval()
    return vgg, model


@pytest.mark.slow
def test_vgg16_file_fills_encoder_and_fc6_fc7_exactly(loaded):
    vgg, model = loaded
    ours = model.encoder.state_dict()
    theirs = vgg.features.state_dict()
    assert len(ours) == len(theirs) == 26
    for own, file in zip(ours.values(), theirs.values(), strict=True):
        assert torch.equal(own, file)
    assert torch.equal(model.fc6[0].weight.flatten(1), vgg.classifier[0].weight)
    assert torch.equal(model.fc7[0].bias, vgg.classifier[3].bias)


@pytest.mark.slow
def test_converted_fc6_fc7_compute_what_the_classifier_computes(loaded):
    # On a 7×7 pool5 (a 224×224 image) fc6's centre sees the whole map, none of its padding,
    # so it is torchvision's fully connected layer; only that position is computed here.
    vgg, model = loaded
    pool5 = _images(1, 512, 7, 7)
    fc6 = model.fc6[0]
    with torch.no_grad():
        centre = F.relu(F.conv2d(pool5, fc6.weight, fc6.bias))  # (1, 4096, 1, 1)
        fc7 = model.fc7(centre)
        expected = vgg.classifier[:5](pool5.flatten(1))  # fc6, ReLU, dropout, fc7, ReLU
    torch.testing.assert_close(fc7.flatten(1), expected, rtol=1e-4, atol=1e-5)
    assert fc6.padding == (3, 3) and fc6.kernel_size == (7, 7)


@pytest.mark.slow
def test_missing_and_wrong_files_are_one_line(loaded, tmp_path):
    _, model = loaded
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match="encoder_weights must be an existing file"):
        model.load_vgg16(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00 not a state dict")
    with pytest.raises(ValueError, match="encoder_weights must be a readable torch") as info:
        model.load_vgg16(garbage)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    # A features-only file: fc6 has nothing to come from, and the encoder is left as it was.
    features = tmp_path / "features.pth"
    layers = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in layers.state_dict().items()}, features)
    before = model.encoder.block1[0].weight.clone()
    with pytest.raises(ValueError, match=r"^encoder_weights must hold 'classifier\.0\.weight'"):
        model.load_vgg16(features)
    assert torch.equal(model.encoder.block1[0].weight, before)
    assert not torch.equal(layers[0].weight, before)


def test_weights_need_full_width_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError) as info:
        create_model("fcn32s", num_classes=2, width=0.5, encoder_weights=str(tmp_path / "x.pth"))
    assert str(info.value) == (
        "encoder_weights must be used with width=1.0 and in_channels=3 (torchvision's vgg16 "
        "layout), got width=0.5, in_channels=3; build with width=1.0 and in_channels=3, "
        "or leave encoder_weights=None"
    )


def test_weights_need_three_input_channels(tmp_path):
    with pytest.raises(ValueError, match=r"got width=1\.0, in_channels=1;"):
        create_model("fcn8s", num_classes=2, in_channels=1, encoder_weights=str(tmp_path))
    with torch.device("meta"):  # the method checks too, before reading the file
        model = _model("fcn32s", width=1.0, in_channels=1)
    with pytest.raises(ValueError, match=r"got width=1\.0, in_channels=1;"):
        model.load_vgg16(tmp_path / "x.pth")
