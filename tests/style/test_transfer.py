"""The optimisation: E(G) falls, G's style approaches S's, runs are reproducible, errors are clear."""

from __future__ import annotations

import itertools

import pytest
import torch

from pixelwise.inference.segmenter import Segmenter
from pixelwise.style import (
    ModelFeatures,
    StyleObjective,
    content_loss,
    gram_matrix,
    resolve_layers,
    style_loss,
    style_target,
    stylize,
)

SMALL_LAYERS = ("conv1_1", "conv2_1", "conv3_1")


@pytest.fixture
def pair(image, stripes):
    content = image(3, 21, 26, 1)  # (3, 21, 26)
    texture = torch.from_numpy(stripes(23, 19)).permute(2, 0, 1).float() / 255  # (3, 23, 19)
    return content, texture


def gram_distance(network, layers, g, s):
    """Σ_l ‖F_l(G)/M_G − F_l(S)/M_S‖ / ‖F_l(S)/M_S‖: how far G's style is from S's."""
    fg, fs = network(g[None], layers), network(s[None], layers)
    total = 0.0
    for name in layers:
        a = gram_matrix(fg[name])[0] / fg[name][0, 0].numel()
        b = gram_matrix(fs[name])[0] / fs[name][0, 0].numel()
        total += ((a - b).norm() / b.norm()).item()
    return total


def test_objective_is_the_weighted_sum_of_the_losses(vgg, pair):
    content, style = pair
    layers = resolve_layers(vgg, "conv2_2", SMALL_LAYERS, (0.5, 0.3, 0.2))
    objective = StyleObjective(vgg, layers, content, style, content_weight=2.0, style_weight=7.0)
    g = content[None] * 0.5 + 0.25  # (1, 3, 21, 26)
    total, e_content, e_style = objective.terms(g)
    fg = vgg(g, ["conv2_2", *SMALL_LAYERS])
    fc, fs = vgg(content[None], ["conv2_2"]), vgg(style[None], SMALL_LAYERS)
    expected_content = content_loss(fg["conv2_2"], fc["conv2_2"])
    expected_style = sum(
        w * style_loss(fg[n], style_target(fs[n], fg[n].shape[-2] * fg[n].shape[-1]))
        for n, w in zip(SMALL_LAYERS, (0.5, 0.3, 0.2), strict=True)
    )
    torch.testing.assert_close(e_content, expected_content)
    torch.testing.assert_close(e_style, expected_style)
    torch.testing.assert_close(total, 2.0 * expected_content + 7.0 * expected_style)


def test_lbfgs_lowers_the_loss_and_brings_the_style_to_the_style_images(vgg, pair):
    content, style = pair
    rows = []
    result = stylize(content, style, vgg, steps=8, progress=rows.append)
    history = result.history
    assert rows == history and [r.step for r in rows] == list(range(9)) and result.steps == 8
    assert history[0].content == 0.0  # G starts as the content image
    assert history[-1].total < 0.5 * history[0].total
    assert history[-1].style < 0.2 * history[0].style
    assert all(b.total <= a.total for a, b in itertools.pairwise(history))
    layers = list(vgg.style_layers)
    before = gram_distance(vgg, layers, content, style)
    after = gram_distance(vgg, layers, result.image, style)
    assert after < 0.5 * before
    assert result.image.shape == content.shape
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0


def test_adam_from_noise_lowers_the_style_term(vgg, pair):
    content, style = pair
    result = stylize(
        content,
        style,
        vgg,
        content_layer="conv2_2",
        style_layers=SMALL_LAYERS,
        steps=12,
        optimizer="adam",
        init="noise",
        lr=0.05,
        seed=3,
    )
    history = result.history
    assert history[-1].style < 0.5 * history[0].style
    assert history[-1].total < history[0].total
    assert result.evaluations == 12 and len(history) == 13
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_same_seed_same_image(vgg, pair, optimizer):
    content, style = pair
    options = dict(
        style_layers=SMALL_LAYERS,
        content_layer="conv2_1",
        steps=3,
        optimizer=optimizer,
        init="noise",
    )
    a = stylize(content, style, vgg, seed=5, **options).image
    b = stylize(content, style, vgg, seed=5, **options).image
    c = stylize(content, style, vgg, seed=6, **options).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_trace_keeps_the_asked_steps(vgg, pair):
    content, style = pair
    result = stylize(content, style, vgg, style_layers=SMALL_LAYERS, steps=4, trace_steps=(0, 2, 4))
    assert [step for step, _ in result.frames] == [0, 2, 4]
    torch.testing.assert_close(result.frames[0][1], content)
    torch.testing.assert_close(result.frames[-1][1], result.image)


def test_grey_model_features_stylise_a_grey_image(grey_unet, image):
    network = ModelFeatures(Segmenter(grey_unet(), {"mean": [0.5], "std": [0.25]}))
    content, style = image(1, 19, 22, 1), image(1, 17, 15, 2) ** 3
    result = stylize(content, style, network, steps=4)
    assert result.image.shape == (1, 19, 22)
    assert result.history[-1].style < result.history[0].style


def test_too_small_images_name_the_deepest_layer(vgg, image):
    with pytest.raises(ValueError) as info:
        stylize(image(3, 12, 40, 0), image(3, 30, 30, 1), vgg)
    assert str(info.value) == (
        "content image size must be at least 16×16 pixels for layer conv5_1 of the feature "
        "network, got 12×40; pass a larger --size, or choose shallower layers"
    )
    with pytest.raises(
        ValueError, match=r"^style image size must be at least 4×4 pixels for layer conv3_1"
    ):
        stylize(image(3, 20, 20, 0), image(3, 3, 9, 1), vgg, style_layers=SMALL_LAYERS)


def test_bad_arguments_are_one_line_errors(vgg, image):
    content, style = image(3, 20, 20, 0), image(3, 20, 20, 1)
    cases = [
        (
            dict(style_layers=["conv31"]),
            "style layer name must be a layer of the feature network, got 'conv31'; "
            "did you mean 'conv3_1'?",
        ),
        (
            dict(content_layer="conv4_22"),
            "content layer name must be a layer of the feature network, got 'conv4_22'; "
            "did you mean 'conv4_2'?",
        ),
        (dict(optimizer="lbgfs"), "did you mean 'lbfgs'?"),
        (dict(init="noize"), "did you mean 'noise'?"),
        (dict(lr=0.1), "lr must be left unset for L-BFGS (its line search picks each step)"),
        (dict(style_weight=-1.0), "style_weight must be a finite number >= 0, got -1.0"),
        (dict(layer_weights=[1.0]), "style layer weights must be 5 finite numbers >= 0"),
        (dict(steps=-2), "steps must be an integer >= 0, got -2"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ValueError) as info:
            stylize(content, style, vgg, steps=kwargs.pop("steps", 1), **kwargs)
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(
        ValueError,
        match=r"^content image must have 3 channel\(s\), the feature network's in_channels, got 1; read it with channels=3$",
    ):
        stylize(image(1, 20, 20, 0), style, vgg)
