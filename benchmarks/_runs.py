"""What the real-data benchmarks share: arguments, training through the public CLI, the
time-budget overrides, JSON and plots.

Each benchmark trains with ``pixelwise train CONFIG --set ... --out-dir DIR`` (called
through :func:`pixelwise.cli.main`, exactly as on the command line), then evaluates the
checkpoints it wrote with :mod:`pixelwise.metrics`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pixelwise import load_checkpoint
from pixelwise._files import write_bytes_atomic, write_json_atomic
from pixelwise.cli import main as pixelwise_main
from pixelwise.data.encoding import format_values
from pixelwise.engine.saver import snapshot_name
from pixelwise.plan.bakeoff import threads_per_job

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# Fractions of the budget at which a snapshot is saved: 15, 30 and 60 of 60 minutes.
SNAPSHOT_FRACTIONS = (0.25, 0.5, 1.0)
# A --smoke run's default budget: the first iteration crosses it, so every snapshot and the
# stop are taken after an iteration or two.
SMOKE_MINUTES = 1e-4


@dataclass(frozen=True)
class Run:
    """One finished ``pixelwise train``: its folder, wall time and last metrics.csv row."""

    label: str
    run_dir: Path
    wall_seconds: float
    last_row: Mapping[str, str]

    @property
    def minutes(self) -> float:
        """Training minutes by the run's own clock."""
        return float(self.last_row["minutes"])

    @property
    def iterations(self) -> int:
        return int(self.last_row["iteration"])

    def snapshots(self, minutes: Sequence[float]) -> dict[float, Path | None]:
        """``snapshot_<m>min.pt`` for each mark; None where the run ended before it."""
        paths = {m: self.run_dir / snapshot_name(m) for m in minutes}
        return {m: (p if p.is_file() else None) for m, p in paths.items()}

    def checkpoints(self, budget: float) -> dict[str, tuple[Path, int]]:
        """``{"15 min": (snapshot path, iteration), ...}`` for the snapshots of a budget, and
        ``"end"`` (last.pt) when no snapshot holds the run's last iteration."""
        found = {}
        for minutes, path in self.snapshots(snapshot_minutes(budget)).items():
            if path is not None:
                found[f"{minutes:g} min"] = (path, load_checkpoint(path).metrics["iteration"])
        if self.iterations not in {iteration for _, iteration in found.values()}:
            found["end"] = (self.run_dir / "last.pt", self.iterations)
        return found

    def summary(self) -> dict[str, object]:
        return {
            "run_dir": str(self.run_dir),
            "wall_seconds": round(self.wall_seconds, 1),
            "train_minutes": round(self.minutes, 3),
            "iterations": self.iterations,
            "epochs": float(self.last_row["epoch"]),
        }


