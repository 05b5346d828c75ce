"""Measure candidate configurations on this machine: a few training iterations each.

Each candidate trains on random tensors of its crop and batch size (Adam, cross entropy, as
the run will), the candidates taking turns an iteration at a time after one warm-up
iteration each, and predicts one image of the data's median size without gradients; the
figures (median seconds per iteration) are a :class:`~pixelwise.plan.planner.Speed`.
Running out of memory (CUDA) marks the candidate as not fitting instead of failing.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pixelwise.models import create_model
from pixelwise.models.encoders import pretrained_available
from pixelwise.plan.fingerprint import Fingerprint
from pixelwise.plan.planner import (
    Candidate,
    Plan,
    Speed,
    candidates,
    choose,
    input_scale_for,
    scaled_size,
)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Trial:
    """One candidate built on the device with its optimizer and a random batch."""

    def __init__(self, candidate: Candidate, channels: int, num_classes: int, side: int, device):
        generator = torch.Generator().manual_seed(0)
        self.model = create_model(
            candidate.model, num_classes=num_classes, in_channels=channels, **candidate.options
        ).to(device)
        shape = (candidate.batch, channels, side, side)
        self.images = torch.rand(shape, generator=generator).to(device)
        target = torch.randint(0, num_classes, (candidate.batch, side, side), generator=generator)
        self.target = target.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.times: list[float] = []

    def step(self) -> None:
        """One training iteration, timed."""
        self.model.train()
        start = time.perf_counter()
        with _autocast(self.images.device):
            logits = self.model(self.images)
        loss = nn.functional.cross_entropy(logits.float(), self.target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        _sync(self.images.device)
        self.times.append(time.perf_counter() - start)


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


def measure_all(
    options: Sequence[Candidate],
    *,
    channels: int,
    num_classes: int,
    eval_size: tuple[int, int],
    device: str | torch.device = "cpu",
    seconds: float = 2.0,
    progress: Callable[[Candidate, Speed], None] | None = None,
) -> dict[str, Speed]:
    """The :class:`Speed` of each candidate on ``device``, by label.

    The candidates take turns, one training iteration each (after a warm-up iteration), for
    about ``seconds`` per candidate, and each is timed by the median of its iterations: a
    machine that is busy now and then slows every candidate alike, so the comparison holds.

    Args:
        options: What to build and at which crop and batch size.
        channels, num_classes: Of the data.
        eval_size: (H, W) of a validation image (the median size).
        progress: Called ``progress(candidate, speed)`` for each, at the end.
    """
    device = torch.device(device)
    trials: dict[str, _Trial | None] = {}
    for candidate in options:
        try:
            side = candidate.crop or min(eval_size)
            trials[candidate.label] = _Trial(candidate, channels, num_classes, side, device)
            trials[candidate.label].step()  # warm-up, not counted
            trials[candidate.label].times.clear()
        except torch.OutOfMemoryError:
            trials[candidate.label] = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    alive = [t for t in trials.values() if t is not None]
    start = time.perf_counter()
    rounds = 0
    while alive and (rounds < 2 or time.perf_counter() - start < seconds * len(alive)):
        for trial in alive:
            trial.step()
        rounds += 1
        if rounds >= 50:
            break
    speeds = {}
    generator = torch.Generator().manual_seed(0)
    for candidate in options:
        trial = trials[candidate.label]
        if trial is None:
            speeds[candidate.label] = Speed(float("inf"), 0.0, fits=False)
        else:
            image = torch.rand((1, channels, *eval_size), generator=generator).to(device)
            step = statistics.median(trial.times)
            speeds[candidate.label] = Speed(step, _eval_speed(trial.model, image))
        if progress is not None:
            progress(candidate, speeds[candidate.label])
    return speeds


def plan_on_device(
    fp: Fingerprint,
    minutes: float,
    *,
    device: torch.device,
    model: str = "unet",
    seconds: float = 2.0,
    progress: Callable[[Candidate, Speed], None] | None = None,
) -> Plan:
    """The plan for ``fp`` and ``minutes``: ``model``'s candidates (at the scale the budget
    allows) measured on ``device``, then :func:`~pixelwise.plan.planner.choose`.

    Raises:
        ValueError: no mask encoding was found or declared (one line saying why).
    """
    if fp.proposal.encoding is None:
        raise ValueError(f"the mask encoding of {fp.root} cannot be told: {fp.proposal.reason}")
    scale = input_scale_for(fp, minutes)
    pretrained = pretrained_available()
    options = candidates(fp, device.type, model=model, scale=scale, pretrained=pretrained)
    speeds = measure_all(
        options,
        channels=fp.channels,
        num_classes=fp.num_classes,
        eval_size=scaled_size(fp.median_size, scale),
        device=device,
        seconds=seconds,
        progress=progress,
    )
    return choose(fp, speeds, minutes, device=device.type, options=options)
