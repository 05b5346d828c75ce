"""The ONNX Runtime backend: the same logits as PyTorch, usable wherever a model is."""

from __future__ import annotations

import sys

import pytest
import torch

from pixelwise.inference.runtime import OnnxRuntimeModel, onnxruntime_model, with_backend
from pixelwise.inference.tiling import plan_tiles, predict
from pixelwise.models import create_model
from small_models import SMALL

pytest.importorskip("onnx", reason="the onnxruntime backend needs pixelwise[export]")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs pixelwise[export]")

# Folded batch norms (unet), max-unpooling exported as a scatter (segnet), a ResNet with
# ASPP and global pooling (deeplabv3_small), and the valid U-Net without its size check.
CASES = {
    "unet": ("unet", SMALL["unet"]),
    "segnet": ("segnet", SMALL["segnet"]),
    "deeplabv3_small": ("deeplabv3_small", SMALL["deeplabv3_small"]),
    "unet_valid": ("unet", {"base_width": 4, "depth": 2, "padding": "valid"}),
}


def build(case: str) -> torch.nn.Module:
    name, options = CASES[case]
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=3, **options)
    if case != "unet_valid":  # batch-norm statistics other than the initial ones
        model.train()
        with torch.no_grad():
            model(torch.rand(2, 3, 64, 64))
    return model.eval()


def assert_close_to_scale(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    scale = max(float(want.abs().max()), 1.0)
    assert float((got - want).abs().max()) <= 1e-4 * scale


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnxruntime_gives_pytorchs_logits(case):
    model = build(case)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = onnxruntime_model(model)
    size = 60 if case != "unet_valid" else model.valid_input_sizes_near(60)[1]
    x = torch.rand(2, 3, size, size + (0 if case == "unet_valid" else 4))
    with torch.inference_mode():
        want = model(x)
    assert_close_to_scale(fast(x), want)
    assert_close_to_scale(fast(x[:1]), want[:1])  # the batch is free
    assert len(fast._sessions) == 1  # one export for the shape, reused
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tiled_prediction_plans_the_same_tiles_and_exports_once():
    model = build("unet_valid")
    fast = onnxruntime_model(model)
    assert fast.size_divisor == model.size_divisor
    assert fast.output_size(92) == model.output_size(92)
    image = torch.rand(3, 150, 130)

    def layout(m: torch.nn.Module) -> list[tuple[int, int, int, int]]:
        plan = plan_tiles(m, 150, 130, tile=64)
        return [(t.start, t.length, t.dst, t.kept) for t in plan.rows + plan.cols]

    assert layout(fast) == layout(model)
    got = predict(fast, image, tile=64)
    want = predict(model, image, tile=64, optimize=False)
    assert_close_to_scale(got, want)
    assert len(fast._sessions) == 1  # every overlap-tile input has one shape


def test_tiled_blended_prediction_with_tta_matches_pytorch():
    model = build("unet")
    image = torch.rand(3, 100, 90)
    got = predict(with_backend(model, "onnxruntime"), image, tile=48, tta="flips")
    want = predict(model, image, tile=48, tta="flips", optimize=False)
    assert_close_to_scale(got, want)


def test_wrapping_is_idempotent_and_the_torch_backend_optimises():
    model = build("unet")
    fast = onnxruntime_model(model)
    assert onnxruntime_model(fast) is fast
    assert isinstance(with_backend(model, "onnxruntime"), OnnxRuntimeModel)
    assert getattr(with_backend(model, "torch"), "pixelwise_optimized", False)
    with pytest.raises(ValueError, match=r"^backend must be one of .*did you mean 'onnxruntime'"):
        with_backend(model, "onnxrt")


def test_bad_input_is_one_line():
    fast = onnxruntime_model(build("unet"))
    with pytest.raises(ValueError, match=r"^images must have 4 dimensions"):
        fast(torch.rand(3, 32, 32))


def test_missing_onnxruntime_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    with pytest.raises(
        ImportError, match=r"^the onnxruntime backend must have .*pixelwise\[export\]"
    ):
        onnxruntime_model(build("unet"))
