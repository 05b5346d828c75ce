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


def _bakeoff_table(report: dict) -> list[str]:
    """One row per model: mean IoU, boundary F1, speed, size, time; then IoU per class."""
    from pixelwise.cli._format import score

    entries = report["models"]
    names = list(next(iter(entries.values()))["class_iou"])
    width = max(len(m) for m in entries)
    head = (
        f"{'model'.ljust(width)}  mean IoU  boundary F1  images/s  parameters  minutes  iterations"
    )
    lines = [head]
    for model, e in entries.items():
        lines.append(
            f"{model.ljust(width)}  {score(e['mean_iou']):>8}  {score(e['boundary_f1']):>11}  "
            f"{e['images_per_second'] or 0:8.2f}  {e['parameters']:>10,}  {e['minutes']:7.2f}  "
            f"{e['iterations']:>10,}"
        )
    short = [n[:8] for n in names]
    lines.append("IoU per class: " + "  ".join(f"{n:>8}" for n in short))
    for model, e in entries.items():
        values = "  ".join(f"{score(e['class_iou'][n]):>8}" for n in names)
        lines.append(f"{model.ljust(14)} {values}")
    return lines


def _check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise ValueError(message("--jobs", "be >= 1", jobs))
    return jobs


def _check_new_folder(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            message(f"--out {out}", "be a new or empty folder", "an existing one", "choose another")
        )
    return out


def cmd_bakeoff(args: argparse.Namespace) -> int:
    from pixelwise.plan.bakeoff import DEFAULT_MODELS, bakeoff, check_models

    names = DEFAULT_MODELS if args.models is None else args.models.split(",")
    out = Path(args.out)
    problems = []  # every bad option said at once, in one line
    checks = {
        "models": lambda: check_models([m.strip() for m in names if m.strip()]),
        "minutes": lambda: _check_minutes(args.minutes),
        "jobs": lambda: _check_jobs(args.jobs),
        "out": lambda: _check_new_folder(out),
    }
    checked = {}
    for key, check in checks.items():
        try:
            checked[key] = check()
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("; ".join(problems))
    models, minutes = checked["models"], checked["minutes"]
    report = bakeoff(
        args.data,
        minutes,
        out,
        models=models,
        jobs=args.jobs,
        device=args.device,
        overrides=args.set or (),
    )
    for line in _bakeoff_table(report):
        print(line)
    print(f"wrote {out / 'bakeoff.json'} and {out / 'curves.png'}")
    return 0


def _add_bakeoff(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bakeoff", help="plan, train and score several models on one data folder and budget"
    )
    p.add_argument("data", help="the data folder")
    p.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help=f"training budget per model (default {DEFAULT_MINUTES:g})",
    )
    p.add_argument(
        "--models",
        help="comma-separated registered models (default: one of each family that trains on a "
        "CPU: unet, segnet_basic, deeplabv3_small, fcn8s)",
    )
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, cores shared out")
    p.add_argument("--out", default="bakeoff", help="a new folder for the results (bakeoff)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override every plan"
    )
    p.set_defaults(func=cmd_bakeoff)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``plan`` and ``bakeoff``."""
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
    _add_bakeoff(sub)
