"""Make a trained model fast for CPU inference without changing what it computes.

:func:`optimize_for_inference` returns a copy of the model in eval mode with

* every convolution followed by batch norm folded into one convolution (the batch norm's
  running statistics and affine map become the convolution's weight and bias, and the batch
  norm is replaced by ``nn.Identity``): one pass over each feature map instead of two;
* weights in channels-last memory format, and the input moved to it on the way in (a
  forward pre-hook) and the logits back to the usual contiguous (N, K, H, W) layout on the
  way out (a forward hook), so callers call the model as before: oneDNN's direct
  convolutions run channels-last (NHWC) without reordering every feature map;
* no gradients (``requires_grad`` off on every parameter), so no autograd graph is recorded
  even outside ``torch.inference_mode``.

The logits equal the original model's to float rounding (folding reorders a few products;
tests pin 1e-5 relative to the logits' scale). The copy is for inference only: its state dict
lacks the batch norms, so save and train the original. Thread counts are left alone (they are
process-wide; torch already uses one thread per core).

Measured (``benchmarks/inference.py``, two cores of an AMD EPYC shared with other work, float32,
U-Net base width 64 at 512²): the optimised model runs 1.31× (batch 1) and 1.42× (batch 4) as
fast as the plain NCHW model, at 162 and 158 GFLOP/s, as fast as the channels-last 3×3
convolution the peak was measured with (154–161 GFLOP/s). Not adopted: ``torch.compile``
(inductor, frozen weights) gained 1.06–1.10× more but compiles for about a minute per input
shape and, with dynamic shapes, failed a stride assertion on channels-last inputs; ONNX Runtime
gained 1.15–1.16× more but needs an export (tracing) and a second runtime; oneDNN's fused
convolution + ReLU with pre-packed weights (a private torch operator) about 1.05×.
"""

from __future__ import annotations

import copy
import functools
import itertools
import sys
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from pixelwise._checks import message

OPTIMIZED_ATTRIBUTE = "pixelwise_optimized"

# Modules whose forward applies ``bn(conv(x))`` to these attribute pairs (and nothing else
# reads ``conv``'s output): the pairs can be folded although they are not in a Sequential.
# torchvision's blocks are listed here; pixelwise's own modules declare theirs as a
# ``fold_pairs`` class attribute (e.g. the DeepLab ResNet encoder's stem).
ATTRIBUTE_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _timm_rules() -> tuple[dict, tuple[type, ...], tuple[type, ...]]:
    """What folds in timm's EfficientNet modules (the ``efficientnet_lite0`` encoder): the
    attribute pairs of its blocks and stem, its "same"-padding convolution (``F.conv2d`` of
    its own weight and bias after padding) and its batch norm with a following activation
    (folded, the activation stays). Empty when timm is not loaded (no model holds its
    modules then) or has moved them: nothing of timm is folded, which is slower, not wrong."""
    if "timm" not in sys.modules:
        return {}, (), ()
    return _timm_rules_loaded()


