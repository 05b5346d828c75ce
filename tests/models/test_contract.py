"""The model contract, run over every registered model.

(N, C, H, W) float -> (N, K, H, W) logits at the input size for odd H, W; finite gradients;
deterministic eval; input validation with one-line errors. A newly registered model must be
added to SMALL in tests/small_models.py (a CPU-sized configuration), otherwise
test_every_model_is_covered fails.
"""

from __future__ import annotations

import pytest
import torch

from pixelwise.models import create_model, list_models
from small_models import ENCODED, SMALL

K = 5
# Every registered model at its small options, and the encoder variants.
CASES = {**{name: (name, options) for name, options in SMALL.items()}, **ENCODED}


def test_every_model_is_covered():
    assert sorted(SMALL) == list_models()


@pytest.fixture(params=sorted(CASES))
def built(request):
    torch.manual_seed(0)
    name, options = CASES[request.param]
    if "encoder" in options and options["encoder"] == "efficientnet_lite0":
        pytest.importorskip("timm", reason="the efficientnet_lite0 encoder needs timm")
    return request.param, create_model(name, num_classes=K, in_channels=3, **options)


def test_odd_size_gives_logits_at_input_size(built):
    name, model = built
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 67, 45))
    assert out.shape == (2, K, 67, 45), name
    assert out.dtype == torch.float32


def test_no_softmax_inside(built):
    _, model = built
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 35, 41))
    sums = out.sum(dim=1)
    assert not torch.allclose(sums, torch.ones_like(sums), atol=1e-3)


def test_gradients_are_finite_and_reach_the_first_layer(built):
    name, model = built
    model.train()
    x = torch.randn(2, 3, 37, 53, requires_grad=True)
    model(x).logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_eval_is_deterministic(built):
    _, model = built
    model.eval()
    x = torch.randn(1, 3, 40, 33)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_records_how_it_was_built(built):
    case, model = built
    name, options = CASES[case]
    assert model.pixelwise_name == name
    assert model.pixelwise_args == {"num_classes": K, "in_channels": 3, **options}
    rebuilt = create_model(name, **model.pixelwise_args)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert isinstance(model.size_divisor, int) and model.size_divisor >= 1
    assert len(model.stage_names) >= 2


def test_wrong_channel_count_is_one_clear_line(built):
    _, model = built
    with pytest.raises(ValueError, match=r"images must have 3 channels .*got 1 channels") as info:
        model(torch.randn(1, 1, 32, 32))
    assert "\n" not in str(info.value)


def test_unbatched_input_says_how_to_fix(built):
    _, model = built
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.randn(3, 32, 32))


def test_integer_images_are_refused(built):
    _, model = built
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_other_channel_counts_build_and_run():
    model = create_model("unet", num_classes=2, in_channels=1, base_width=4, depth=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 21, 30)).shape == (1, 2, 21, 30)
