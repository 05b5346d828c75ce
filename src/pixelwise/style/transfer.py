"""Neural style transfer: optimise an image G so that E(G) = α·E_content + β·E_style is small.

Gatys, Ecker and Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016
(https://openaccess.thecvf.com/content_cvpr_2016/papers/Gatys_Image_Style_Transfer_CVPR_2016_paper.pdf).
The losses are in :mod:`pixelwise.style.losses`, the feature networks in
:mod:`pixelwise.style.features`.

Differences from the paper: G may start from the content image (the paper starts from white
noise; both are offered), and Adam is offered beside the paper's L-BFGS.

Pixels stay in [0, 1] as a constraint of the optimisation, not by a change of variables:

- L-BFGS is scipy's L-BFGS-B, which handles the box 0 <= G <= 1 itself (projected search
  directions and line searches, ``maxcor`` = :data:`LBFGS_HISTORY`). Clamping after each step of
  an unconstrained L-BFGS (``torch.optim.LBFGS``) was tried and stalls: the clamp breaks the
  curvature pairs, the next direction is no descent direction and every later step is empty.
  One step is one L-BFGS-B iteration, whose line search may evaluate E(G) more than once
  (:attr:`StyleResult.evaluations` counts the forward-backward passes); E(G) runs in torch on
  G's device, scipy sees float64 copies of the pixels and the gradient.
- Adam is projected gradient descent: each update is followed by clamping G to [0, 1].
- A sigmoid or tanh parametrisation was not used: it flattens the gradient near black and
  white and cannot start from a content image with pure black or white pixels.

Everything random (the noise start) is drawn from ``seed``; with the same inputs, network and
seed the result is identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pixelwise._checks import check_choice, check_positive_int, message
from pixelwise.style.features import FeatureNetwork
from pixelwise.style.losses import content_loss, style_loss, style_target

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
ADAM_LR = 0.02  # pixel units of [0, 1]
LBFGS_HISTORY = 10  # scipy's default; 100 pairs would hold 200 copies of G


@dataclass(frozen=True)
class StyleProgress:
    """The terms of the image after ``step`` of ``steps`` steps (unweighted E_content and
    Σ_l w_l·E_style,l, and the weighted total)."""

    step: int
    steps: int
    content: float
    style: float
    total: float


@dataclass
class StyleResult:
    """The stylised image, the terms after every step and the kept intermediate images.

    Shape:
        image: (C, H, W) in [0, 1]; frames: (step, (C, H, W)) pairs.
    """

    image: torch.Tensor
    history: list[StyleProgress] = field(default_factory=list)
    frames: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    evaluations: int = 0
    steps: int = 0


@dataclass(frozen=True)
class StyleLayers:
    """Which layers are compared: one content layer, style layers with their weights w_l."""

    content: str
    style: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """Every layer the objective reads, each once."""
        return tuple(dict.fromkeys((self.content, *self.style)))


def resolve_layers(
    network: FeatureNetwork,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    layer_weights: Sequence[float] | None = None,
) -> StyleLayers:
    """Fill in the network's defaults and check every name (did-you-mean on unknown names).

    ``layer_weights`` default to 1/L each for L style layers, as in the paper.
    """
    content = network.check_layers([content_layer or network.content_layer], "content layer")[0]
    style = network.check_layers(
        style_layers if style_layers is not None else network.style_layers, "style layer"
    )
    weights = tuple(layer_weights) if layer_weights is not None else (1 / len(style),) * len(style)
    if len(weights) != len(style) or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            message(
                "style layer weights",
                f"be {len(style)} finite numbers >= 0, one per style layer",
                repr(layer_weights),
            )
        )
    return StyleLayers(content, style, weights)


def check_image_size(
    network: FeatureNetwork, layers: Sequence[str], image: torch.Tensor, what: str
) -> None:
    """Raise a ValueError if ``image`` is too small for the deepest of ``layers``.

    Shape:
        image: (C, H, W).
    """
    deepest = max(layers, key=lambda name: network.min_size([name]))
    smallest = network.min_size([deepest])
    height, width = image.shape[-2:]
    if min(height, width) < smallest:
        raise ValueError(
            message(
                f"{what} size",
                f"be at least {smallest}×{smallest} pixels for layer {deepest} of the feature network",
                f"{height}×{width}",
                "pass a larger --size, or choose shallower layers",
            )
        )


def _check_image(image: object, channels: int, what: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        actual = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image)
        raise ValueError(message(what, "be a float tensor (C, H, W) in [0, 1]", actual))
    if image.shape[0] != channels:
        raise ValueError(
            message(
                what,
                f"have {channels} channel(s), the feature network's in_channels",
                image.shape[0],
                f"read it with channels={channels}",
            )
        )
    return image


class StyleObjective:
    """E(G) = α·E_content(G, C) + β·Σ_l w_l·E_style,l(G, S), targets computed once.

    Shape:
        content, style: (C, H, W) and (C, H_S, W_S) in [0, 1]; G: (1, C, H, W).
    """

    def __init__(
        self,
        network: FeatureNetwork,
        layers: StyleLayers,
        content: torch.Tensor,
        style: torch.Tensor,
        *,
        content_weight: float,
        style_weight: float,
    ) -> None:
        self.network, self.layers = network, layers
        self.content_weight, self.style_weight = content_weight, style_weight
        with torch.no_grad():
            self.content_target = network(content[None], [layers.content])[layers.content]
            style_features = network(style[None], layers.style)
        self.style_features = {name: style_features[name] for name in layers.style}
        self._grams: dict[tuple[str, int], torch.Tensor] = {}

    def _target_gram(self, name: str, positions: int) -> torch.Tensor:
        key = (name, positions)
        if key not in self._grams:
            self._grams[key] = style_target(self.style_features[name], positions)  # (D, D)
        return self._grams[key]

    def terms(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, E_content, Σ_l w_l·E_style,l) of a batch of one image G (1, C, H, W)."""
        features = self.network(image, self.layers.all)
        content = content_loss(features[self.layers.content], self.content_target)
        style = image.new_zeros(())
        for name, weight in zip(self.layers.style, self.layers.weights, strict=True):
            x = features[name]  # (1, D, H_l, W_l)
            style = style + weight * style_loss(
                x, self._target_gram(name, x.shape[-2] * x.shape[-1])
            )
        total = self.content_weight * content + self.style_weight * style
        return total, content, style


