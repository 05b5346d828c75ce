"""DeepLabv3: dilated ResNet geometry, ASPP rates, image pooling at batch 1, local weights."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pixelwise.models import create_model
from pixelwise.models.deeplab import ImagePooling, ResNetEncoder, stage_dilations, upsample_to_input
from pixelwise.nn.trace import trace_stages

K = 4


def _features(resnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet forward up to layer4 (its own forward pools and classifies)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


def _random_resnet(name: str, **options) -> nn.Module:
    """A torchvision ResNet with random batch-norm statistics, so loading them is visible."""
    torch.manual_seed(0)
    resnet = getattr(torchvision.models, name)(weights=None, **options)
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return resnet.eval()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision resnet18 state-dict file (random weights) and the network it came from."""
    resnet = _random_resnet("resnet18")
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    return path, resnet


def test_feature_shapes_at_513_output_stride_16():
    torch.manual_seed(0)
    model = create_model("deeplabv3_small", num_classes=K)
    stages = {
        s.name: s.shape for s in trace_stages(model, (1, 3, 513, 513), receptive_fields=False)
    }
    assert stages["backbone.layer3"] == (1, 256, 33, 33)
    assert stages["backbone.layer4"] == (1, 512, 33, 33)  # (513 - 1) / 16 + 1
    assert stages["classifier"] == (1, K, 33, 33)


@pytest.mark.parametrize(
    ("backbone", "output_stride", "size"),
    [("resnet50", 16, 33), ("resnet50", 8, 65), ("resnet101", 8, 65)],
)
def test_feature_shapes_at_513_for_the_paper_backbones(backbone, output_stride, size):
    # Traced on the meta device: torch's own shape arithmetic, without the compute.
    with torch.device("meta"):
        model = create_model(
            "deeplabv3", num_classes=21, backbone=backbone, output_stride=output_stride
        )
        stages = {
            s.name: s.shape for s in trace_stages(model, (1, 3, 513, 513), receptive_fields=False)
        }
        out = model(torch.zeros(1, 3, 513, 513))
    assert stages["backbone.layer2"] == (1, 512, 65, 65)
    assert stages["backbone.layer4"] == (1, 2048, size, size)
    assert stages["aspp"] == (1, 256, size, size)
    assert out.shape == (1, 21, 513, 513)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_feature_size_is_ceil_of_input_over_output_stride(output_stride):
    with torch.device("meta"):
        encoder = ResNetEncoder("resnet18", output_stride=output_stride).eval()
        for size in (1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 45, 67, 80, 81):
            x5 = encoder(torch.zeros(1, 3, size, 7))
            assert x5.shape[-2:] == (math.ceil(size / output_stride), 1), size


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_bottleneck_dilation_matches_torchvision(backbone, output_stride):
    # torchvision dilates Bottleneck ResNets itself: every conv must get the same geometry.
    dilate = [False, output_stride == 8, True]
    with torch.device("meta"):
        ours = ResNetEncoder(backbone, output_stride=output_stride)
        theirs = getattr(torchvision.models, backbone)(replace_stride_with_dilation=dilate)
    theirs_convs = {n: m for n, m in theirs.named_modules() if isinstance(m, nn.Conv2d)}
    ours_convs = {n: m for n, m in ours.named_modules() if isinstance(m, nn.Conv2d)}
    assert ours_convs.keys() == theirs_convs.keys()
    for name, conv in ours_convs.items():
        other = theirs_convs[name]
        assert (conv.stride, conv.dilation, conv.padding) == (
            other.stride,
            other.dilation,
            other.padding,
        ), name


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    [
        (
            16,
            {"layer3": [(1, 1, 2)] + [(1, 1, 1)] * 5, "layer4": [(1, 2, 1), (2, 2, 1), (2, 2, 1)]},
        ),
        (8, {"layer3": [(1, 2, 1)] + [(2, 2, 1)] * 5, "layer4": [(2, 4, 1), (4, 4, 1), (4, 4, 1)]}),
    ],
)
def test_basic_block_dilation_is_set_in_the_convolutions(output_stride, expected):
    # resnet34: (conv1 dilation, conv2 dilation, downsample/conv1 stride) per block.
    with torch.device("meta"):
        encoder = ResNetEncoder("resnet34", output_stride=output_stride)
    for stage, blocks in expected.items():
        got = [
            (b.conv1.dilation[0], b.conv2.dilation[0], b.conv1.stride[0])
            for b in getattr(encoder, stage)
        ]
        assert got == blocks, stage
        for b in getattr(encoder, stage):
            assert b.conv1.padding == b.conv1.dilation and b.conv2.padding == b.conv2.dilation
        downsample = getattr(encoder, stage)[0].downsample[0]
        assert downsample.stride == (blocks[0][2],) * 2
    assert (
        stage_dilations(output_stride)
        == {
            16: {"layer4": (1, 2)},
            8: {"layer3": (1, 2), "layer4": (2, 4)},
        }[output_stride]
    )


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_basic_blocks_compute_the_dense_undilated_features(output_stride, resnet18_file):
    # The atrous identity: removing strides and dilating later convolutions gives the
    # undilated network's features on a denser grid. Sizes 32·m + 1 align both grids' borders.
    path, resnet = resnet18_file
    encoder = ResNetEncoder("resnet18", output_stride=output_stride, weights=path)
    encoder, resnet = encoder.double().eval(), copy.deepcopy(resnet).double()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 33, 65, dtype=torch.float64)
    with torch.no_grad():
        dense, sparse = encoder(x), _features(resnet, x)  # (1, 512, 33/OS, 65/OS), (1, 512, 2, 3)
    step = 32 // output_stride
    assert dense.shape[-2:] == ((33 - 1) // output_stride + 1, (65 - 1) // output_stride + 1)
    torch.testing.assert_close(dense[..., ::step, ::step], sparse, rtol=0, atol=1e-10)


def test_resnet50_weights_round_trip_and_match_torchvision_at_output_stride_8(tmp_path):
    # Dilation does not rename parameters: torchvision's dilated resnet50 saves a plain file.
    path = tmp_path / "resnet50.pth"
    resnet = _random_resnet("resnet50", replace_stride_with_dilation=[False, True, True])
    torch.save(resnet.state_dict(), path)
    model = create_model(
        "deeplabv3", num_classes=K, backbone="resnet50", output_stride=8, backbone_weights=str(path)
    ).eval()
    ours = model.backbone.state_dict()
    theirs = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    x = torch.randn(1, 3, 33, 27)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), _features(resnet, x))


