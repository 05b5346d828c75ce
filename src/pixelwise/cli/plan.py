"""``pixelwise plan``: a data folder and a time budget in, a commented run config out.

``pixelwise train DATA --minutes M`` runs the same planning (:func:`plan_folder`) and trains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixelwise.cli._format import message

DEFAULT_MINUTES = 15.0


def _check_minutes(minutes: float) -> float:
    if not minutes > 0 or minutes == float("inf"):
        raise ValueError(message("--minutes", "be a positive number of minutes", minutes))
    return float(minutes)


def plan_folder(
    root: str, minutes: float, *, device: str = "auto", folder: Path | None = None
) -> tuple[object, str]:
    """Plan training on ``root`` for ``minutes``: prints what was found and measured, and
    returns (the :class:`~pixelwise.plan.planner.Plan`, its TOML text with ``data.root``
    relative to ``folder``)."""
    from pixelwise.plan import make_plan, plan_toml, summary_lines, table_lines

    minutes = _check_minutes(minutes)
    print(f"planning {minutes:g} minutes of training on {root}: measuring candidates ...")

    def show(candidate: object, speed: object) -> None:
        print(f"  {candidate.label}: {speed.step_seconds:.3f} s per iteration", flush=True)

    found, plan = make_plan(root, minutes, device=device, progress=show)
    for line in (*summary_lines(found), *table_lines(plan)):
        print(line)
    for line in plan.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return plan, plan_toml(plan, found, minutes, folder=folder)


def cmd_plan(args: argparse.Namespace) -> int:
    from pixelwise._files import check_output, write_text_atomic

    out = Path(args.out)
    check_output(out, [args.data], overwrite=args.overwrite, kind="input")
    _, text = plan_folder(args.data, args.minutes, device=args.device, folder=out.parent)
    write_text_atomic(out, text)
    print(f"wrote {out}; train with: pixelwise train {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``plan``."""
    p = sub.add_parser(
        "plan", help="choose a run config for a data folder and a time budget on this machine"
    )
    p.add_argument("data", help="the data folder (images/ + masks/, instances/, CamVid, TIFF)")
    p.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help=f"the training budget (default {DEFAULT_MINUTES:g})",
    )
    p.add_argument("--out", default="plan.toml", help="the run config to write (plan.toml)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=cmd_plan)