def initial_image(content: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    """G at step 0: a copy of the content image, or uniform noise in [0, 1] drawn from ``seed``.

    Shape:
        content: (C, H, W) -> (1, C, H, W).
    """
    check_choice("init", init, INITS)
    if init == "content":
        return content[None].detach().clone()  # (1, C, H, W)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, *content.shape), generator=generator)  # (1, C, H, W)
    return noise.to(device=content.device, dtype=content.dtype)


class _Loop:
    """The optimisation's bookkeeping: terms after every step, kept frames, evaluations."""

    def __init__(
        self,
        objective: StyleObjective,
        steps: int,
        progress: Callable[[StyleProgress], None] | None,
        trace_steps: Sequence[int],
    ) -> None:
        self.objective, self.steps, self.progress = objective, steps, progress
        self.trace_steps = set(trace_steps)
        self.result = StyleResult(image=torch.empty(0))

    def evaluate(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The terms of ``image`` (1, C, H, W) with its gradient in ``image.grad``."""
        terms = self.objective.terms(image)
        terms[0].backward()
        self.result.evaluations += 1
        return terms

    def step_done(self, step: int, image: torch.Tensor, terms: Sequence[torch.Tensor]) -> None:
        """Record the image after ``step`` steps: its terms, and the image if it is traced."""
        total, content, style = (float(t.detach()) for t in terms)
        row = StyleProgress(step, self.steps, content, style, total)
        self.result.history.append(row)
        self.result.steps = step
        if step in self.trace_steps:
            self.result.frames.append((step, image.detach()[0].clone()))  # (C, H, W)
        if self.progress is not None:
            self.progress(row)


def _adam(loop: _Loop, start: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Projected Adam: an Adam update, then G clamped to [0, 1]."""
    x = start.clone().requires_grad_(True)  # (1, C, H, W)
    opt = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        opt.zero_grad()
        loop.step_done(step, x, loop.evaluate(x))
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    with torch.no_grad():
        loop.step_done(steps, x, loop.objective.terms(x))
    return x.detach()


class _Flat:
    """E(G) and its gradient as scipy sees them: float64 vectors of G's pixels."""

    def __init__(self, loop: _Loop, start: torch.Tensor) -> None:
        self.loop, self.like = loop, start
        self.last: tuple[np.ndarray, tuple[torch.Tensor, ...]] | None = None

    def image(self, flat: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(flat).to(device=self.like.device, dtype=self.like.dtype)
        return x.view(self.like.shape)  # (1, C, H, W)

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = self.image(flat).requires_grad_(True)
        terms = self.loop.evaluate(x)
        self.last = (flat.copy(), tuple(t.detach() for t in terms))
        if not self.loop.result.history:  # the first evaluation is at the start: step 0
            self.loop.step_done(0, x, terms)
        grad = x.grad.detach().to(device="cpu", dtype=torch.float64)
        return float(terms[0].detach()), grad.numpy().ravel()

    def terms_at(self, flat: np.ndarray) -> tuple[torch.Tensor, ...]:
        if self.last is not None and np.array_equal(self.last[0], flat):
            return self.last[1]
        with torch.no_grad():
            return self.loop.objective.terms(self.image(flat))


def _lbfgsb(loop: _Loop, start: torch.Tensor, steps: int) -> torch.Tensor:
    """L-BFGS-B (scipy): L-BFGS with the box constraint 0 <= G <= 1 built in."""
    from scipy.optimize import Bounds, minimize

    flat = _Flat(loop, start)
    x0 = start.detach().to(device="cpu", dtype=torch.float64).numpy().ravel()
    if steps == 0:
        loop.step_done(0, start, flat.terms_at(x0))
        return start

    def callback(intermediate_result: object) -> None:
        x = intermediate_result.x
        loop.step_done(loop.result.steps + 1, flat.image(x), flat.terms_at(x))

    # ftol = gtol = 0: run the steps asked for; the search stops early only when it cannot
    # make progress at all.
    options = {
        "maxiter": steps,
        "maxfun": 50 * steps,
        "maxcor": LBFGS_HISTORY,
        "ftol": 0,
        "gtol": 0,
    }
    found = minimize(
        flat,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=Bounds(0.0, 1.0),
        options=options,
        callback=callback,
    )
    return flat.image(found.x).clone()


def optimise(
    objective: StyleObjective,
    image: torch.Tensor,
    *,
    steps: int,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    progress: Callable[[StyleProgress], None] | None = None,
    trace_steps: Sequence[int] = (),
) -> StyleResult:
    """Minimise ``objective`` over the pixels of ``image``, keeping them in [0, 1].

    ``progress`` is called once at the start and after every step, with the terms of the image
    after ``step`` steps (``step`` = 0 … ``steps``); ``trace_steps`` names the steps whose image
    is kept in :attr:`StyleResult.frames`. L-BFGS may stop before ``steps`` when no step lowers
    E(G) any more (:attr:`StyleResult.steps` says how many it took).

    Shape:
        image: (1, C, H, W), the start (clamped to [0, 1]); the result's image is (C, H, W).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive_int("steps", steps, minimum=0)
    if optimizer == "lbfgs" and lr is not None:
        raise ValueError(
            message(
                "lr",
                "be left unset for L-BFGS (its line search picks each step)",
                repr(lr),
                "drop --lr, or use --optimizer adam",
            )
        )
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(message("lr", "be a finite number > 0", repr(lr)))
    start = image.detach().clamp(0, 1)  # (1, C, H, W)
    loop = _Loop(objective, steps, progress, trace_steps)
    if optimizer == "lbfgs":
        final = _lbfgsb(loop, start, steps)
    else:
        final = _adam(loop, start, steps, ADAM_LR if lr is None else lr)
    loop.result.image = final[0]  # (C, H, W)
    return loop.result


def stylize(
    content: torch.Tensor,
    style: torch.Tensor,
    network: FeatureNetwork,
    *,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    layer_weights: Sequence[float] | None = None,
    content_weight: float = 1.0,
    style_weight: float = 1e6,
    steps: int = 300,
    optimizer: str = "lbfgs",
    init: str = "content",
    lr: float | None = None,
    seed: int = 0,
    progress: Callable[[StyleProgress], None] | None = None,
    trace_steps: Sequence[int] = (),
) -> StyleResult:
    """Render ``content`` in the style of ``style`` (Gatys et al.): optimise G from ``init``.

    Args:
        content, style: images in [0, 1] with the network's channels (any two sizes; G has the
            content image's size).
        network: the feature network (:class:`~pixelwise.style.features.VGG19Features` or
            :class:`~pixelwise.style.features.ModelFeatures`), on the images' device.
        content_layer, style_layers: layer names; None: the network's defaults.
        layer_weights: w_l per style layer; None: 1/L each.
        content_weight, style_weight: α and β (see :mod:`pixelwise.style.losses` for how they
            map to the paper's and to the PyTorch examples').
        steps: optimiser steps; optimizer: ``"lbfgs"`` (L-BFGS-B) or ``"adam"``.
        lr: Adam's step size in pixel units of [0, 1] (default 0.02); not for L-BFGS.
        init: ``"content"`` or ``"noise"``; seed: the seed of everything random.
        progress: called with a :class:`StyleProgress` at the start and after every step.
        trace_steps: the steps whose image to keep (0 = the start).

    Shape:
        content: (C, H, W); style: (C, H_S, W_S); returns a result whose image is (C, H, W).
    """
    for name, value in (("content_weight", content_weight), ("style_weight", style_weight)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(message(name, "be a finite number >= 0", repr(value)))
    layers = resolve_layers(network, content_layer, style_layers, layer_weights)
    for image, what in ((content, "content image"), (style, "style image")):
        _check_image(image, network.in_channels, what)
        check_image_size(
            network, layers.all if what == "content image" else layers.style, image, what
        )
    objective = StyleObjective(
        network, layers, content, style, content_weight=content_weight, style_weight=style_weight
    )
    start = initial_image(content, init, seed)  # (1, C, H, W)
    return optimise(
        objective,
        start,
        steps=steps,
        optimizer=optimizer,
        lr=lr,
        progress=progress,
        trace_steps=trace_steps,
    )