def test_weights_for_another_depth_are_refused(resnet18_file, tmp_path):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match=r"^backbone_weights must match the network's parameter"):
        create_model("deeplabv3", num_classes=K, backbone="resnet34", backbone_weights=str(path))
    with pytest.raises(FileNotFoundError, match=r"backbone_weights must be an existing file"):
        create_model("deeplabv3_small", num_classes=K, backbone_weights=str(tmp_path / "no.pth"))


def test_pretrained_stem_is_adapted_to_other_channel_counts(resnet18_file):
    path, resnet = resnet18_file
    model = create_model(
        "deeplabv3_small", num_classes=K, in_channels=2, backbone_weights=str(path)
    )
    rgb = resnet.conv1.weight
    assert model.backbone.conv1.weight.shape == (64, 2, 7, 7)
    expected = rgb.mean(dim=1, keepdim=True).expand(64, 2, 7, 7) * 1.5
    torch.testing.assert_close(model.backbone.conv1.weight, expected)
    # An image with equal channels gets the RGB filters' response to its grey level.
    grey = torch.rand(1, 1, 15, 13)
    torch.testing.assert_close(
        model.backbone.conv1(grey.expand(1, 2, 15, 13)), resnet.conv1(grey.expand(1, 3, 15, 13))
    )


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates_are_set_in_the_convolutions(output_stride, rates):
    with torch.device("meta"):
        model = create_model("deeplabv3", num_classes=K, output_stride=output_stride)
    atrous = [branch[0] for branch in model.aspp.atrous]
    assert [c.dilation for c in atrous] == [(r, r) for r in rates]
    assert [c.padding for c in atrous] == [(r, r) for r in rates]
    assert all(c.kernel_size == (3, 3) and c.in_channels == 2048 for c in atrous)
    assert model.aspp.conv1x1[0].kernel_size == (1, 1)
    assert model.aspp.project[0].in_channels == 5 * 256
    assert model.classifier.in_channels == 256 and model.classifier.out_channels == K


