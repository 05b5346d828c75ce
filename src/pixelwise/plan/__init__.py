"""Plans: a data folder and a time budget in, a run config for this machine out.

``make_plan(root, minutes)`` fingerprints the folder (:mod:`pixelwise.plan.fingerprint`),
measures a few candidate configurations here (:mod:`pixelwise.plan.measure`) and chooses
(:func:`pixelwise.plan.planner.choose`, a pure function of the three);
:mod:`pixelwise.plan.render` writes the result as TOML with a reason beside each choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pixelwise.plan.fingerprint import Fingerprint, Proposal, detect_layout, fingerprint
from pixelwise.plan.planner import (
    Candidate,
    Plan,
    Speed,
    candidates,
    choose,
)
from pixelwise.plan.render import plan_toml, summary_lines, table_lines

__all__ = [
    "Candidate",
    "Fingerprint",
    "Plan",
    "Proposal",
    "Speed",
    "candidates",
    "choose",
    "detect_layout",
    "fingerprint",
    "make_plan",
    "plan_toml",
    "summary_lines",
    "table_lines",
]


def make_plan(
    root: str | Path,
    minutes: float,
    *,
    device: str = "auto",
    encoding: Mapping | None = None,
    seconds: float = 2.0,
    model: str = "unet",
    progress: Callable[[Candidate, Speed], None] | None = None,
) -> tuple[Fingerprint, Plan]:
    """Fingerprint ``root``, measure the candidates on ``device`` for about ``seconds`` each,
    and choose the run config for ``minutes`` of training.

    Raises:
        ValueError: the folder's layout or mask encoding cannot be told (one line saying what
            was found); pass ``encoding`` to declare it.
    """
    from pixelwise._device import resolve_device
    from pixelwise.plan.measure import plan_on_device

    found = fingerprint(root, encoding)
    where = resolve_device(device)
    plan = plan_on_device(
        found, minutes, device=where, model=model, seconds=seconds, progress=progress
    )
    return found, plan
