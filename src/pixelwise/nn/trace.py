"""Stage tracing: each stage's output shape and its measured receptive field.

:func:`trace_stages` runs a network once on zeros and records the output shape of every stage
named in ``model.stage_names``; with receptive fields on, it measures each stage's centre-pixel
receptive field on a weightless, linearised copy of the network (gradients of the centre output
with respect to the input), which checks the arithmetic of :mod:`pixelwise.nn.shapes`.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import message
from pixelwise.nn.shapes import as_pair, pool_output_size


@dataclass(frozen=True)
class StageInfo:
    """One stage of a network: its name, output shape and receptive field.

    Attributes:
        name: dotted submodule name. shape: output shape of the stage.
        receptive_field: side in input pixels of the stage's centre-pixel receptive field (the
            larger side when it is not square), or None when unknown: not measured, or the
            field reaches the border of the traced input so that the true one may be larger.
        receptive_field_hw: the same as (rows, cols), or None.
    """

    name: str
    shape: tuple[int, ...]
    receptive_field: int | None = None
    receptive_field_hw: tuple[int, int] | None = None


_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Hardshrink,
    nn.Softshrink, nn.Softmax, nn.Softmax2d, nn.LogSoftmax,
)  # fmt: skip
_PASS_THROUGH = (
    *_ACTIVATIONS,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd,
)


class _SupportMaxPool2d(nn.Module):
    """A max-pooling stand-in that is linear: the mean of the same window (same output size,
    ceil mode and dilation included); with ``return_indices`` it also returns the indices a
    max-pool takes on the same input, so an unpooling decoder downstream still runs."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        p = self.pool
        k, s, pad, d = (
            as_pair(n, getattr(p, n)) for n in ("kernel_size", "stride", "padding", "dilation")
        )
        h, w = x.shape[-2:]
        oh = pool_output_size(h, k[0], s[0], pad[0], d[0], p.ceil_mode)
        ow = pool_output_size(w, k[1], s[1], pad[1], d[1], p.ceil_mode)
        # Pad (or crop, when negative) so a plain convolution yields exactly the pool's windows.
        bottom = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1 - h - pad[0]
        right = (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1 - w - pad[1]
        padded = F.pad(x, (pad[1], right, pad[0], bottom))
        weight = x.new_full((x.shape[1], 1, *k), 1.0 / (k[0] * k[1]))
        values = F.conv2d(padded, weight, stride=s, dilation=d, groups=x.shape[1])  # (N, C, oh, ow)
        if not p.return_indices:
            return values
        _, indices = F.max_pool2d(
            x.detach(), k, s, pad, d, ceil_mode=p.ceil_mode, return_indices=True
        )
        return values, indices


def _replacement(module: nn.Module) -> nn.Module | None:
    """The linear, sign-free stand-in for ``module``, or None to keep it."""
    if isinstance(module, _PASS_THROUGH):
        return nn.Identity()
    if isinstance(module, nn.MaxPool2d):
        return _SupportMaxPool2d(module)
    if isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices:
        return nn.AdaptiveAvgPool2d(module.output_size)
    return None


def _fan_in(conv: nn.modules.conv._ConvNd, in_channels: int) -> int:
    """Inputs summed into one output value: channels per group times kernel taps (for a
    transposed convolution, the taps landing on one output, about ceil(k/s) per axis)."""
    taps = 1
    for k, s in zip(conv.kernel_size, conv.stride, strict=True):
        taps *= -(-k // s) if conv.transposed else k
    return in_channels // conv.groups * taps


def _summed_conv_forward(
    self: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, output_size: list[int] | None = None
) -> torch.Tensor:
    """Forward of a 2-D (transposed) convolution whose weights all equal 1/fan-in, with no
    bias. Every output channel of a group is then the same single-channel convolution of the
    group's channel sum, so one is computed and broadcast: the cost no longer grows with the
    channel counts, which dominate the full-width pass.

    Shape:
        (N, C_in, H, W) -> (N, C_out, H', W')
    """
    n, c, h, w = x.shape
    g = self.groups
    summed = x.reshape(n, g, c // g, h, w).sum(2)  # (N, G, H, W)
    weight = x.new_full((g, 1, *self.kernel_size), 1.0 / _fan_in(self, c))
    if self.transposed:
        out_pad = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        y = F.conv_transpose2d(
            summed, weight, None, self.stride, self.padding, out_pad, g, self.dilation
        )  # (N, G, H', W')
    else:
        padding = self.padding
        if self.padding_mode != "zeros":
            summed = F.pad(summed, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        y = F.conv2d(summed, weight, None, self.stride, padding, self.dilation, g)  # (N, G, H', W')
    per_group = self.out_channels // g
    y = y[:, :, None].expand(n, g, per_group, *y.shape[-2:])  # (N, G, C_out/G, H', W')
    # contiguous: a broadcast view would break in-place ops downstream (residual `out += x`)
    return y.reshape(n, self.out_channels, *y.shape[-2:]).contiguous()  # (N, C_out, H', W')


_SUMMED = (nn.Conv2d, nn.ConvTranspose2d)


def _summable(module: nn.Module) -> bool:
    """Exactly a 2-D (transposed) convolution: a subclass may compute something else before
    its convolution (timm's "same"-padding convolution pads by the input's size), so it keeps
    its own forward, with constant weights."""
    return type(module) in _SUMMED


@torch.no_grad()
def _make_positive_(module: nn.Module) -> None:
    """Constant positive weights normalised by fan-in (so values neither explode nor vanish
    with depth) and zero biases, for the layers :func:`_summed_conv_forward` does not cover."""
    if isinstance(module, nn.modules.conv._ConvNd) and not _summable(module):
        module.weight.fill_(1.0 / _fan_in(module, module.in_channels))
    elif isinstance(module, nn.Linear):
        module.weight.fill_(1.0 / module.in_features)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor) and not _summable(module):
        bias.zero_()


def _weightless_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` in which 2-D convolution weights are shape-only (meta) tensors:
    their forward is replaced, and copying them would double a VGG's memory for nothing."""
    memo: dict[int, object] = {}
    for module in model.modules():
        if _summable(module):
            for tensor in (module.weight, module.bias):
                if isinstance(tensor, torch.Tensor):
                    stub = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
                    is_param = isinstance(tensor, nn.Parameter)
                    memo[id(tensor)] = nn.Parameter(stub, requires_grad=False) if is_param else stub
    return copy.deepcopy(model, memo)


def _linearised(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that is linear with positive weights, in float64 and eval mode,
    so that the support of an input gradient is exactly the structural receptive field."""
    twin = _weightless_copy(model).double().eval()
    for name, module in list(twin.named_modules()):
        new = _replacement(module)
        if new is not None and name:
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, new)
    for module in twin.modules():
        if _summable(module):
            module.forward = types.MethodType(_summed_conv_forward, module)
        _make_positive_(module)
    twin.requires_grad_(False)
    return twin


def _support_extent(grad: torch.Tensor) -> tuple[int, int] | None:
    """Rows and columns spanned by the nonzero input gradient; None when it is empty or
    reaches the input border (the field may then be clipped).

    Shape:
        grad: (C, H, W)
    """
    support = grad.abs().sum(0) != 0  # (H, W)
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = support.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
        return None
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _centre_target(out: torch.Tensor) -> torch.Tensor:
    """Sum over channels of the centre output pixel (of everything when not spatial)."""
    out = out[0]
    if out.dim() >= 3:
        out = out[..., out.shape[-2] // 2, out.shape[-1] // 2]
    return out.sum()


def _stage_receptive_fields(
    model: nn.Module, names: list[str], input_shape: tuple[int, ...], device: torch.device
) -> dict[str, tuple[int, int] | None]:
    """Measure each stage's centre-pixel receptive field on the linearised model."""
    twin = _linearised(model)
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def hook(_module, _inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and name not in outputs:
                outputs[name] = out.clone()  # immune to later in-place ops

        hooks.append(twin.get_submodule(name).register_forward_hook(hook))
    x = torch.ones((1, *input_shape[1:]), dtype=torch.float64, device=device, requires_grad=True)
    try:
        with torch.enable_grad():
            twin(x)
            fields = {}
            for name, out in outputs.items():
                (grad,) = torch.autograd.grad(
                    _centre_target(out), x, retain_graph=True, allow_unused=True
                )
                fields[name] = None if grad is None else _support_extent(grad[0])
    finally:
        for h in hooks:
            h.remove()
    return fields


def trace_stages(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    receptive_fields: bool = True,
) -> list[StageInfo]:
    """Run ``model`` once on zeros of ``input_shape`` and record each stage's output shape and
    (optionally) receptive field.

    Stages are the submodules named in ``model.stage_names`` (dotted names), in forward order.
    A stage module that returns a tuple (max-pooling with indices) reports its first element.

    The receptive field is measured, not derived, so it covers any wiring (skips, branches,
    dilation, ceil mode): on a deep copy made linear and cancellation-free (activations,
    normalisation and dropout become identities, max-pooling becomes the mean of the same
    window, weights a positive constant, biases zero; float64), it is the rows × columns
    spanned by the nonzero gradient of the stage's centre output pixel (summed over channels)
    with respect to the input. It is the structural field, the same as
    :func:`receptive_field` gives for a plain stack. It is None when that support touches the
    input border: the field may be clipped there, so trace a larger ``input_shape``. Global
    pooling therefore gives None. Convolution weights become a constant rather than ``|w|`` so
    that zero-initialised layers (FCN's score layers) still count. Bicubic interpolation keeps
    its negative taps; an exact cancellation there is possible in principle, not in practice.

    Behind max-unpooling (SegNet's decoder) the field depends on the data through the argmax
    indices. The number reported is for the indices the linearised copy produces on a constant
    input (ties go to the first element of each window): one possible routing. Any routing's
    field lies within the one of the same network with each unpooling replaced by a
    transposed convolution over the whole pooling window, since unpooling uses one of its taps.

    Args:
        model: a module with a ``stage_names`` attribute.
        input_shape: shape of the traced input; only its C, H, W matter for the fields.
        receptive_fields: measure them (one backward pass per stage; turn off for speed).

    Raises:
        ValueError: when a stage name is not a submodule of ``model``.

    Shape:
        input_shape: (N, C, H, W)
    """
    names = list(getattr(model, "stage_names", ()))
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ValueError(
                message(
                    "each stage name",
                    f"be a submodule of {type(model).__name__}",
                    repr(name),
                    "list dotted names from model.named_modules() in stage_names",
                )
            )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    shapes = _stage_shapes(model, names, torch.zeros(input_shape, dtype=dtype, device=device))
    fields = (
        _stage_receptive_fields(model, list(shapes), input_shape, device)
        if receptive_fields
        else {}
    )
    infos = []
    for name in names:
        if name in shapes:
            hw = fields.get(name)
            infos.append(StageInfo(name, shapes[name], None if hw is None else max(hw), hw))
    return infos


def _stage_shapes(
    model: nn.Module, names: list[str], x: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """Output shape of each stage that runs, on one forward pass in eval mode."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name in names:

        def hook(_module, _inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))

        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
