"""Measuring candidates: every one timed, taking turns; out of memory marks one as not fitting."""

from __future__ import annotations

import math

import torch

from pixelwise.plan import measure
from pixelwise.plan.planner import Candidate

TINY = {"depth": 2, "padding": "same", "batch_norm": True}


def test_every_candidate_gets_a_speed_and_takes_turns(monkeypatch):
    options = [Candidate("unet", {**TINY, "base_width": w}, 32, 2) for w in (4, 8)]
    steps: list[int] = []
    real = measure._Trial.step

    def counted(self):
        steps.append(self.model.pixelwise_args["base_width"])
        real(self)

    monkeypatch.setattr(measure._Trial, "step", counted)
    seen = []
    speeds = measure.measure_all(
        options,
        channels=1,
        num_classes=2,
        eval_size=(40, 48),
        seconds=0.01,
        progress=lambda c, s: seen.append(c.label),
    )
    assert list(speeds) == seen == ["unet w4", "unet w8"]
    for speed in speeds.values():
        assert speed.fits and 0 < speed.step_seconds < math.inf and speed.eval_pixels_per_second > 0
    # One warm-up each, then rounds in turn (at least two).
    assert steps[:2] == [4, 8] and steps[2:6] == [4, 8, 4, 8] and len(steps) % 2 == 0


def test_a_candidate_that_runs_out_of_memory_does_not_fit(monkeypatch):
    real = measure._Trial.__init__

    def build(self, candidate, *args):
        if candidate.options["base_width"] == 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        real(self, candidate, *args)

    monkeypatch.setattr(measure._Trial, "__init__", build)
    options = [Candidate("unet", {**TINY, "base_width": w}, 32, 2) for w in (4, 8)]
    speeds = measure.measure_all(
        options, channels=1, num_classes=2, eval_size=(32, 32), seconds=0.01
    )
    assert speeds["unet w4"].fits and not speeds["unet w8"].fits
    assert speeds["unet w8"].step_seconds == math.inf
