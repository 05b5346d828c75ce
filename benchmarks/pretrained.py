"""Benchmark: an ImageNet-pretrained encoder against the same network from scratch, same plan.

``pixelwise plan DATA --minutes M`` plans the run on this machine (with the threads each
training will have); both runs then train that plan with a U-Net over EfficientNet-Lite0
(``model.options.encoder``), one with the packaged ImageNet weights (``encoder_weights =
"imagenet"``, normalised as the encoder expects) and one from random initialisation (the
data's own normalisation), side by side (``--jobs 2``) on the benchmark split of the data set
(CamVid's val/, ISBI's slices 20–24, nuclei's shipped split). Each run's checkpoints at a
quarter, half and all of the budget are scored on that split with
:func:`pixelwise.inference.evaluate` (pixel accuracy, class accuracy, mean IoU, boundary F1),
and ``curves.png`` draws each run's validation mean IoU against training minutes.

    .venv/bin/python benchmarks/pretrained.py camvid --minutes 60 --jobs 2
    .venv/bin/python benchmarks/pretrained.py nuclei --minutes 30 --jobs 2
    .venv/bin/python benchmarks/pretrained.py isbi2012 --minutes 30 --jobs 2

Needs ``pixelwise[pretrained]``. Writes ``OUT/pretrained_<set>.json``, ``OUT/plan.toml``,
``OUT/curves.png`` and the run folders under ``OUT/runs/``.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import _runs
import planned
from pixelwise._files import write_text_atomic
from pixelwise._toml import dump_toml as toml_text
from pixelwise.plan.bakeoff import score_run
from pixelwise.report.plots import plot_series

# The split each data set is reported on (data/README.md), as --set values for the plan.
SPLITS = {
    "camvid": [],  # the layout's own val/
    "isbi2012": ["data.shuffle_split=false", "data.val_fraction=0.2"],  # slices 20-24
    "nuclei": planned.shipped_split(planned.SHIPPED["nuclei"]),
}
ENCODER = {"encoder": "efficientnet_lite0"}
SMOKE = [
    "data.crop_size=64",
    "train.batch_size=2",
    "train.val_every=1",
    "train.overlays=1",
]


def variant(plan: Path, weights: str | None, *, small: bool = False) -> Path:
    """The plan with ``[model]`` a U-Net over EfficientNet-Lite0 with ``weights`` (None:
    random initialisation), written beside it as ``plan_<imagenet|scratch>.toml``."""
    table = tomllib.loads(plan.read_text())
    options = {**ENCODER, **({"encoder_weights": weights} if weights else {})}
    if small:
        options["base_width"] = 4
    table["model"] = {"name": "unet", "options": options}
    path = plan.with_name(f"plan_{weights or 'scratch'}.toml")
    write_text_atomic(path, toml_text(table))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    named = _runs.parse_named_args("pretrained", list(SPLITS), __doc__.splitlines()[0], argv)
    if named is None:
        return 2
    name, args = named
    plan, plan_seconds = _runs.plan(args) if not args.rescore else (args.out / "plan.toml", 0.0)
    common = _runs.budget_overrides(args.minutes) + SPLITS[name]
    common += (SMOKE if args.smoke else []) + args.set
    runs = {"imagenet": common, "scratch": common}
    configs = {
        label: variant(plan, weights, small=args.smoke)
        for label, weights in (("imagenet", "imagenet"), ("scratch", None))
    }
    trained = _runs.runs_for(args, f"pretrained_{name}", runs, configs)
    results, curves = {}, {}
    for label, run in trained.items():
        results[label] = {}
        for mark, (path, iteration) in run.checkpoints(args.minutes).items():
            results[label][mark] = {"iteration": iteration, **planned.score(path)}
        curve = score_run(run.run_dir)["curve"]
        curves[label] = (curve["minutes"], curve["mean_iou"])
    plot_series(
        curves,
        args.out / "curves.png",
        title=f"{name}: validation mean IoU, {args.minutes:g} min each",
        xlabel="training minutes",
        ylabel="mean IoU",
    )
    report = {
        **_runs.report_header(f"pretrained_{name}", args, argv, configs, runs),
        "plan_seconds": round(plan_seconds, 1),
        "plan": plan.read_text(),
        "train": {label: run.summary() for label, run in trained.items()},
        "results": results,
        "curves": {label: {"minutes": m, "mean_iou": v} for label, (m, v) in curves.items()},
    }
    path = _runs.write_json(args.out / f"pretrained_{name}.json", report)
    print(f"{name}, {args.minutes:g} min each, jobs {args.jobs}")
    keys = planned.METRICS
    rows = [
        [label, mark, r["iteration"], *(100 * r[k] for k in keys)]
        for label in trained
        for mark, r in results[label].items()
    ]
    final = {label: list(results[label].values())[-1] for label in trained}
    ratio = [
        final["imagenet"][k] / final["scratch"][k] if final["scratch"][k] else None for k in keys
    ]
    rows.append(["imagenet / scratch", "end", None, *ratio])
    _runs.print_table(["encoder", "checkpoint", "iteration", *keys], rows)
    print(f"plan took {plan_seconds:.0f} s; wrote {path} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