@functools.cache
def _timm_rules_loaded() -> tuple[dict, tuple[type, ...], tuple[type, ...]]:
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame
        from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
        from timm.models.efficientnet import EfficientNetFeatures
    except ImportError:
        return {}, (), ()
    pairs = {
        InvertedResidual: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
        DepthwiseSeparableConv: (("conv_dw", "bn1"), ("conv_pw", "bn2")),
        EfficientNetFeatures: (("conv_stem", "bn1"),),
    }
    return pairs, (Conv2dSame,), (BatchNormAct2d,)


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, inplace: bool = False
) -> nn.Module:
    """A copy of ``model`` for fast inference: eval mode, batch norm folded, channels last.

    Args:
        model: Any ``nn.Module`` taking (N, C, H, W) images; pixelwise models keep their
            attributes (``size_divisor``, ``pixelwise_args``, the valid U-Net's size
            arithmetic), so the result goes wherever the model went, e.g.
            :func:`pixelwise.inference.tiling.predict`.
        channels_last: Run in channels-last memory format (the input is converted on the
            way in and the logits back on the way out). Faster for every pixelwise model
            measured on CPU; False keeps the contiguous layout.
        inplace: Change ``model`` itself instead of a deep copy (saves the copy's memory;
            the model is then fit for inference only).

    Returns:
        The optimised model, in eval mode, without gradients. A model that was already
        optimised is returned as it is (not copied), so callers such as a tiled prediction
        can call this on whatever model they are given.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.

    Shape:
        The model's own: (N, C, H, W) -> (N, K, H, W), contiguous.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            message("model", "be a torch.nn.Module", type(model).__name__, "pass the network")
        )
    if getattr(model, OPTIMIZED_ATTRIBUTE, False):
        return model
    if not inplace:
        model = copy.deepcopy(model)
    model.eval().requires_grad_(False)
    fold_batch_norms(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_input_to_channels_last)
        model.register_forward_hook(_output_to_contiguous)
    setattr(model, OPTIMIZED_ATTRIBUTE, True)
    return model


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution into it, in place.

    A pair is a ``Conv2d`` followed by an ``nn.BatchNorm2d`` with running statistics, either
    next to each other in an ``nn.Sequential`` (pixelwise's ``ConvBNReLU``, VGG-BN blocks,
    ResNet downsampling) or as the attribute pairs a module's class declares in ``fold_pairs``
    or :data:`ATTRIBUTE_PAIRS` lists. The
    convolution is replaced by the folded one and the batch norm by ``nn.Identity``. Batch
    norms of subclasses (which may compute something else) are left alone.

    Args:
        model: The network; it must be in eval mode.

    Returns:
        The number of batch norms folded.

    Raises:
        ValueError: if ``model`` is in training mode (batch statistics cannot be folded).
    """
    if model.training:
        raise ValueError(
            message("model", "be in eval mode to fold batch norms", "training mode", "call .eval()")
        )
    folded = 0
    for parent, conv_name, bn_name in list(_foldable_pairs(model)):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        fused = fuse_conv_bn_eval(conv, bn)
        fused.weight.requires_grad_(conv.weight.requires_grad)
        fused.bias.requires_grad_(conv.weight.requires_grad)
        setattr(parent, conv_name, fused)
        # A batch norm with its activation inside (timm's) leaves the activation behind.
        after = nn.Identity() if type(bn) is nn.BatchNorm2d else nn.Sequential(bn.drop, bn.act)
        setattr(parent, bn_name, after)
        folded += 1
    return folded


def _foldable_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """(parent, conv attribute, batch-norm attribute) of every pair that can be folded."""
    for parent in model.modules():
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            names = list(parent._modules)
            pairs = itertools.pairwise(names)
        else:
            pairs = (
                getattr(type(parent), "fold_pairs", None)
                or ATTRIBUTE_PAIRS.get(type(parent))
                or _timm_rules()[0].get(type(parent), ())
            )
        for conv_name, bn_name in pairs:
            if _is_foldable(getattr(parent, conv_name), getattr(parent, bn_name)):
                yield parent, conv_name, bn_name


def _is_foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    _, convs, norms = _timm_rules()
    return (
        (type(conv) is nn.Conv2d or type(conv) in convs)
        and (type(bn) is nn.BatchNorm2d or type(bn) in norms)
        and not (conv.training or bn.training)
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
    )


def _input_to_channels_last(
    module: nn.Module, args: tuple[object, ...]
) -> tuple[object, ...] | None:
    """Forward pre-hook: a 4-D tensor input moves to channels-last memory format."""
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _output_to_contiguous(module: nn.Module, args: tuple[object, ...], output: object) -> object:
    """Forward hook: a tensor output returns to the contiguous layout callers expect."""
    if isinstance(output, torch.Tensor):
        return output.contiguous()
    return None
