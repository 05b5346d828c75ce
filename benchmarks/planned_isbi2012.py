"""Benchmark: the planned recipe against the shipped one on ISBI 2012, same budget, same run.

``pixelwise plan DATA --minutes M`` chooses a run config on this machine (measuring with the
threads each training will have); then the plan and the shipped
``configs/isbi2012_bench.toml`` train side by side (``--jobs 2``: one process each, half the
cores each) or one after the other (``--jobs 1``), on slices 00–19 with 20–24 validating
(``data.shuffle_split=false`` with ``val_fraction`` 0.2: the benchmark's split convention),
and both are scored as ``benchmarks/isbi2012.py`` scores (overlap-tile prediction with the
eight flips and rotations; pixel error, Rand error, minimal Rand error, V_info) at a quarter,
half and all of the budget. The table gives each score's ratio at the end of the budget,
the first arm over the second (shipped over planned by default).
``--arms`` picks the runs (default ``shipped,planned``); ``planned_full_resolution`` is the
plan with the encoder U-Net's full-resolution skip (``model.options.full_resolution_skip``:
the image's own features joined at stride 1, for membranes a pixel or two wide),
``planned_ema`` the plan with a moving average of the weights (``train.ema = 0.99``) and
``planned_elastic`` with the paper's elastic deformation (10 px), ``planned_lr2`` with
twice the plan's learning rate; ``lean`` is
the shipped config with the lean recipe of the issue that asked for the planner (base width
16, no class weights, no elastic deformation, poly decay over the time budget).

    .venv/bin/python benchmarks/planned_isbi2012.py --minutes 15 --jobs 2
    .venv/bin/python benchmarks/planned_isbi2012.py --minutes 60 --jobs 2 \
        --arms planned,planned_full_resolution

Writes ``OUT/planned_isbi2012.json``, ``OUT/plan.toml`` and the run folders under
``OUT/runs/``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import _runs
import isbi2012

NAME = "planned_isbi2012"
SPLIT = ["data.shuffle_split=false", "data.val_fraction=0.2"]
SMOKE_PLANNED = [  # with the plan's model made tiny (_runs.tiny_model)
    "data.crop_size=64",
    "train.val_every=1",
    "train.overlays=1",
]


# The plan with one change (the same split and budget).
PLANNED_VARIANTS = {
    "planned": [],
    "planned_full_resolution": [_runs.FULL_RESOLUTION_SKIP],
    "planned_ema": ["train.ema=0.99"],
    "planned_elastic": ["data.elastic_std=10.0"],
    "planned_lr2": ["optim.lr=0.002"],
}
# The shipped config with the lean recipe: what the plan must at least match.
LEAN = [
    "model.options.base_width=16",
    "loss.class_weights=none",
    "data.elastic_std=0.0",
    "schedule.name=poly",
    "schedule.power=0.9",
    "schedule.over=time",
]
SHIPPED = {"shipped": [], "lean": LEAN}
ARMS = (*SHIPPED, *PLANNED_VARIANTS)


def smoke_planned(plan: object) -> list[str]:
    return [_runs.tiny_model(plan), *SMOKE_PLANNED]


def main(argv: Sequence[str] | None = None) -> int:
    arms, argv = _runs.split_arms(argv, ARMS, default=("shipped", "planned"))
    args = _runs.parse_args(NAME, "isbi2012", __doc__.splitlines()[0], argv)
    args.out.mkdir(parents=True, exist_ok=True)
    planned, plan_seconds = _runs.plan(args) if not args.rescore else (args.out / "plan.toml", 0.0)
    budget = _runs.budget_overrides(args.minutes)
    smoke = smoke_planned(planned) if args.smoke else []
    shipped_smoke = isbi2012.SMOKE if args.smoke else []
    runs = {
        label: budget + SHIPPED[label] + shipped_smoke + args.set
        if label in SHIPPED
        else budget + SPLIT + PLANNED_VARIANTS[label] + smoke + args.set
        for label in arms
    }
    configs = {label: isbi2012.CONFIG if label in SHIPPED else planned for label in runs}
    trained = _runs.runs_for(args, NAME, runs, configs)
    slices = isbi2012.SMOKE_SLICES if args.smoke else None
    results = {}
    for label, run in trained.items():
        with contextlib.redirect_stdout(sys.stderr):
            names, results[label] = isbi2012.evaluate(run, args.minutes, args.out / label, slices)
    report = {
        **_runs.report_header(NAME, args, argv, configs, runs),
        "plan_seconds": round(plan_seconds, 1),
        "plan": planned.read_text(),
        "paper": isbi2012.PAPER,
        "goal": isbi2012.GOAL,
        "train": {label: run.summary() for label, run in trained.items()},
        "validation_samples": names,
        "results": results,
    }
    path = _runs.write_json(args.out / f"{NAME}.json", report)
    print(
        f"ISBI 2012, {_runs.describe_samples(names)}, {args.minutes:g} min each, jobs {args.jobs}"
    )
    keys = isbi2012.TABLE_KEYS
    rows = []
    for label in trained:
        for mark, scores in results[label].items():
            rows.append([label, mark, scores["iteration"], *(scores[k] for k in keys)])
    final = {label: list(results[label].values())[-1] for label in trained}
    # Each score's ratio at the end of the budget: the first arm over the second.
    first, second = [*trained, None][:2]
    if second is not None:
        ratio = [final[first][k] / final[second][k] if final[second][k] else None for k in keys]
        rows.append([f"{first} / {second}", "end", None, *ratio])
    _runs.print_table(["recipe", "checkpoint", "iteration", *keys], rows)
    print(f"plan took {plan_seconds:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
