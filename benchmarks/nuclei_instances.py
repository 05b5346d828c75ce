"""Benchmark: from pixels to objects on touching nuclei — four recipes, two post-processings.

Trains one U-Net (``configs/nuclei_weightmap.toml``) three times with the same seed, data and
time budget: plain cross entropy on background / object, cross entropy weighted by the U-Net
weight map (today's shipped pipeline), and cross entropy on background / interior / boundary
(``data.instance_target = "three_class"``); and a fourth run, ``planned``, trains what
``pixelwise train DATA`` trains — the plan ``pixelwise plan`` writes for the folder and budget
on this machine (it picks the target from how many objects touch) — on the same validation
split as the others, and ``planned_weight_map``, ``planned_scale``, ``planned_scale_weight_map``
the same plan with the U-Net weight map, random rescaling (0.6–1.6), or both, and
``planned_colour`` / ``planned_colour_invert`` with random colour (``data.colour_jitter``),
and inversion of half the images (``data.invert``), ``planned_class_weights`` with
median-frequency class weights, ``planned_full_resolution`` with the Lite0 U-Net's
full-resolution skip (``model.options.full_resolution_skip``: the image's own features joined
at stride 1), ``planned_full_resolution_thin`` that and a 1-pixel boundary, ``planned_core``
with the core target (``data.instance_target = "core"``: a fourth class, each object's inner
half, seeds the watershed), ``planned_core_full_resolution`` that and the skip,
``planned_ce`` with plain cross entropy (the plan trains cross entropy plus soft Dice) and
``planned_encoder_lr`` with the encoder at a tenth of the learning rate, ``planned_elastic``
with the U-Net paper's elastic deformation (10 px), ``planned_thin`` with a 1-pixel
boundary, ``planned_ema`` with a moving average of the weights (``train.ema = 0.99``) and
``planned_ema_elastic`` / ``planned_core_ema`` that and the elastic deformation / the core
target, ``planned_lr2`` and ``planned_lr05`` with twice and half the learning rate,
``planned_distance`` with the distance head (``data.distance_target``: the watershed floods
and seeds from the predicted distance map).
``--arms`` picks some of them (default all). Each run's last checkpoint is post-processed two ways, by connected
components and by marker-controlled watershed (seeded from the interior class, or from
distance peaks or h-maxima; and the watershed again without the h-maxima seeds, as it was
searched before them), each with its parameters chosen on the validation split as training does
(:func:`pixelwise.instances.choose_parameters`), and scored on that split with
:func:`pixelwise.inference.instances.evaluate_instances`: the Data Science Bowl score, F1 at
IoU 0.5, merges, splits and the touching pairs kept apart. The same split chooses and scores,
as the product chooses on its validation split: the scores are of the best parameters found,
which the table says. A third row, ``recorded``, is what ``pixelwise evaluate --instances``
reports for the checkpoint: the choice training recorded (both methods, and test-time
flips and rotations where they paid), and ``recorded_best`` the same for ``best.pt``, the
checkpoint of the best validation score, which users predict with.

    .venv/bin/python benchmarks/nuclei_instances.py --minutes 30 --jobs 3
    .venv/bin/python benchmarks/nuclei_instances.py --minutes 30 --jobs 3 \
        --arms weight_map,three_class,planned

Writes ``OUT/nuclei_instances.json``, ``OUT/hardest.png`` (the image the best pipeline scores
worst: the image, the true nuclei and each pipeline's objects with their contours) and the run
folders under ``OUT/runs/``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

import _runs
import planned
from pixelwise import load_model
from pixelwise.engine.instances import validation_probabilities
from pixelwise.inference import evaluation_dataset
from pixelwise.inference.instances import evaluate_instances, instance_labels
from pixelwise.inference.predict import (
    contour_overlay,
    instance_plan,
    objects_of,
    predict_outputs,
)
from pixelwise.instances import GRID, choose_parameters

NAME = "nuclei_instances"
CONFIG = _runs.ROOT / "configs" / "nuclei_weightmap.toml"
TARGETS = {
    "cross_entropy": ["loss.name=ce"],
    "weight_map": [],
    "three_class": ["loss.name=ce", "data.instance_target=three_class", "data.weights=false"],
}
SMOKE = [
    _runs.TINY_UNET,
    "data.crop_size=64",
    "data.elastic_std=0.0",
    "train.val_every=1",
    "train.overlays=0",
]
# The planned run with one change each (the same plan, split and budget): the U-Net weight
# map on the three-class target, random rescaling of the images, or both; random colour
# (brightness, contrast, saturation, hue at strength 0.4), with or without inverting half the
# images (dark objects on bright ground and bright on dark: mixed stains and fluorescence);
# median-frequency class weights, which weigh the thin boundary class up; the image's own
# features joined at full resolution (the encoder's first are at stride 2), alone and with a
# 1-pixel boundary, which leaves more interior to seed small objects; the core target, whose
# seeds (each object's inner half) lie apart however faint the line where objects meet;
# plain cross entropy, what the plan trained before it chose cross entropy plus soft Dice for
# the three-class and core targets; the pretrained encoder at a tenth of the decoder's
# learning rate, which keeps more of what ImageNet taught it on a few dozen training images;
# the U-Net paper's elastic deformation (10 px), which the plan leaves off to save iterations,
# where more iterations no longer raise the score; a 1-pixel boundary (the plan's is 2 here);
# a moving average of the weights over about the last 100 iterations (train.ema), alone and
# with the elastic deformation or the core target; twice and half the learning rate (Adam at
# 2e-3 and 5e-4; the plan's 1e-3 is Adam's usual rate, not measured on this data).
PLANNED_VARIANTS = {
    "planned": [],
    "planned_colour": ["data.colour_jitter=0.4"],
    "planned_colour_invert": ["data.colour_jitter=0.4", "data.invert=0.5"],
    "planned_class_weights": ["loss.class_weights=median_frequency"],
    "planned_weight_map": ["loss.name=weighted_ce", "data.weights=true"],
    "planned_scale": ["data.scale=[0.6, 1.6]"],
    "planned_full_resolution": [_runs.FULL_RESOLUTION_SKIP],
    "planned_full_resolution_thin": [
        _runs.FULL_RESOLUTION_SKIP,
        "data.boundary_width=1",
    ],
    "planned_core": ["data.instance_target=core"],
    "planned_core_full_resolution": [
        "data.instance_target=core",
        _runs.FULL_RESOLUTION_SKIP,
    ],
    "planned_ce": ["loss.name=ce"],
    "planned_encoder_lr": ["optim.encoder_lr_scale=0.1"],
    "planned_elastic": ["data.elastic_std=10.0"],
    "planned_thin": ["data.boundary_width=1"],
    "planned_ema": ["train.ema=0.99"],
    "planned_ema_elastic": ["train.ema=0.99", "data.elastic_std=10.0"],
    "planned_core_ema": ["data.instance_target=core", "train.ema=0.99"],
    "planned_lr2": ["optim.lr=0.002"],
    "planned_lr05": ["optim.lr=0.0005"],
    "planned_distance": ["data.distance_target=true"],
    "planned_scale_weight_map": [
        "loss.name=weighted_ce",
        "data.weights=true",
        "data.scale=[0.6, 1.6]",
    ],
}
ARMS = (*TARGETS, *PLANNED_VARIANTS)


def planned_smoke(plan: object) -> list[str]:
    """--smoke for the planned run: a tiny version of whichever model the plan chose."""
    return [_runs.tiny_model(plan), *SMOKE[1:], "train.batch_size=2"]


KEYS = ("dsb_score", "f1", "merges", "splits", "touching_kept_apart")
# The post-processings each run is scored by: the grid restricted to one method, and the
# watershed searched without the h-maxima seeds (what it searched before they were added).
PIPELINES = {
    "components": {"method": ["components"]},
    "watershed": {"method": ["watershed"]},
    "watershed_before_hmaxima": {"method": ["watershed"], "seeds": ["regions", "peaks"]},
}
SMOKE_GRID = {"threshold": [0.5], "seed_threshold": [0.7], "min_size": [16]}  # one candidate


def score_pipelines(run_dir: object, smoke: bool) -> dict[str, dict]:
    """Components and watershed for one run: parameters chosen on, and scores of, the
    validation split."""
    path = run_dir / "last.pt"
    segmenter = load_model(path)
    dataset = evaluation_dataset(segmenter.checkpoint.config["data"], "val")
    probabilities, targets, interior = validation_probabilities(path, dataset)
    results = {}
    for pipeline, restriction in PIPELINES.items():
        if pipeline == "watershed_before_hmaxima" and interior is None:
            continue  # no interior map: the seeds are the foreground's distance peaks alone
        grid = {**(SMOKE_GRID if smoke else GRID), **restriction}
        chosen, _ = choose_parameters(probabilities, targets, interior_class=interior, grid=grid)
        settings = {**chosen.to_dict(), "interior_class": interior, "score": None}
        results[pipeline] = evaluate_instances(segmenter, dataset, settings)
    # What `pixelwise evaluate --instances` reports: the checkpoint's own choice at the end of
    # training (its grid, and test-time augmentation where it paid on this split).
    results["recorded"] = evaluate_instances(segmenter, dataset)
    # The same for best.pt (the best validation score of train.metric), the checkpoint
    # `pixelwise predict` and `evaluate` are shown with.
    results["recorded_best"] = evaluate_instances(load_model(run_dir / "best.pt"), dataset)
    return results


def hardest_overlay(runs: dict, results: dict, out: object) -> str:
    """Draw the validation image the best pipeline scores worst; returns its name."""
    best = max(
        ((label, method) for label in results for method in results[label]),
        key=lambda key: results[key[0]][key[1]]["dsb_score"],
    )
    per_image = results[best[0]][best[1]]["per_image"]
    worst = min(range(len(per_image)), key=lambda i: per_image[i]["dsb_score"])
    panels = []
    for label, run in runs.items():
        segmenter = load_model(run.run_dir / "last.pt")
        dataset = evaluation_dataset(segmenter.checkpoint.config["data"], "val")
        image = dataset[worst]["image"]
        if not panels:
            panels.append(contour_overlay(image, np.zeros(image.shape[-2:], np.int32)))
            panels.append(contour_overlay(image, instance_labels(dataset, worst)))
        for method in results[label]:
            settings, tta = instance_plan(results[label][method]["settings"])
            with torch.no_grad():
                logits, distance = predict_outputs(segmenter, image, tile=512, tta=tta)
            panels.append(contour_overlay(image, objects_of(logits, settings, distance)))
    Image.fromarray(np.concatenate(panels, axis=1)).save(out / "hardest.png")
    return per_image[worst]["name"]


def main(argv: Sequence[str] | None = None) -> int:
    arms, argv = _runs.split_arms(argv, ARMS)
    args = _runs.parse_args(NAME, "nuclei", __doc__.splitlines()[0], argv)
    args.out.mkdir(parents=True, exist_ok=True)
    common = _runs.common_overrides(args, SMOKE)
    runs_overrides = {label: [*common, *TARGETS[label]] for label in arms if label in TARGETS}
    configs = dict.fromkeys(runs_overrides, CONFIG)
    plan_seconds = None
    variants = [label for label in arms if label in PLANNED_VARIANTS]
    if variants:
        plan, plan_seconds = _runs.plan(args) if not args.rescore else (args.out / "plan.toml", 0.0)
        smoke = planned_smoke(plan) if args.smoke else []
        split = planned.shipped_split(CONFIG)  # scored on the same validation images
        for label in variants:
            runs_overrides[label] = [
                *_runs.budget_overrides(args.minutes),
                *split,
                *PLANNED_VARIANTS[label],
                *smoke,
                *args.set,
            ]
            configs[label] = plan
    runs = _runs.runs_for(args, NAME, runs_overrides, configs)
    results = {label: score_pipelines(run.run_dir, args.smoke) for label, run in runs.items()}
    hardest = hardest_overlay(runs, results, args.out)
    report = {
        **_runs.report_header(NAME, args, argv, CONFIG, runs_overrides),
        "arms": arms,
        "plan": (args.out / "plan.toml").read_text() if variants else None,
        "plan_seconds": plan_seconds,
        "train": {label: run.summary() for label, run in runs.items()},
        "results": results,
        "hardest": hardest,
    }
    path = _runs.write_json(args.out / f"{NAME}.json", report)
    print(f"nuclei, {args.minutes:g} min each, jobs {args.jobs}; hardest image {hardest}")
    rows = [
        [label, method, *(results[label][method][key] for key in KEYS)]
        for label in results
        for method in results[label]
    ]
    _runs.print_table(["target", "objects by", *KEYS], rows)
    print(f"wrote {path} and {args.out / 'hardest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
