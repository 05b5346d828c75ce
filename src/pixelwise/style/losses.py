"""Content and style losses of neural style transfer, and how their scale maps to other code.

Gatys, Ecker and Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016
(https://openaccess.thecvf.com/content_cvpr_2016/papers/Gatys_Image_Style_Transfer_CVPR_2016_paper.pdf).
Here ``a_ijk`` is a layer's response at position (i, j) and channel k; ``I × J`` positions and
``K`` channels, for one image:

    E_content = Σ_ijk (a_ijk(G) − a_ijk(C))²
    F_kk'     = Σ_i Σ_j a_ijk a_ijk'                                (the Gram or style matrix)
    E_style   = 1/(2IJK)² · Σ_k Σ_k' (F_kk'(G) − F_kk'(S))²         (one layer)
    E(G)      = α·E_content + β·Σ_l w_l·E_style,l                   (w_l: layer weights)

A batch of N images adds up the per-image terms. Where S's layer has M_S positions and G's has
M = IJ, S's Gram matrix is compared at G's size, ``F(S)·M/M_S`` (see :func:`style_target`):
the style statistics are matched, not the size of the style image. With equal sizes, the case
the definition is written for, that factor is 1.

How the scales map (N = K filters, M = IJ positions, for one image):

- The paper: ``E_l = 1/(4N²M²) Σ (G − A)²``. Since ``(2IJK)² = 4·K²·(IJ)² = 4N²M²`` the
  style term is *identical*, so the paper's β and w_l carry over unchanged. The paper's
  content loss has a factor 1/2 (``½ Σ (F − P)²``), so ``E_content = 2 × L_content(paper)``
  and α = α_paper / 2 (the ratio α/β halves). The paper takes responses from Caffe's VGG19
  (ReLU in place, so the named layers hold rectified responses: choose ``relu4_2`` etc. here
  to match) with a rescaled copy of its weights and 0–255 BGR inputs; the weights' own scale
  does not carry over from that network to torchvision's.
- The PyTorch tutorial (``gram_matrix`` divides ``F Fᵀ`` by ``a·b·c·d`` = 1·K·I·J, the loss is
  ``mse_loss`` of the two K×K matrices, the content loss ``mse_loss`` of the responses): its
  style term is ``Σ (ΔF)² / (K²·(KM)²) = (4/K²)·E_style``, so its style weight β_t becomes the
  layer weight ``β·w_l = 4·β_t / K²`` here (a different factor per layer: 64 to 512 channels);
  its content term is ``E_content / (KM)``, so α = α_t / (K·M) at the content layer's size.
- The PyTorch fast-neural-style example (``gram_matrix`` divides by ``ch·h·w`` per image, the
  loss is ``mse_loss`` over the (B, K, K) batch of Gram matrices, the content loss
  ``mse_loss`` over the batch of responses): with B images, ``β·w_l = 4·β_f / (B·K²)`` and
  ``α = α_f / (B·K·M)``; for one image the same as the tutorial.

:func:`content_weight_factor` and :func:`style_weight_factor` return these factors; multiply a
weight from one of those conventions by the factor to use it here. Both examples feed images
in [0, 1] normalised with the ImageNet mean and std, as :mod:`pixelwise.style.features` does,
so with the same weights the same layer responses are compared. The tutorial inserts its losses
after the convolutions (pre-activations, ``conv*_*`` here); fast-neural-style reads the ReLU
outputs (``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3`` here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pixelwise._checks import check_choice, message

CONVENTIONS = ("gatys", "pytorch_tutorial", "fast_neural_style")


def _check_features(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        actual = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(message(what, "be a float tensor of shape (N, D, H, W)", actual))
    return x


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """The style matrix ``F_kk' = Σ_i Σ_j a_ijk a_ijk'`` of each image, unnormalised.

    Shape:
        features: (N, D, H, W) -> (N, D, D), symmetric positive semi-definite.
    """
    x = _check_features(features, "features")
    flat = x.flatten(2)  # (N, D, H·W)
    return flat @ flat.transpose(1, 2)  # (N, D, D)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``E_content = Σ (a(G) − a(C))²`` over positions and channels, summed over the batch.

    Shape:
        features, target: (N, D, H, W) (target may be (1, D, H, W)); returns a scalar.
    """
    x = _check_features(features, "features")
    if target.shape[1:] != x.shape[1:]:
        raise ValueError(
            message(
                "content target",
                f"have the features' shape (D, H, W) = {tuple(x.shape[1:])}",
                f"{tuple(target.shape[1:])}",
                "compute it from the content image at the size being optimised",
            )
        )
    return (x - target).pow(2).sum()


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """``E_style = 1/(2IJK)² Σ_kk' (F_kk'(G) − target_kk')²`` for one layer, summed over the batch.

    ``I×J`` and ``K`` are the features' spatial size and channels; ``target_gram`` is S's Gram
    matrix at that size (:func:`style_target`).

    Shape:
        features: (N, D, H, W); target_gram: (D, D) or (N, D, D); returns a scalar.
    """
    x = _check_features(features, "features")
    _, channels, height, width = x.shape
    if target_gram.shape[-2:] != (channels, channels):
        raise ValueError(
            message(
                "style target",
                f"be a ({channels}, {channels}) Gram matrix for {channels}-channel features",
                f"shape {tuple(target_gram.shape)}",
            )
        )
    norm = (2 * height * width * channels) ** 2
    return (gram_matrix(x) - target_gram).pow(2).sum() / norm


def style_target(style_features: torch.Tensor, positions: int) -> torch.Tensor:
    """S's Gram matrix, averaged over S's batch and scaled to ``positions`` = I·J of G's layer.

    ``F(S)·M/M_S``: equal to ``gram_matrix`` when S's layer has ``M_S = positions``.

    Shape:
        style_features: (N_S, D, H_S, W_S) -> (D, D).
    """
    x = _check_features(style_features, "style features")
    own = x.shape[-2] * x.shape[-1]
    return gram_matrix(x).mean(0) * (positions / own)  # (D, D)


def content_weight_factor(convention: str, shape: Sequence[int]) -> float:
    """Multiply a content weight of ``convention`` by this to get α here.

    Args:
        convention: one of :data:`CONVENTIONS` (see the module docstring).
        shape: (N, K, I, J) of the content layer's responses for G.
    """
    check_choice("convention", convention, CONVENTIONS)
    batch, channels, height, width = _check_shape(shape)
    if convention == "gatys":
        return 0.5
    if convention == "pytorch_tutorial":
        return 1.0 / (channels * height * width)
    return 1.0 / (batch * channels * height * width)


def style_weight_factor(convention: str, channels: int, batch: int = 1) -> float:
    """Multiply a style-layer weight of ``convention`` by this to get ``β·w_l`` here.

    Args:
        convention: one of :data:`CONVENTIONS` (see the module docstring).
        channels: K, the layer's channels.
        batch: images per batch (only fast-neural-style averages over it).
    """
    check_choice("convention", convention, CONVENTIONS)
    _check_shape((batch, channels, 1, 1))
    if convention == "gatys":
        return 1.0
    if convention == "pytorch_tutorial":
        return 4.0 / channels**2
    return 4.0 / (batch * channels**2)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    values = tuple(shape)
    if len(values) != 4 or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ValueError(message("shape", "be four positive ints (N, K, I, J)", repr(shape)))
    return values  # type: ignore[return-value]
