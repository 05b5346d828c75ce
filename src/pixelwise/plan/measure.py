"""Measure candidate configurations on this machine: a few training iterations each.

Each candidate trains on random tensors of its crop and batch size (Adam, cross entropy, as
the run will) for about ``seconds`` after one warm-up iteration, and predicts one image of the
data's median size without gradients; the figures are a :class:`~pixelwise.plan.planner.Speed`.
Running out of memory (CUDA) marks the candidate as not fitting instead of failing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pixelwise.models import create_model
from pixelwise.plan.planner import Candidate, Speed


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_seconds(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor, seconds: float
) -> float:
    """Mean seconds per training iteration over about ``seconds`` (after one warm-up)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times: list[float] = []
    while len(times) < 2 or (sum(times[1:]) < seconds and len(times) < 50):
        start = time.perf_counter()
        with _autocast(images.device):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(images.device)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / len(times[1:])


def _eval_speed(model: nn.Module, image: torch.Tensor) -> float:
    """Pixels per second of one forward pass (no gradients), after a warm-up."""
    model.eval()
    with torch.no_grad(), _autocast(image.device):
        model(image)
        _sync(image.device)
        start = time.perf_counter()
        model(image)
        _sync(image.device)
    return image.shape[-2] * image.shape[-1] / max(time.perf_counter() - start, 1e-9)


def measure(
    candidate: Candidate,
    *,
    channels: int,
    num_classes: int,
    eval_size: tuple[int, int],
    device: str | torch.device = "cpu",
    seconds: float = 3.0,
) -> Speed:
    """The :class:`Speed` of one candidate on ``device``.

    Args:
        candidate: What to build and at which crop and batch size.
        channels, num_classes: Of the data.
        eval_size: (H, W) of a validation image (the median size).
        seconds: Training time to measure for, after the warm-up iteration.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    side = candidate.crop or min(eval_size)
    try:
        model = create_model(
            candidate.model, num_classes=num_classes, in_channels=channels, **candidate.options
        ).to(device)
        shape = (candidate.batch, channels, side, side)
        images = torch.rand(shape, generator=generator).to(device)
        target = torch.randint(0, num_classes, (candidate.batch, side, side), generator=generator)
        step = _step_seconds(model, images, target.to(device), seconds)
        image = torch.rand((1, channels, *eval_size), generator=generator).to(device)
        return Speed(step, _eval_speed(model, image))
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Speed(float("inf"), 0.0, fits=False)


def measure_all(
    options: Sequence[Candidate],
    *,
    progress: Callable[[Candidate, Speed], None] | None = None,
    **kwargs: object,
) -> dict[str, Speed]:
    """:func:`measure` of each candidate, by label; ``progress(candidate, speed)`` after each."""
    speeds = {}
    for candidate in options:
        speeds[candidate.label] = measure(candidate, **kwargs)
        if progress is not None:
            progress(candidate, speeds[candidate.label])
    return speeds
