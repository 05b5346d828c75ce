"""Stage tracing: output shapes and measured receptive fields against the arithmetic."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.nn import (
    ConvBNReLU,
    Layer,
    MaxPoolWithIndices,
    MaxUnpool,
    StageInfo,
    receptive_field,
    trace_stages,
)

GEOMETRIC = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _staged(*modules: nn.Module, stages: list[str]) -> nn.Sequential:
    net = nn.Sequential(*modules)
    net.stage_names = stages
    return net


def _expected_field(net: nn.Sequential, stage: str, out_size: int, in_size: int) -> int | None:
    """The arithmetic field of the centre output pixel; None where it reaches the border."""
    upto = list(net)[: int(stage) + 1]
    rf = receptive_field([Layer.from_module(m) for m in upto if isinstance(m, GEOMETRIC)])
    first = rf.start + (out_size // 2) * rf.jump
    return rf.size if first > 0 and first + rf.size < in_size else None


def test_plain_stack_matches_arithmetic_per_stage():
    torch.manual_seed(0)
    net = _staged(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Dropout2d(0.5),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 3, 3, padding=2, dilation=2),
        stages=["0", "3", "4", "6", "7", "8"],
    )
    net.train()
    infos = trace_stages(net, (2, 2, 97, 91))
    assert [i.name for i in infos] == net.stage_names
    x = torch.zeros(2, 2, 97, 91)
    fields = []
    for info in infos:
        x_out = net[: int(info.name) + 1].eval()(x)
        assert info.shape == tuple(x_out.shape)
        expected = _expected_field(net, info.name, x_out.shape[2], 97)
        assert info.receptive_field == expected
        assert info.receptive_field_hw == (expected, expected)
        fields.append(info.receptive_field)
    assert fields == [3, 4, 8, 12, 20, 52]  # 3, +1, +2·2, +2·2, +2·4, +4·8
    assert net.training  # mode restored


def test_dilated_stack_rates_1_2_4():
    net = _staged(
        *[ConvBNReLU(3 if r == 1 else 5, 5, dilation=r) for r in (1, 2, 4)],
        stages=["0", "1", "2"],
    )
    infos = trace_stages(net, (1, 3, 33, 35))
    assert [i.receptive_field for i in infos] == [3, 7, 15]
    assert all(i.shape == (1, 5, 33, 35) for i in infos)  # padding = rate keeps H × W


def test_thin_vgg16_reaches_the_published_212_at_pool5():
    layers: list[nn.Module] = []
    stages = []
    for convs in (2, 2, 3, 3, 3):
        for _ in range(convs):
            layers += [nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2))
        stages.append(str(len(layers) - 1))
    net = _staged(*layers, stages=stages)
    infos = trace_stages(net, (1, 1, 229, 229))
    assert [i.receptive_field for i in infos] == [6, 16, 44, 100, 212]
    assert infos[-1].shape == (1, 1, 7, 7)


def test_field_reaching_the_border_is_none():
    net = _staged(
        nn.Conv2d(1, 1, 5, padding=2),
        nn.Conv2d(1, 1, 5, padding=2),
        nn.AdaptiveAvgPool2d(1),
        stages=["0", "1", "2"],
    )
    infos = trace_stages(net, (1, 1, 9, 11))
    # 5 fits strictly inside 9 × 11; 9 spans all 9 rows; global pooling sees everything.
    assert [i.receptive_field for i in infos] == [5, None, None]
    assert trace_stages(net, (1, 1, 10, 10))[1].receptive_field is None  # rows 1..9 of 0..9
    assert trace_stages(net, (1, 1, 11, 11))[1].receptive_field == 9  # rows 1..9 of 0..10


def test_non_square_kernel_reports_both_sides():
    net = _staged(nn.Conv2d(1, 2, (3, 7), padding=(1, 3)), stages=["0"])
    (info,) = trace_stages(net, (1, 1, 15, 17))
    assert info.receptive_field_hw == (3, 7)
    assert info.receptive_field == 7


class _Functional(nn.Module):
    """Activations called functionally and a zero-initialised layer (as FCN's score layers)."""

    stage_names = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 5, padding=2)
        nn.init.zeros_(self.b.weight)
        nn.init.constant_(self.a.bias, -100.0)  # the real ReLU would zero every activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


def test_functional_activations_and_zero_weights_keep_the_structural_field():
    infos = trace_stages(_Functional(), (1, 1, 19, 17))
    assert [i.receptive_field for i in infos] == [3, 7]


class _TinySegNet(nn.Module):
    stage_names = ("enc", "pool", "dec", "head")

    def __init__(self, torch_pool: bool = False) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, return_indices=True) if torch_pool else MaxPoolWithIndices(2)
        self.unpool = MaxUnpool(2)
        self.dec = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.act(self.enc(x))  # (N, 4, H, W)
        p, indices = self.pool(e)  # (N, 4, H/2, W/2)
        u = self.unpool(p, indices, x.shape[-2:])  # (N, 4, H, W)
        return self.head(self.dec(u))  # (N, 2, H, W)


