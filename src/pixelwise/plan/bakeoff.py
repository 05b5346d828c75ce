"""A bake-off: several models on the same data, split and budget, each planned for itself.

:func:`bakeoff` fingerprints the folder once, plans each model for the budget on this machine
(:func:`plan_models`: the candidates of that model measured, the same split and data rules for
all), trains the plans ``jobs`` at a time (``python -m pixelwise train PLAN`` each, with the
cores shared out), scores each run's ``last.pt`` on the validation split with
:func:`pixelwise.inference.evaluate`, and writes one folder: ``bakeoff.json`` (every figure),
``curves.png`` (validation mean IoU against training minutes, one line per model),
``plans/<model>.toml`` and ``runs/<model>/``.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from pixelwise._checks import did_you_mean, message
from pixelwise._files import write_json_atomic, write_text_atomic
from pixelwise.models import list_models
from pixelwise.plan.fingerprint import Fingerprint, fingerprint
from pixelwise.plan.measure import plan_on_device
from pixelwise.plan.planner import Plan
from pixelwise.plan.render import plan_toml

DEFAULT_MODELS = ("unet", "segnet_basic", "deeplabv3_small", "fcn8s")
Say = Callable[[str], None]


def check_models(models: Sequence[str]) -> list[str]:
    """The model names, each registered, none twice; every unknown one named in one line."""
    known = list_models()
    unknown = [m for m in models if m not in known]
    if unknown or not models or len(set(models)) != len(models):
        close = [(m, did_you_mean(m, known)) for m in unknown]
        hints = "; ".join(f"{m}: {hint}" for m, hint in close if hint.startswith("did you"))
        raise ValueError(
            message(
                "--models",
                f"name registered models, each once, from {', '.join(known)}",
                ", ".join(models) or "none",
                hints,
            )
        )
    return list(models)


def threads_per_job(jobs: int) -> int:
    """Torch threads of each of ``jobs`` trainings at once: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


def plan_models(
    fp: Fingerprint,
    models: Sequence[str],
    minutes: float,
    *,
    device: torch.device,
    threads: int,
    seconds: float = 2.0,
) -> dict[str, Plan]:
    """Each model planned for ``minutes`` on ``device``, measured with ``threads`` threads
    (what each training will have)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {
            model: plan_on_device(fp, minutes, device=device, model=model, seconds=seconds)
            for model in models
        }
    finally:
        torch.set_num_threads(before)


def _train_command(plan: Path, parent: Path, overrides: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "pixelwise", "train", str(plan), "--out-dir", str(parent)]
    return argv + [a for o in overrides for a in ("--set", o)]


def train_plans(
    plans: Mapping[str, Path],
    out: Path,
    *,
    jobs: int,
    overrides: Sequence[str] = (),
    say: Say = print,
) -> dict[str, Path]:
    """Train each plan in its own process, ``jobs`` at a time; returns each run folder.

    Raises:
        ValueError: a training failed; the line names its log.
    """
    threads = str(threads_per_job(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    pending, running, done = list(plans), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            model = pending.pop(0)
            parent = out / "runs" / model
            parent.mkdir(parents=True, exist_ok=True)
            log = (out / "runs" / f"{model}.log").open("w")
            command = _train_command(plans[model], parent, overrides)
            running[model] = (subprocess.Popen(command, stdout=log, stderr=log, env=env), log)
            say(f"training {model} (log: {out / 'runs' / f'{model}.log'})")
        for model, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[model]
            if process.returncode != 0:
                raise ValueError(
                    message(
                        f"the training of {model}",
                        "finish",
                        f"exit status {process.returncode}",
                        f"see {out / 'runs' / f'{model}.log'}",
                    )
                )
            (done[model],) = sorted((out / "runs" / model).iterdir())[-1:]
        time.sleep(0.2)
    return done


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def score_run(run_dir: Path) -> dict[str, object]:
    """A run's ``last.pt`` scored on its validation split, with its training figures."""
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import evaluate_dataset, evaluation_dataset

    segmenter = load_model(run_dir / "last.pt")
    dataset = evaluation_dataset(segmenter.checkpoint.config["data"], "val")
    segmenter.ignore_index = dataset.ignore_index
    result = evaluate_dataset(segmenter, dataset)
    rows = _history(run_dir)
    speeds = [float(r["images_per_second"]) for r in rows if r.get("images_per_second")]
    return {
        "run_dir": str(run_dir),
        "mean_iou": float(result["mean_iou"]),
        "class_iou": {name: float(c["iou"]) for name, c in result["classes"].items()},
        "boundary_f1": float(result.get("boundary_f1", math.nan)),
        "pixel_accuracy": float(result["pixel_accuracy"]),
        "images_per_second": sum(speeds) / len(speeds) if speeds else math.nan,
        "parameters": sum(p.numel() for p in segmenter.network.parameters()),
        "minutes": float(rows[-1]["minutes"]),
        "iterations": int(rows[-1]["iteration"]),
        "curve": {
            "minutes": [float(r["minutes"]) for r in rows],
            "mean_iou": [float(r["mean_iou"]) if r["mean_iou"] else math.nan for r in rows],
        },
    }


def bakeoff(
    root: str | Path,
    minutes: float,
    out: str | Path,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    jobs: int = 1,
    device: str = "auto",
    overrides: Sequence[str] = (),
    say: Say = print,
) -> dict[str, object]:
    """Plan, train and score each of ``models`` on ``root`` for ``minutes``; writes ``out``.

    Returns:
        The report written to ``out/bakeoff.json``: the fingerprint's summary, each model's
        plan, run and scores (by model), the command's settings.
    """
    from pixelwise._device import resolve_device
    from pixelwise.report.plots import plot_series

    models, out = check_models(list(models)), Path(out)
    found = fingerprint(root)
    where = resolve_device(device)
    say(f"planning {len(models)} models for {minutes:g} minutes each ...")
    plans = plan_models(found, models, minutes, device=where, threads=threads_per_job(jobs))
    paths = {}
    for model, plan in plans.items():
        paths[model] = out / "plans" / f"{model}.toml"
        write_text_atomic(paths[model], plan_toml(plan, found, minutes, folder=paths[model].parent))
    runs = train_plans(paths, out, jobs=jobs, overrides=overrides, say=say)
    scores = {model: score_run(run) for model, run in runs.items()}
    curves = {m: (s["curve"]["minutes"], s["curve"]["mean_iou"]) for m, s in scores.items()}
    plot_series(
        curves,
        out / "curves.png",
        title=f"Validation mean IoU, {minutes:g} min each",
        xlabel="training minutes",
        ylabel="mean IoU",
    )
    report = {
        "data": str(root),
        "minutes": minutes,
        "jobs": jobs,
        "threads_per_training": threads_per_job(jobs),
        "device": str(where),
        "overrides": list(overrides),
        "models": {m: {"plan": str(paths[m]), **scores[m]} for m in models},
    }
    write_json_atomic(out / "bakeoff.json", _finite(report))
    return report


def _finite(value: object) -> object:
    """NaN as None, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
