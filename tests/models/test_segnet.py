"""SegNet and SegNet-Basic: stage sizes, unpooling at the encoder's indices, VGG16-BN weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from pixelwise.models import create_model
from pixelwise.nn.trace import trace_stages

SMALL = {"segnet": {"width": 0.125}, "segnet_basic": {"width": 8}}
K = 5


def _model(name: str, *, num_classes: int = K, **options) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **{**SMALL[name], **options})


def _images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _shapes(name: str, size: tuple[int, int], **options) -> dict[str, tuple[int, ...]]:
    # Shapes only, so the full-width net is built and traced on the meta device;
    # test_meta_trace_matches_a_real_run shows meta gives the CPU's shapes.
    with torch.device("meta"):
        model = create_model(name, num_classes=11, **options)
        stages = trace_stages(model, (1, 3, *size), receptive_fields=False)
    assert [s.name for s in stages] == list(model.stage_names)
    return {s.name: s.shape for s in stages}


# --- stage sizes ---------------------------------------------------------------------------

# CamVid's 360×480 with pooling rounding up: 45 -> 23 at pool4 (floor would give 22).
CAMVID_SIDES = [(180, 240), (90, 120), (45, 60), (23, 30), (12, 15)]


def test_segnet_stages_at_camvid_size():
    got = _shapes("segnet", (360, 480))
    for b, (channels, side) in enumerate(
        zip((64, 128, 256, 512, 512), CAMVID_SIDES, strict=True), start=1
    ):
        assert got[f"encoder.pool{b}"] == (1, channels, *side)
    before = [(360, 480), *CAMVID_SIDES[:4]]  # each unpooling restores the pre-pooling size
    decoded = {5: 512, 4: 256, 3: 128, 2: 64, 1: 64}
    for b in (5, 4, 3, 2, 1):
        unpooled = 512 if b == 5 else decoded[b + 1]
        assert got[f"unpool{b}"] == (1, unpooled, *before[b - 1])
        assert got[f"decode{b}"] == (1, decoded[b], *before[b - 1])
    assert got["classifier"] == (1, 11, 360, 480)


def test_segnet_basic_stages_at_camvid_size():
    got = _shapes("segnet_basic", (360, 480))
    for b in (1, 2, 3, 4):
        assert got[f"pool{b}"] == (1, 64, *CAMVID_SIDES[b - 1])
        before = (360, 480) if b == 1 else CAMVID_SIDES[b - 2]
        assert got[f"unpool{b}"] == got[f"decode{b}"] == (1, 64, *before)
    assert got["classifier"] == (1, 11, 360, 480)


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_meta_trace_matches_a_real_run(name):
    real = trace_stages(_model(name).eval(), (1, 3, 67, 45), receptive_fields=False)
    with torch.device("meta"):
        meta = trace_stages(_model(name), (1, 3, 67, 45), receptive_fields=False)
    assert real == meta
    assert real[0].shape[-2:] == (34, 23)  # 67×45 -> 34×23: rounded up


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_odd_size_gives_logits_at_input_size(name):
    model = _model(name).eval()
    with torch.no_grad():
        out = model(_images(2, 3, 67, 45))
    assert out.shape == (2, K, 67, 45)
    assert torch.isfinite(out).all()
    assert model.size_divisor == 1


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_tiny_and_other_channel_inputs(name):
    model = _model(name, num_classes=2, in_channels=4).eval()
    with torch.no_grad():
        assert model(_images(1, 4, 1, 3)).shape == (1, 2, 1, 3)
        assert model(_images(2, 4, 17, 31)).shape == (2, 2, 17, 31)


def test_segnet_parameter_count_is_the_papers():
    # Table 6 of the paper: SegNet has 29.5M parameters (CamVid, 11 classes).
    with torch.device("meta"):
        model = create_model("segnet", num_classes=11)
    assert abs(sum(p.numel() for p in model.parameters()) - 29.5e6) / 29.5e6 < 0.005


# --- the decoder mirrors the encoder -------------------------------------------------------


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_segnet_decoder_mirrors_the_thirteen_encoder_convolutions():
    with torch.device("meta"):
        model = create_model("segnet", num_classes=11)
    encoder = [(c.in_channels, c.out_channels) for c in _convs(model.encoder)]
    assert len(encoder) == 13
    decoder = [
        (c.in_channels, c.out_channels)
        for b in (5, 4, 3, 2, 1)
        for c in _convs(getattr(model, f"decode{b}"))
    ]
    decoder.append((model.classifier.in_channels, model.classifier.out_channels))
    mirrored = [(o, i) for i, o in reversed(encoder)]
    assert decoder[:-1] == mirrored[:-1]
    assert decoder[-1] == (64, 11)  # the last mirror (64 -> C) classifies instead


def test_segnet_basic_is_the_papers_small_net():
    model = create_model("segnet_basic", num_classes=11)
    convs = _convs(model)
    assert len(convs) == 9  # 4 encoders, 4 decoders, the classifier
    assert all(c.kernel_size == (7, 7) and c.out_channels == 64 for c in convs[:-1])
    assert all(c.bias is None for c in convs[:-1])
    assert convs[-1].kernel_size == (1, 1)
    for b in (1, 2, 3, 4):
        assert any(isinstance(m, nn.ReLU) for m in getattr(model, f"encode{b}").modules())
        decoder = getattr(model, f"decode{b}")
        assert not any(isinstance(m, nn.ReLU) for m in decoder.modules())
        assert any(isinstance(m, nn.BatchNorm2d) for m in decoder.modules())


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"kernel_size": 6}, r"^kernel_size must be odd .*got 6$"),
        ({"width": 0}, r"^width must be an integer >= 1, got 0$"),
    ],
)
def test_segnet_basic_options_are_checked(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        create_model("segnet_basic", num_classes=2, **options)


# --- unpooling puts values back where the maxima were ---------------------------------------


def _unpool_records(model: nn.Module, pools: dict[int, str], images: torch.Tensor):
    """Run ``model``, recording each pooling's indices and each unpooling's input/output."""
    pooled, unpooled = {}, {}
    hooks = []
    for b, pool_name in pools.items():

        def on_pool(_m, _inputs, output, b=b):
            pooled[b] = output[1]

        def on_unpool(_m, inputs, output, b=b):
            unpooled[b] = (inputs[0], inputs[1], output)

        hooks.append(model.get_submodule(pool_name).register_forward_hook(on_pool))
        hooks.append(model.get_submodule(f"unpool{b}").register_forward_hook(on_unpool))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return pooled, unpooled


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_decoder_places_values_at_the_encoders_pooling_indices(name):
    model = _model(name).eval()
    depth = 5 if name == "segnet" else 4
    pools = {b: f"encoder.pool{b}" if name == "segnet" else f"pool{b}" for b in range(1, depth + 1)}
    pooled, unpooled = _unpool_records(model, pools, _images(2, 3, 67, 45))
    for b in range(1, depth + 1):
        values, indices, out = unpooled[b]
        assert torch.equal(indices, pooled[b])  # the encoder's own indices, reused
        # Oracle: scatter each value to its index in a zero plane of the pre-pooling size.
        n, c, h, w = out.shape
        expected = torch.zeros(n, c, h * w).scatter_(2, indices.flatten(2), values.flatten(2))
        assert torch.equal(out, expected.view(n, c, h, w)), b
        pointed = torch.zeros(n, c, h * w, dtype=torch.bool)
        pointed.scatter_(2, indices.flatten(2), True)
        assert not out.flatten(2)[~pointed].any()  # zero wherever no index points


def test_rounding_up_lets_the_last_odd_column_be_chosen():
    # 45 wide: the 23rd window holds only column 44, so some maximum must come from it;
    # rounding down (22 windows) would never look at column 44.
    model = _model("segnet_basic").eval()
    pooled, _ = _unpool_records(model, {1: "pool1"}, _images(1, 3, 67, 45))
    assert pooled[1].shape[-2:] == (34, 23)
    assert torch.equal(pooled[1][..., -1] % 45, torch.full_like(pooled[1][..., -1], 44))
    assert (pooled[1][..., -1, :] // 45 == 66).all()


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_gradients_reach_the_input_through_unpooling(name):
    model = _model(name).train()
    x = _images(2, 3, 37, 53).requires_grad_(True)
    torch.manual_seed(3)
    target = torch.randint(0, K, (2, 37, 53))
    nn.functional.cross_entropy(model(x), target).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert x.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


# --- local VGG16-BN weights ----------------------------------------------------------------


def _vgg16_bn_features() -> nn.Sequential:
    # What torchvision.models.vgg16_bn(weights=None).features is, with non-trivial
    # batch-norm statistics so that copying them is tested.
    torch.manual_seed(5)
    features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=True)
    for m in features.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return features.eval()


def test_vgg16_bn_file_fills_the_encoder_exactly(tmp_path):
    features = _vgg16_bn_features()
    path = tmp_path / "vgg16_bn.pth"
    extra = {"classifier.0.bias": torch.zeros(4096)}  # a real file has the classifier too
    torch.save({**{f"features.{k}": v for k, v in features.state_dict().items()}, **extra}, path)
    model = create_model("segnet", num_classes=11, encoder_weights=str(path)).eval()
    ours, theirs = model.encoder.state_dict(), features.state_dict()
    assert len(ours) == len(theirs) == 13 * 7
    for own, file in zip(ours.values(), theirs.values(), strict=True):
        assert torch.equal(own, file)
    x = _images(1, 3, 64, 96)  # a multiple of 32: rounding up or down agree
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], features(x), rtol=1e-4, atol=1e-5)


def test_plain_vgg16_file_is_refused_naming_the_missing_batch_norm(tmp_path):
    path = tmp_path / "vgg16.pth"
    plain = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in plain.state_dict().items()}, path)
    with torch.device("meta"):  # the file is rejected before any tensor is copied
        model = create_model("segnet", num_classes=11)
    with pytest.raises(ValueError) as info:
        model.load_vgg16_bn(path)
    text = str(info.value)
    assert text.startswith(f"encoder_weights must hold 'features.1.weight', got {path} without")
    assert "\n" not in text


def test_weights_need_full_width_and_three_channels(tmp_path):
    for options, got in [
        ({"width": 0.5}, "width=0.5, in_channels=3"),
        ({"in_channels": 1}, "width=1.0, in_channels=1"),
    ]:
        with pytest.raises(ValueError) as info:
            create_model("segnet", num_classes=2, encoder_weights=str(tmp_path), **options)
        assert str(info.value) == (
            "encoder_weights must be used with width=1.0 and in_channels=3 (torchvision's "
            f"vgg16_bn layout), got {got}; build with width=1.0 and in_channels=3, "
            "or leave encoder_weights=None"
        )


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^encoder_weights must be an existing file"):
        create_model("segnet", num_classes=2, encoder_weights=str(tmp_path / "none.pth"))


# --- SegNet-Basic's decoders: unpooling, learned deconvolution, fixed bilinear ------------

DECODERS = ("unpool", "deconv", "bilinear")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("size", [(67, 45), (1, 3), (17, 31), (64, 96)])
def test_every_decoder_gives_logits_at_odd_input_sizes(decoder, size):
    model = _model("segnet_basic", decoder=decoder).eval()
    with torch.no_grad():
        out = model(_images(2, 3, *size))
    assert out.shape == (2, K, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("decoder", ["deconv", "bilinear"])
def test_decoder_stages_at_camvid_size(decoder):
    got = _shapes("segnet_basic", (360, 480), decoder=decoder)
    for b in (1, 2, 3, 4):
        assert got[f"pool{b}"] == (1, 64, *CAMVID_SIDES[b - 1])
        before = (360, 480) if b == 1 else CAMVID_SIDES[b - 2]  # 12×15 -> 23×30: 24 cropped
        assert got[f"upsample{b}"] == got[f"decode{b}"] == (1, 64, *before)
    assert got["classifier"] == (1, 11, 360, 480)


def test_decoder_parameter_counts():
    # The convolutions are shared by all three; only "deconv" adds D × D × 4 × 4 per stage.
    counts = {d: _count(create_model("segnet_basic", num_classes=11, decoder=d)) for d in DECODERS}
    assert counts["unpool"] == 1_416_075  # README: 1.42M at K = 11
    assert counts["bilinear"] == counts["unpool"]
    assert counts["deconv"] == counts["unpool"] + 4 * 64 * 64 * 4 * 4
    small = {d: _count(_model("segnet_basic", decoder=d)) for d in DECODERS}
    assert small["deconv"] - small["unpool"] == 4 * 8 * 8 * 16


def _upsampling_records(model: nn.Module, images: torch.Tensor) -> dict[int, tuple]:
    records, hooks = {}, []
    for b in (1, 2, 3, 4):

        def hook(_m, inputs, output, b=b):
            records[b] = (inputs[0], output)

        hooks.append(getattr(model, f"upsample{b}").register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return records


def test_bilinear_decoder_interpolates_twice_and_crops_the_rounded_up_side():
    model = _model("segnet_basic", decoder="bilinear").eval()
    records = _upsampling_records(model, _images(1, 3, 67, 45))
    sizes = {1: (67, 45), 2: (34, 23), 3: (17, 12), 4: (9, 6)}  # before each pooling
    for b, (x, out) in records.items():
        expected = nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
        assert out.shape[-2:] == sizes[b]
        assert torch.equal(out, expected[..., : sizes[b][0], : sizes[b][1]]), b
    assert not list(model.upsample1.parameters())  # fixed: nothing to learn


def test_deconv_decoder_starts_bilinear_and_learns():
    model = _model("segnet_basic", decoder="deconv")
    weight = model.upsample2.weight  # (D, D, 4, 4): bilinear on the diagonal, zero elsewhere
    assert weight.shape == (8, 8, 4, 4) and weight.requires_grad
    kernel = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(weight[3, 3], kernel[:, None] * kernel[None, :])
    assert float(weight.detach().sum()) == pytest.approx(8 * 4.0)  # 8 kernels of sum 4
    records = _upsampling_records(model.eval(), _images(1, 3, 67, 45))
    x, out = records[1]  # 34×23 -> 68×46, cropped to 67×45
    interior = nn.functional.interpolate(x, scale_factor=2, mode="bilinear")[..., 1:-1, 1:-1]
    assert torch.allclose(out[..., 1:-1, 1:-1], interior[..., : 67 - 2, : 45 - 2], atol=1e-5)
    model.train()
    x = _images(2, 3, 37, 53)
    target = torch.randint(0, K, (2, 37, 53), generator=torch.Generator().manual_seed(3))
    nn.functional.cross_entropy(model(x), target).backward()
    assert model.upsample4.weight.grad.abs().sum() > 0


def test_unknown_decoder_is_one_line_with_a_suggestion():
    with pytest.raises(ValueError) as info:
        create_model("segnet_basic", num_classes=2, decoder="deconvolution")
    text = str(info.value)
    assert text.startswith("decoder must be one of ['unpool', 'deconv', 'bilinear']")
    assert "did you mean 'deconv'?" in text and "\n" not in text