def test_image_pooling_matches_its_definition():
    torch.manual_seed(0)
    branch = ImagePooling(8, 6).eval()
    with torch.no_grad():
        branch.bn.running_mean.normal_()
        branch.bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 8, 5, 3)
        got = branch(x)
        bn = branch.bn
        pooled = F.conv2d(x.mean(dim=(2, 3), keepdim=True), branch.conv.weight)
        y = (pooled - bn.running_mean[:, None, None]) / torch.sqrt(
            bn.running_var[:, None, None] + bn.eps
        )
        expected = torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(got, expected.expand(2, 6, 5, 3))


def test_image_pooling_trains_at_batch_one():
    torch.manual_seed(0)
    # The failure being handled: batch norm cannot train on one value per channel.
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm2d(4).train()(torch.randn(1, 4, 1, 1))
    model = create_model("deeplabv3_small", num_classes=K, aspp_channels=8).train()
    bn = model.aspp.image_pool.bn
    before = bn.running_mean.clone()
    out = model(torch.randn(1, 3, 67, 45))
    out.logsumexp(dim=1).mean().backward()
    assert out.shape == (1, K, 67, 45)
    assert torch.equal(bn.running_mean, before)  # running statistics used, not updated
    conv_grad = model.aspp.image_pool.conv.weight.grad
    assert torch.isfinite(conv_grad).all() and conv_grad.abs().sum() > 0
    model(torch.randn(2, 3, 35, 29))  # a real batch uses and updates batch statistics
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("deeplabv3_small", {}),
        ("deeplabv3", {"backbone": "resnet18", "output_stride": 8, "aspp_channels": 8}),
    ],
)
def test_odd_size_gives_logits_at_input_size(name, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, **options).eval()
    assert model.size_divisor == 1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 67, 45)).shape == (2, K, 67, 45)


def test_upsampling_puts_feature_centres_on_input_pixels():
    # Feature row i sits on image row 16·i: a ramp of feature values becomes the row index.
    h, w = 5, 3  # ceil(67 / 16), ceil(45 / 16)
    rows = (16 * torch.arange(h, dtype=torch.float32))[:, None].expand(h, w)
    cols = (16 * torch.arange(w, dtype=torch.float32))[None, :].expand(h, w)
    out = upsample_to_input(torch.stack((rows, cols))[None], (67, 45), 16)
    expected_rows = torch.arange(67, dtype=torch.float32).clamp(max=64)[:, None].expand(67, 45)
    expected_cols = torch.arange(45, dtype=torch.float32).clamp(max=32)[None, :].expand(67, 45)
    torch.testing.assert_close(out[0, 0], expected_rows)
    torch.testing.assert_close(out[0, 1], expected_cols)


def test_upsampling_is_deeplabs_resize_for_sizes_one_past_a_multiple():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 33, 5)
    expected = F.interpolate(logits, size=(513, 65), mode="bilinear", align_corners=True)
    torch.testing.assert_close(upsample_to_input(logits, (513, 65), 16), expected)


def test_parameter_count_is_resnet_plus_aspp():
    model = create_model("deeplabv3_small", num_classes=K)
    resnet = sum(
        p.numel() for n, p in torchvision.models.resnet18().named_parameters() if "fc" not in n
    )
    d, c = 128, 512  # ASPP width, ResNet-18 features

    def conv_bn(k, i, o):
        return k * k * i * o + 2 * o

    aspp = conv_bn(1, c, d) + 3 * conv_bn(3, c, d) + conv_bn(1, c, d) + conv_bn(1, 5 * d, d)
    total = sum(p.numel() for p in model.parameters())
    assert total == resnet + aspp + d * K + K == 13_161_028


def test_eval_is_deterministic_and_training_gradients_are_finite():
    torch.manual_seed(0)
    model = create_model(
        "deeplabv3", num_classes=K, backbone="resnet18", output_stride=8, aspp_channels=8
    )
    x = torch.randn(2, 3, 37, 29)
    model(x).logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"backbone": "resnet52"}, r"backbone must be one of .* got 'resnet52'; did you mean"),
        ({"output_stride": 32}, r"^output_stride must be 8 or 16, got 32$"),
        ({"output_stride": True}, r"^output_stride must be 8 or 16, got True$"),
        ({"aspp_channels": 0}, r"aspp_channels must be an integer >= 1, got 0"),
    ],
)
def test_options_are_checked(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        create_model("deeplabv3", num_classes=K, **options)