def parse_args(
    name: str, data_set: str, description: str, argv: Sequence[str] | None
) -> argparse.Namespace:
    """``--minutes``, ``--out``, ``--data`` and ``--smoke``, with the benchmark's defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--minutes",
        type=float,
        help="training budget per model in minutes (default 60; with --smoke a few iterations)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / name,
        help=f"results folder (default benchmarks/results/{name}/)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA / data_set,
        help=f"the data set (default ../shared/data/{data_set})",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models and budget: checks the script only"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config override for every model, as pixelwise train --set (recorded in the JSON)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings at once, each with cores/jobs threads (default 1: one after another)",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        help="train this plan.toml (copied into OUT) instead of planning: the plan of an "
        "earlier run, measured on an idle machine, when this one starts beside other work",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="train nothing: score the newest finished run of each model under OUT/runs/ again",
    )
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = SMOKE_MINUTES if args.smoke else 60.0
    if not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if not args.data.is_dir():
        parser.error(
            f"--data {args.data} must be an existing folder (see ../shared/data/README.md)"
        )
    return args


def parse_named_args(
    script: str, names: Sequence[str], description: str, argv: Sequence[str] | None
) -> tuple[str, argparse.Namespace] | None:
    """``SCRIPT.py NAME [options]``: the data set's name (one of ``names``) and
    :func:`parse_args` of the rest (results in ``benchmarks/results/SCRIPT_NAME/``); None
    after printing the usage when the name is missing or unknown."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in names:
        print(f"usage: {script}.py {{{','.join(names)}}} [options]", file=sys.stderr)
        return None
    name = argv.pop(0)
    args = parse_args(f"{script}_{name}", name, description, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return name, args


def snapshot_minutes(minutes: float) -> tuple[float, ...]:
    """The snapshot marks of a budget: a quarter, a half and all of it (15, 30, 60 of 60)."""
    return tuple(float(f"{f * minutes:.6g}") for f in SNAPSHOT_FRACTIONS)


def budget_overrides(minutes: float) -> list[str]:
    """``--set`` values that stop training after ``minutes`` with snapshots on the way."""
    marks = ", ".join(f"{m:g}" for m in snapshot_minutes(minutes))
    return [f"train.time_limit_minutes={minutes:g}", f"train.snapshot_minutes=[{marks}]"]


def _train_argv(
    label: str, config: Path, overrides: Sequence[str], out: Path, data: Path
) -> tuple[list[str], Path]:
    """The ``pixelwise train`` arguments of one run and the folder its run folder goes in."""
    parent = out / "runs" / label
    argv = ["train", str(config), "--set", f"data.root={data}"]
    argv += [a for o in overrides for a in ("--set", o)]
    return [*argv, "--out-dir", str(parent)], parent


def _children(parent: Path) -> set[Path]:
    return set(parent.iterdir()) if parent.is_dir() else set()


def _finished_run(label: str, parent: Path, before: set[Path], wall: float) -> Run:
    (run_dir,) = _children(parent) - before
    with (run_dir / "metrics.csv").open(newline="") as stream:
        last_row = list(csv.DictReader(stream))[-1]
    return Run(label, run_dir, wall, last_row)


def train(label: str, config: Path, overrides: Sequence[str], out: Path, data: Path) -> Run:
    """``pixelwise train CONFIG --set data.root=DATA --set ... --out-dir OUT/runs/LABEL``.

    Raises:
        SystemExit: the command failed: its one-line error is on stderr, and the script stops
            with status 2 and no traceback.
    """
    argv, parent = _train_argv(label, config, overrides, out, data)
    before = _children(parent)
    start = time.perf_counter()
    status = pixelwise_main(argv)
    wall = time.perf_counter() - start
    if status != 0:
        print(f"{label}: pixelwise train exited with status {status}", file=sys.stderr)
        raise SystemExit(2)
    return _finished_run(label, parent, before, wall)


def plan(args: argparse.Namespace) -> tuple[Path, float]:
    """``pixelwise plan DATA --minutes M`` into ``OUT/plan.toml``, measured with the threads
    each training will have; returns the plan's path and the seconds planning took."""
    out = args.out / "plan.toml"
    if getattr(args, "plan", None) is not None:
        if not args.plan.is_file():
            raise SystemExit(f"{args.plan}: no such plan file")
        out.write_text(args.plan.read_text())
        return out, 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(args.jobs))
    start = time.perf_counter()
    try:
        argv = ["plan", str(args.data), "--minutes", f"{args.minutes:g}", "--out", str(out)]
        status = pixelwise_main([*argv, "--overwrite", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    if status != 0:
        raise SystemExit(2)
    return out, time.perf_counter() - start


# --smoke's model for a planned run: a two-level U-Net of width 4, or, where the plan chose a
# pretrained encoder (whose levels are fixed), that encoder with a decoder of width 4.
TINY_UNET = "model.options={depth=2, base_width=4, padding='same', batch_norm=true}"
TINY_DECODER = "model.options={base_width=4}"


def tiny_model(plan: Path) -> str:
    """The ``--set`` that makes the model of the plan at ``plan`` tiny for --smoke."""
    import tomllib

    options = tomllib.loads(plan.read_text()).get("model", {}).get("options", {})
    return TINY_DECODER if "encoder" in options else TINY_UNET


def train_all(
    runs: Mapping[str, Sequence[str]],
    config: Path | Mapping[str, Path],
    out: Path,
    data: Path,
    jobs: int = 1,
) -> dict[str, Run]:
    """Train each ``label -> overrides`` of ``runs``; ``jobs`` at a time. ``config`` is the run
    config of every label, or one per label.

    With ``jobs == 1`` one after another in this process, every run with all the cores.
    Otherwise each run is ``python -m pixelwise train ...`` in its own process with
    ``OMP_NUM_THREADS`` = cores / jobs, ``jobs`` at once (its progress in
    ``OUT/runs/LABEL.log``): the same budget, each run on a share of the machine.

    Raises:
        SystemExit: a training failed: the end of its log is printed, the script stops with
            status 2.
    """
    configs = config if isinstance(config, Mapping) else dict.fromkeys(runs, config)
    if jobs <= 1:
        return {label: train(label, configs[label], o, out, data) for label, o in runs.items()}
    threads = str(threads_per_job(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    labels, done = list(runs), {}
    for first in range(0, len(labels), jobs):
        started = {}
        for label in labels[first : first + jobs]:
            argv, parent = _train_argv(label, configs[label], runs[label], out, data)
            parent.mkdir(parents=True, exist_ok=True)
            log = (out / "runs" / f"{label}.log").open("w")
            command = [sys.executable, "-m", "pixelwise", *argv]
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            started[label] = (process, log, parent, _children(parent), time.perf_counter())
        for label, (process, log, parent, before, start) in started.items():
            status = process.wait()
            wall = time.perf_counter() - start
            log.close()
            if status != 0:
                tail = (out / "runs" / f"{label}.log").read_text()[-2000:]
                print(
                    f"{tail}\n{label}: pixelwise train exited with status {status}", file=sys.stderr
                )
                raise SystemExit(2)
            done[label] = _finished_run(label, parent, before, wall)
    return done


def _previous_walls(report: Path) -> dict[str, float]:
    """Wall seconds by run folder from an earlier report of the benchmark, if there is one."""
    try:
        train_section = json.loads(report.read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if isinstance(train_section, Mapping) and "run_dir" in train_section:
        train_section = {"": train_section}  # a one-model benchmark
    walls = {}
    for entry in train_section.values() if isinstance(train_section, Mapping) else ():
        if isinstance(entry, Mapping) and isinstance(entry.get("wall_seconds"), int | float):
            walls[str(entry.get("run_dir"))] = float(entry["wall_seconds"])
    return walls


def newest_run(label: str, out: Path, minutes: float, walls: Mapping[str, float]) -> Run:
    """The newest finished run (one with ``last.pt``) under ``OUT/runs/LABEL/``.

    Raises:
        SystemExit: there is none, or it was trained with another budget than ``minutes``:
            a one-line message, status 2.
    """
    parent = out / "runs" / label
    done = [
        p for p in _children(parent) if (p / "last.pt").is_file() and (p / "metrics.csv").is_file()
    ]
    if not done:
        print(
            f"{parent}: no finished run to rescore (train first, without --rescore)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    run_dir = max(done, key=lambda p: (p / "last.pt").stat().st_mtime)
    budget = load_checkpoint(run_dir / "last.pt").config["train"].get("time_limit_minutes")
    if budget is None or not math.isclose(float(budget), minutes):
        trained = (
            "without a time budget"
            if budget is None
            else f"with a {budget:g}-minute budget (rescore it with --minutes {budget:g})"
        )
        print(f"{run_dir}: trained {trained}, not {minutes:g} minutes", file=sys.stderr)
        raise SystemExit(2)
    with (run_dir / "metrics.csv").open(newline="") as stream:
        last_row = list(csv.DictReader(stream))[-1]
    return Run(label, run_dir, walls.get(str(run_dir), math.nan), last_row)


def runs_for(
    args: argparse.Namespace,
    name: str,
    runs: Mapping[str, Sequence[str]],
    config: Path | Mapping[str, Path],
) -> dict[str, Run]:
    """Train each ``label -> overrides`` (:func:`train_all`, ``args.jobs`` at a time), or with
    ``--rescore`` take the newest finished run of each label (wall times from the last report)."""
    if not args.rescore:
        return train_all(runs, config, args.out, args.data, args.jobs)
    walls = _previous_walls(args.out / f"{name}.json")
    return {label: newest_run(label, args.out, args.minutes, walls) for label in runs}


def common_overrides(args: argparse.Namespace, smoke: Sequence[str]) -> list[str]:
    """The overrides every model of a benchmark gets: the budget, ``smoke`` with --smoke, and
    the user's --set values."""
    return budget_overrides(args.minutes) + (list(smoke) if args.smoke else []) + args.set


def report_header(
    name: str,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    config: Path,
    overrides: object,
) -> dict[str, object]:
    """What every benchmark's JSON starts with: the command, budget, config and overrides."""
    return {
        "benchmark": name,
        "command": " ".join([f"benchmarks/{name}.py", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke,
        "budget_minutes": args.minutes,
        "config": _config_name(config),
        "overrides": overrides,
        "jobs": args.jobs,
        "threads_per_training": threads_per_job(args.jobs),
        "rescored": args.rescore,
    }


def _config_name(config: Path | Mapping[str, Path]) -> object:
    """A config's path relative to the project (one per label for several)."""
    if isinstance(config, Mapping):
        return {label: _config_name(path) for label, path in config.items()}
    path = Path(config).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sample_names(dataset: object) -> list[str]:
    """The names (``sample_id``) of a data set's samples, in order: what a benchmark scored."""
    return [dataset.sample_id(i) for i in range(len(dataset))]


def describe_samples(names: Sequence[str], shown: int = 5) -> str:
    """``"5 validation samples [20, 21, 22, 23, 24]"``, the first ``shown`` names, then how
    many more."""
    return f"{len(names)} validation sample{'s' * (len(names) != 1)} {format_values(names, shown)}"


def without_nan(value: object) -> object:
    """JSON has no NaN: undefined numbers become null; tuples become lists."""
    if isinstance(value, Mapping):
        return {str(k): without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, report: Mapping[str, object]) -> Path:
    """``report`` with the machine it ran on, as JSON, atomically."""
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return write_json_atomic(path, without_nan({**report, "machine": machine}))


def save_figure(figure: object, path: Path) -> Path:
    """A matplotlib Figure as a PNG, atomically (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    return write_bytes_atomic(path, buffer.getvalue())


def bar_chart(
    path: Path,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    ylabel: str,
    styles: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (None: no bar);
    ``styles`` gives matplotlib bar options by series label (e.g. colour, hatch)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [math.nan if v is None else v for v in values]
        axes.bar(xs, heights, width=width, label=label, **(styles or {}).get(label, {}))
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, path)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain text table: numbers with 4 decimals, None as '-'."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# The --set that gives the encoder U-Net its full-resolution skip (a variant several
# benchmarks train beside the plan).
FULL_RESOLUTION_SKIP = "model.options.full_resolution_skip=true"


def split_arms(
    argv: Sequence[str] | None, known: Sequence[str], default: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """``--arms a,b`` taken out of ``argv`` (default ``sys.argv[1:]``): (the arms, the other
    arguments). Without ``--arms``, ``default`` (or all of ``known``).

    Raises:
        SystemExit: an arm not in ``known``, or none.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    arms = list(known if default is None else default)
    for i, text in enumerate(argv):
        if text == "--arms" or text.startswith("--arms="):
            value = text.partition("=")[2] if "=" in text else (argv[i + 1 : i + 2] or [""])[0]
            del argv[i : i + (1 if "=" in text else 2)]
            arms = [a.strip() for a in value.split(",") if a.strip()]
            break
    unknown = [a for a in arms if a not in known]
    if unknown or not arms:
        raise SystemExit(
            f"--arms: choose from {', '.join(known)}; got {', '.join(unknown) or 'none'}"
        )
    return arms, argv
