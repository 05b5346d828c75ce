"""Inference optimisation: the same logits as the original model, which stays as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelwise.inference.optimize import fold_batch_norms, optimize_for_inference
from pixelwise.inference.tiling import predict
from pixelwise.models import create_model

HEIGHT, WIDTH = 67, 45
K = 3

# Small widths of the models the optimisation is checked on (same architectures).
MODELS: dict[str, dict] = {
    "unet": {"base_width": 4, "depth": 3},
    "unet_valid": {"base_width": 4, "depth": 2, "padding": "valid"},
    "segnet": {"width": 0.125},
    "deeplabv3_small": {"aspp_channels": 16},
    "fcn8s": {"width": 0.0625},
    "patch_classifier": {"patch_size": 13, "width": 4},
    # timm's EfficientNet blocks: "same"-padding convolutions, batch norms with activation.
    "unet+efficientnet_lite0": {"encoder": "efficientnet_lite0", "base_width": 4},
    "deeplabv3_small+efficientnet_lite0": {"encoder": "efficientnet_lite0", "aspp_channels": 16},
}
# The valid U-Net accepts 4·k + 28, k >= 4, at depth 2 (never odd); H != W all the same.
SIZES = {"unet_valid": (52, 44)}


def build(key: str, in_channels: int = 2) -> nn.Module:
    """A model with random batch-norm statistics, so that folding them is not a no-op."""
    torch.manual_seed(0)
    name = key.removesuffix("_valid").split("+")[0]
    if "+efficientnet" in key:
        pytest.importorskip("timm", reason="the efficientnet_lite0 encoder needs timm")
    model = create_model(name, num_classes=K, in_channels=in_channels, **MODELS[key])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.2)
    return model.eval()


def images(key: str, batch: int = 2, channels: int = 2) -> torch.Tensor:
    height, width = SIZES.get(key, (HEIGHT, WIDTH))
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, channels, height, width, generator=generator)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float rounding: 1e-5 relative to the logits' scale."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(type(m) is kind for m in model.modules())


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("key", sorted(MODELS))
def test_optimised_model_gives_the_same_logits(key, channels_last):
    model = build(key)
    x = images(key)
    expected = logits(model, x)
    fast = optimize_for_inference(model, channels_last=channels_last)
    actual = logits(fast, x)
    assert actual.shape == expected.shape
    assert actual.is_contiguous() or not channels_last  # the model's own layout otherwise
    assert_same_logits(actual, expected)


@pytest.mark.parametrize("key", ["unet", "segnet", "deeplabv3_small"])
def test_every_batch_norm_after_a_convolution_is_folded(key):
    model = build(key)
    fast = optimize_for_inference(model)
    # DeepLab's image-pooling branch keeps its own batch-norm subclass on a 1×1 map.
    assert count(fast, nn.BatchNorm2d) == 0
    assert count(model, nn.BatchNorm2d) > 0


@pytest.mark.parametrize("key", ["unet+efficientnet_lite0", "deeplabv3_small+efficientnet_lite0"])
def test_the_efficientnet_encoder_folds_its_batch_norms_and_keeps_its_activations(key):
    model = build(key)
    fast = optimize_for_inference(model)
    norms = [type(m).__name__ for m in fast.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == ["_PooledBatchNorm"] * ("deeplab" in key)  # the 1×1 image-pooling branch
    assert sum(isinstance(m, nn.ReLU6) for m in fast.encoder.modules()) == sum(
        isinstance(m, nn.ReLU6) for m in model.encoder.modules()
    )
    assert_same_logits(logits(fast, images(key)), logits(model, images(key)))


def test_original_model_is_unchanged():
    model = build("deeplabv3_small").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_inplace_changes_and_returns_the_model_itself():
    model = build("unet")
    expected = logits(model, images("unet"))
    assert optimize_for_inference(model, inplace=True) is model
    assert count(model, nn.BatchNorm2d) == 0
    assert_same_logits(logits(model, images("unet")), expected)


@pytest.mark.parametrize("key", ["unet", "fcn8s"])
def test_models_without_batch_norm_pass_through(key):
    torch.manual_seed(0)
    options = {**MODELS[key], "batch_norm": False} if key == "unet" else MODELS[key]
    model = create_model(key, num_classes=K, in_channels=2, **options).eval()
    convolutions = count(model, nn.Conv2d)
    assert fold_batch_norms(optimize_for_inference(model, channels_last=False)) == 0
    fast = optimize_for_inference(model)
    assert count(fast, nn.Conv2d) == convolutions
    assert_same_logits(logits(fast, images(key)), logits(model, images(key)))


def test_optimising_twice_is_optimising_once():
    model = build("unet")
    once = optimize_for_inference(model)
    twice = optimize_for_inference(once)
    assert twice is once
    assert len(twice._forward_pre_hooks) == len(twice._forward_hooks) == 1
    assert_same_logits(logits(twice, images("unet")), logits(model, images("unet")))


def test_no_gradients_are_recorded_outside_inference_mode():
    fast = optimize_for_inference(build("unet"))
    out = fast(images("unet"))
    assert not out.requires_grad
    assert not fast.training


def test_pixelwise_attributes_survive_and_tiled_prediction_agrees():
    model = build("unet_valid")
    fast = optimize_for_inference(model)
    assert fast.size_divisor == model.size_divisor
    assert fast.pixelwise_args == model.pixelwise_args
    assert fast.output_size(52) == model.output_size(52)
    image = torch.rand(2, 70, 61, generator=torch.Generator().manual_seed(2))
    assert_same_logits(predict(fast, image, tile=48), predict(model, image, tile=48))


def test_channels_last_input_of_many_channels_is_accepted():
    model = build("segnet", in_channels=3)
    x = images("segnet", channels=3).contiguous(memory_format=torch.channels_last)
    assert_same_logits(logits(optimize_for_inference(model), x), logits(model, x))


def test_convolution_whose_output_is_reused_is_not_folded():
    class Reuses(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    torch.manual_seed(0)
    model = Reuses().eval()
    model.bn.running_mean.normal_()
    fast = optimize_for_inference(model)
    assert count(fast, nn.BatchNorm2d) == 1
    assert_same_logits(logits(fast, images("unet")), logits(model, images("unet")))


def test_sequential_with_its_own_forward_is_not_folded():
    class Twice(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self[0](x)
            return self[1](y) + y

    torch.manual_seed(0)
    model = Twice(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.normal_()
    fast = optimize_for_inference(model)
    assert count(fast, nn.BatchNorm2d) == 1
    assert_same_logits(logits(fast, images("unet")), logits(model, images("unet")))


def test_not_a_module_is_refused():
    with pytest.raises(TypeError, match=r"^model must be a torch.nn.Module, got function; "):
        optimize_for_inference(lambda x: x)


def test_folding_in_training_mode_is_refused():
    model = build("unet").train()
    with pytest.raises(ValueError, match=r"^model must be in eval mode to fold batch norms, got "):
        fold_batch_norms(model)
