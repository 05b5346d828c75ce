"""The style-transfer losses against numpy loops, and their mapping to other conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.style.losses import (
    content_loss,
    content_weight_factor,
    gram_matrix,
    style_loss,
    style_target,
    style_weight_factor,
)


def features(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gram_loop(a: np.ndarray) -> np.ndarray:
    """F_kk' = Σ_i Σ_j a_ijk a_ijk' for one image a of shape (K, I, J)."""
    k_n, i_n, j_n = a.shape
    out = np.zeros((k_n, k_n))
    for k in range(k_n):
        for k2 in range(k_n):
            for i in range(i_n):
                for j in range(j_n):
                    out[k, k2] += a[k, i, j] * a[k2, i, j]
    return out


def content_loop(g: np.ndarray, c: np.ndarray) -> float:
    total = 0.0
    for idx in np.ndindex(g.shape):
        total += (g[idx] - c[idx]) ** 2
    return total


def style_loop(g: np.ndarray, s_gram: np.ndarray) -> float:
    """1/(2IJK)² Σ_k Σ_k' (F_kk'(G) − F_kk'(S))² for one image g of shape (K, I, J)."""
    k_n, i_n, j_n = g.shape
    fg = gram_loop(g)
    total = 0.0
    for k in range(k_n):
        for k2 in range(k_n):
            total += (fg[k, k2] - s_gram[k, k2]) ** 2
    return total / (2 * i_n * j_n * k_n) ** 2


def test_gram_matrix_matches_the_loop():
    x = features(2, 5, 3, 7)
    got = gram_matrix(x).numpy()
    assert got.shape == (2, 5, 5)
    for n in range(2):
        np.testing.assert_allclose(got[n], gram_loop(x[n].numpy()), rtol=1e-12)


def test_gram_matrix_is_symmetric_positive_semidefinite():
    x = features(3, 6, 4, 5, seed=1)  # 20 positions > 6 channels: full rank
    gram = gram_matrix(x)
    torch.testing.assert_close(gram, gram.transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert (torch.linalg.eigvalsh(gram) >= -1e-10).all()
    few = gram_matrix(features(1, 6, 1, 2, seed=2))[0]  # 2 positions: rank 2 of 6
    eig = torch.linalg.eigvalsh(few)
    assert (eig >= -1e-10).all() and int((eig > 1e-8).sum()) == 2


def test_content_loss_matches_the_loop():
    g, c = features(1, 4, 5, 3, seed=3), features(1, 4, 5, 3, seed=4)
    assert content_loss(g, c).item() == pytest.approx(content_loop(g.numpy(), c.numpy()), rel=1e-12)


def test_style_loss_matches_the_loop_and_adds_the_batch():
    g, s = features(2, 4, 3, 5, seed=5), features(1, 4, 3, 5, seed=6)
    s_gram = gram_loop(s[0].numpy())
    expected = sum(style_loop(g[n].numpy(), s_gram) for n in range(2))
    got = style_loss(g, gram_matrix(s)[0])
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert style_loss(g[:1], gram_matrix(g[:1])[0]).item() == 0.0


def test_style_target_compares_a_style_image_of_another_size_by_its_statistics():
    s = features(1, 4, 3, 5, seed=7)
    tiled = torch.cat([s, s], dim=3)  # (1, 4, 3, 10): the same texture, twice the positions
    torch.testing.assert_close(gram_matrix(tiled)[0], 2 * gram_matrix(s)[0])
    torch.testing.assert_close(style_target(tiled, 15), gram_matrix(s)[0])
    torch.testing.assert_close(style_target(s, 15), gram_matrix(s)[0])


def test_normalisation_is_the_papers_one_over_4_n2_m2():
    g, s = features(1, 6, 4, 5, seed=8), features(1, 6, 4, 5, seed=9)
    n_filters, m_positions = 6, 4 * 5
    g_mat, a_mat = g[0].reshape(6, -1), s[0].reshape(6, -1)  # F^l, N_l × M_l
    paper = ((g_mat @ g_mat.T - a_mat @ a_mat.T) ** 2).sum() / (4 * n_filters**2 * m_positions**2)
    assert style_loss(g, gram_matrix(s)[0]).item() == pytest.approx(paper.item(), rel=1e-12)
    paper_content = 0.5 * ((g - s) ** 2).sum()  # L_content = ½ Σ (F − P)²
    alpha_paper = 3.0
    ours = content_weight_factor("gatys", g.shape) * alpha_paper * content_loss(g, s)
    assert ours.item() == pytest.approx(alpha_paper * paper_content.item(), rel=1e-12)
    assert style_weight_factor("gatys", 6) == 1.0


# The PyTorch tutorial's functions, as written there.
def tutorial_gram(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    f = x.view(a * b, c * d)
    return torch.mm(f, f.t()).div(a * b * c * d)


def tutorial_style(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(tutorial_gram(x), tutorial_gram(target))


# The PyTorch fast-neural-style example's functions, as written there.
def fns_gram(y: torch.Tensor) -> torch.Tensor:
    b, ch, h, w = y.size()
    f = y.view(b, ch, w * h)
    return f.bmm(f.transpose(1, 2)) / (ch * h * w)


@pytest.mark.parametrize("channels", [3, 8])
def test_tutorial_weights_carry_over_with_the_factors(channels):
    g, s = features(1, channels, 5, 7, seed=10), features(1, channels, 5, 7, seed=11)
    beta_t, alpha_t = 1e6, 1.0
    theirs = beta_t * tutorial_style(g, s)
    ours = (
        beta_t
        * style_weight_factor("pytorch_tutorial", channels)
        * style_loss(g, gram_matrix(s)[0])
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    assert style_weight_factor("pytorch_tutorial", channels) == 4 / channels**2
    theirs_c = alpha_t * F.mse_loss(g, s)
    ours_c = alpha_t * content_weight_factor("pytorch_tutorial", g.shape) * content_loss(g, s)
    assert ours_c.item() == pytest.approx(theirs_c.item(), rel=1e-10)


def test_fast_neural_style_weights_carry_over_with_the_factors():
    batch, channels = 3, 5
    y, s = features(batch, channels, 4, 6, seed=12), features(1, channels, 4, 6, seed=13)
    beta_f, alpha_f = 1e10, 1e5
    gm_s = fns_gram(s).expand(batch, -1, -1)
    theirs = beta_f * F.mse_loss(fns_gram(y), gm_s)
    factor = style_weight_factor("fast_neural_style", channels, batch=batch)
    assert factor == 4 / (batch * channels**2)
    ours = beta_f * factor * style_loss(y, gram_matrix(s)[0])
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    x = features(batch, channels, 4, 6, seed=14)
    theirs_c = alpha_f * F.mse_loss(y, x)
    ours_c = alpha_f * content_weight_factor("fast_neural_style", y.shape) * content_loss(y, x)
    assert ours_c.item() == pytest.approx(theirs_c.item(), rel=1e-10)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(
        ValueError,
        match=r"^features must be a float tensor of shape \(N, D, H, W\), got shape \(4, 5\)$",
    ):
        gram_matrix(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"^style target must be a \(3, 3\) Gram matrix"):
        style_loss(torch.zeros(1, 3, 2, 2), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"^content target must have the features' shape"):
        content_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match=r"did you mean 'pytorch_tutorial'\?$"):
        style_weight_factor("pytorch_tutorail", 64)
    with pytest.raises(ValueError, match=r"^shape must be four positive ints"):
        content_weight_factor("gatys", (1, 2, 3))