@pytest.mark.parametrize("torch_pool", [False, True])
def test_unpooling_decoder_traces_with_a_bounded_field(torch_pool):
    infos = trace_stages(_TinySegNet(torch_pool), (2, 1, 21, 23))
    assert [i.shape for i in infos] == [
        (2, 4, 21, 23),
        (2, 4, 10, 11),
        (2, 4, 21, 23),
        (2, 2, 21, 23),
    ]
    enc, pool, dec, head = (i.receptive_field for i in infos)
    assert (enc, pool) == (3, 4)
    # Unpooling routes each value through one tap of a 2×2, stride-2 window, so the decoder's
    # field lies between the pool's and that of a full transposed convolution (4 + 2·1 = 6).
    assert dec is not None and pool <= dec <= 6
    assert head == dec
    # On the linearised copy ties go to each window's top-left, so only even positions carry
    # values: the centre row 10 (even) sees one pooled row, the centre column 11 two.
    assert infos[2].receptive_field_hw == (4, 6)


def test_original_model_is_untouched():
    model = _TinySegNet()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace_stages(model, (1, 1, 15, 15))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.enc.weight.dtype == torch.float32


def test_receptive_fields_can_be_skipped():
    net = _staged(nn.Conv2d(1, 1, 3, padding=1), stages=["0"])
    assert trace_stages(net, (1, 1, 9, 9), receptive_fields=False) == [
        StageInfo("0", (1, 1, 9, 9), None, None)
    ]


def test_unknown_stage_name_is_refused():
    net = _staged(nn.Conv2d(1, 1, 3), stages=["0", "conv9"])
    with pytest.raises(
        ValueError, match=r"^each stage name must be a submodule of Sequential, got 'conv9'; list"
    ):
        trace_stages(net, (1, 1, 9, 9))


def test_stage_info_stays_positionally_compatible():
    info = StageInfo("x", (1, 2, 3, 4), 5)
    assert (info.name, info.shape, info.receptive_field, info.receptive_field_hw) == (
        "x",
        (1, 2, 3, 4),
        5,
        None,
    )


def test_max_pool_stand_in_keeps_windows_sizes_and_indices():
    from pixelwise.nn.trace import _SupportMaxPool2d

    x = torch.rand(1, 2, 13, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k, s, p, d, ceil in itertools.product((2, 3), (1, 2, 3), (0, 1), (1, 2), (False, True)):
        pool = nn.MaxPool2d(k, s, p, d, return_indices=True, ceil_mode=ceil)
        values, indices = pool(x)
        mean, stand_in_indices = _SupportMaxPool2d(pool)(x)
        assert mean.shape == values.shape, (k, s, p, d, ceil)
        assert torch.equal(stand_in_indices, indices)
        # brute force: the mean of each window's in-image pixels, divided by the full window
        i, j = values.shape[-2] // 2, values.shape[-1] - 1
        rows = [i * s - p + a * d for a in range(k)]
        cols = [j * s - p + b * d for b in range(k)]
        inside = [x[..., r, c] for r in rows for c in cols if 0 <= r < 13 and 0 <= c < 10]
        torch.testing.assert_close(mean[..., i, j], sum(inside) / (k * k))


class _Wiring(nn.Module):
    """Depthwise reflect-padded and grouped convolutions, an in-place residual add and a
    transposed convolution called with ``output_size``."""

    stage_names = ("stem", "dw", "res", "group", "up")

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="reflect")
        self.res = nn.Conv2d(4, 4, 5, padding=2)
        self.group = nn.Conv2d(4, 6, 1, groups=2)
        self.up = nn.ConvTranspose2d(6, 6, 4, stride=2, padding=1, groups=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dw(self.stem(x))  # (N, 4, H, W)
        r = self.res(d)
        r += d  # in place, after the "res" stage recorded its output
        g = self.group(r)  # (N, 6, H, W)
        return self.up(
            g, output_size=(2 * x.shape[-2] + 1, 2 * x.shape[-1] + 1)
        )  # (N, 6, 2H+1, 2W+1)


def test_grouped_reflect_residual_and_transposed_wiring():
    from pixelwise.nn.trace import _linearised

    model = _Wiring()
    x = torch.rand(1, 1, 23, 21, generator=torch.Generator().manual_seed(3))
    twin = _linearised(model)
    assert twin(x.double()).shape == model(x).shape == (1, 6, 47, 43)
    infos = trace_stages(model, (1, 1, 23, 21))
    # stem 3; depthwise 3×3 → 5; res 5×5 → 9; 1×1 keeps 9; a 4-tap, stride-2 transposed
    # convolution reads two neighbouring inputs per output → 10.
    assert [i.receptive_field for i in infos] == [3, 5, 9, 9, 10]
