"""Benchmark: the planned recipe against the shipped config on nuclei or CamVid, same run.

``pixelwise plan DATA --minutes M`` chooses a run config on this machine (measuring with the
threads each training will have); the plan and the shipped config then train side by side
(``--jobs 2``) or one after the other, on the shipped config's split (its ``val_fraction``,
``shuffle_split``, ``seed`` and ``manifest`` are given to the plan, so both validate on the
same images; on nuclei the plan learns the shipped config's two classes, not the
three-class target it picks for touching objects), and each run's checkpoints at a quarter,
half and all of the budget are scored on that validation split with
:func:`pixelwise.inference.evaluate` (pixel accuracy, class accuracy, mean IoU, boundary F1).
The last row gives each score's ratio, planned over shipped.

    .venv/bin/python benchmarks/planned.py nuclei --minutes 15 --jobs 2
    .venv/bin/python benchmarks/planned.py camvid --minutes 15 --jobs 2

Writes ``OUT/planned_<set>.json``, ``OUT/plan.toml`` and the run folders under ``OUT/runs/``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _runs
from pixelwise import load_model
from pixelwise.config import load_config
from pixelwise.inference import evaluate_dataset, evaluation_dataset

SHIPPED = {
    "nuclei": _runs.ROOT / "configs" / "nuclei_weightmap.toml",
    "camvid": _runs.ROOT / "configs" / "camvid.toml",
}
SPLIT_KEYS = ("val_fraction", "shuffle_split", "seed", "manifest")
# The task the shipped config solves: on the nuclei instance labels it learns background /
# nucleus, where the plan would pick the three-class target for touching objects (scored as
# objects in benchmarks/nuclei_instances.py). Both recipes here learn and are scored on the
# same two classes.
TASK = {"nuclei": ['data.instance_target="semantic"'], "camvid": []}
SMOKE = [  # the shipped config's model is replaced by a tiny U-Net; the plan's made tiny
    _runs.TINY_UNET,
    "model.name=unet",
    "train.val_every=1",
    "train.overlays=1",
    "train.batch_size=2",
]
METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "boundary_f1")


def shipped_split(config: object) -> list[str]:
    """``--set`` values that give the plan the shipped config's validation split."""
    data = load_config(config).data
    values = {key: getattr(data, key) for key in SPLIT_KEYS if getattr(data, key) is not None}
    if data.layout == "camvid":
        return []  # the layout's own val/ split
    spelled = {k: (repr(v).lower() if isinstance(v, bool) else repr(v)) for k, v in values.items()}
    return [f"data.{k}={v}".replace("'", '"') for k, v in spelled.items()]


def score(path: object) -> dict[str, float]:
    model = load_model(path)
    dataset = evaluation_dataset(model.checkpoint.config["data"], "val")
    model.ignore_index = dataset.ignore_index
    summary = evaluate_dataset(model, dataset)
    return {key: float(summary[key]) for key in METRICS}


def main(argv: Sequence[str] | None = None) -> int:
    named = _runs.parse_named_args("planned", list(SHIPPED), __doc__.splitlines()[0], argv)
    if named is None:
        return 2
    name, args = named
    planned, plan_seconds = _runs.plan(args) if not args.rescore else (args.out / "plan.toml", 0.0)
    budget = _runs.budget_overrides(args.minutes)
    smoke = SMOKE if args.smoke else []
    smoke_planned = [_runs.tiny_model(planned), *SMOKE[2:]] if args.smoke else []
    runs = {
        "shipped": budget + smoke + args.set,
        "planned": budget + shipped_split(SHIPPED[name]) + TASK[name] + smoke_planned + args.set,
    }
    configs = {"shipped": SHIPPED[name], "planned": planned}
    trained = _runs.runs_for(args, f"planned_{name}", runs, configs)
    results = {}
    for label, run in trained.items():
        results[label] = {}
        for mark, (path, iteration) in run.checkpoints(args.minutes).items():
            results[label][mark] = {"iteration": iteration, **score(path)}
    report = {
        **_runs.report_header(f"planned_{name}", args, argv, configs, runs),
        "plan_seconds": round(plan_seconds, 1),
        "plan": planned.read_text(),
        "train": {label: run.summary() for label, run in trained.items()},
        "results": results,
    }
    path = _runs.write_json(args.out / f"planned_{name}.json", report)
    print(f"{name}, {args.minutes:g} min each, jobs {args.jobs}")
    rows = [
        [label, mark, r["iteration"], *(100 * r[k] for k in METRICS)]
        for label in trained
        for mark, r in results[label].items()
    ]
    final = {label: list(results[label].values())[-1] for label in trained}
    rows.append(
        [
            "planned / shipped",
            "end",
            None,
            *(final["planned"][k] / final["shipped"][k] for k in METRICS),
        ]
    )
    _runs.print_table(["recipe", "checkpoint", "iteration", *METRICS], rows)
    print(f"plan took {plan_seconds:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
