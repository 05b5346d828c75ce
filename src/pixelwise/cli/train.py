"""``pixelwise train``: a run from a config, its progress on the terminal or in a log.

Before training starts, the run folder, model, parameter count, split sizes and budget are
written to stderr. On a terminal, progress is shown as bars (tqdm, on stderr); when stdout or
stderr is not a terminal (a log file, a pipe) as plain lines instead, one per validation. Under
a time budget the display shows the minutes left and the clock time the budget ends, not an
epoch count. The result (run folder, validation mean IoU) goes to stdout at the end.

The library is imported inside the command, so that building the parser does not import torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pixelwise.cli._format import message, score


class _Budget:
    """A time budget's minutes left and the clock time it ends, from ``run_start`` info."""

    def __init__(self, info: Mapping[str, object]) -> None:
        self.limit = float(info.get("time_limit_minutes") or 0)
        self.done_before = float(info.get("minutes_done") or 0)
        self.started = time.monotonic()

    def __bool__(self) -> bool:
        return self.limit > 0

    def left(self, row: Mapping[str, object] | None = None) -> float:
        """Minutes of the budget left: after ``row`` (its ``minutes``), else by the clock."""
        minutes = (row or {}).get("minutes")
        if minutes is None:
            minutes = self.done_before + (time.monotonic() - self.started) / 60
        return max(self.limit - float(minutes), 0.0)

    def text(self, row: Mapping[str, object] | None = None) -> str:
        """E.g. ``60 min budget, 42.5 min left, ends 14:05``."""
        left = self.left(row)
        ends = datetime.datetime.now() + datetime.timedelta(minutes=left)
        return f"{self.limit:g} min budget, {left:.1f} min left, ends {ends:%H:%M}"


def start_lines(info: Mapping[str, object]) -> list[str]:
    """What a run is about to do: folder, model, data, device, budget (keys read with get, so
    that a progress event without some of them still prints the rest)."""
    lines = [f"run folder: {info.get('run_dir')}"]
    if info.get("model") is not None:
        params = info.get("parameters")
        counted = f" ({params:,} parameters)" if isinstance(params, int) else ""
        lines.append(f"model: {info['model']}{counted}")
    if info.get("train_size") is not None:
        sizes = f"data: {info['train_size']} training, {info.get('val_size')} validation samples"
        lines.append(
            sizes + (f", {info['batches']} batches per epoch" if info.get("batches") else "")
        )
    world = info.get("world_size") or 1
    if info.get("device") is not None:
        lines.append(f"device: {info['device']}" + (f" × {world} processes" if world > 1 else ""))
    budget, start = _Budget(info), int(info.get("start_epoch") or 0)
    if budget:
        before = (
            f" ({budget.done_before:.1f} min done before the resume)" if budget.done_before else ""
        )
        lines.append(f"budget: {budget.limit:g} min{before}")
    else:
        lines.append(
            f"budget: {info.get('epochs')} epochs" + (f", from epoch {start + 1}" if start else "")
        )
    return lines


def _print_start(info: Mapping[str, object]) -> None:
    for line in start_lines(info):
        print(line, file=sys.stderr, flush=True)


class _TrainBars:
    """tqdm bars for ``pixelwise train`` on a terminal: epochs, and the batches of the current
    epoch; under a time budget, no epoch total but the minutes left and an ETA."""

    def __init__(self) -> None:
        from tqdm import tqdm  # at call time: start-up without tqdm

        self._tqdm = tqdm
        self.epochs = self.batches = None
        self.val_miou = float("nan")
        self.budget = None

    def run_start(self, info: Mapping[str, object]) -> None:
        _print_start(info)
        self.budget = _Budget(info)
        # A time budget ends the run, not the epoch count: no epoch total, no bogus ETA.
        total = None if self.budget else info["epochs"]
        desc = f"train ({self.budget.limit:g} min budget)" if self.budget else "train"
        self.epochs = self._tqdm(total=total, initial=info["start_epoch"], desc=desc, unit="epoch")

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        desc = f"epoch {epoch}" if self.budget else f"epoch {epoch}/{epochs}"
        self.batches = self._tqdm(total=batches, desc=desc, unit="batch", leave=False)

    def batch_end(
        self, epoch: int, batch: int, batches: int, loss: float, images_per_second: float
    ) -> None:
        self.batches.set_postfix(
            loss=f"{loss:.4f}", speed=f"{images_per_second:.1f} img/s", refresh=False
        )
        self.batches.update(1)

    def epoch_end(self, epoch: int, epochs: int, row: Mapping[str, object]) -> None:
        self.batches.close()
        if row["mean_iou"] == row["mean_iou"]:  # not NaN: this epoch validated
            self.val_miou = row["mean_iou"]
        if self.budget:
            self.epochs.set_description(f"train ({self.budget.text(row)})", refresh=False)
        self.epochs.set_postfix(
            loss=f"{row['train_loss']:.4f}", val_mIoU=score(self.val_miou), refresh=False
        )
        self.epochs.update(1)

    def close(self) -> None:
        for bar in (self.batches, self.epochs):
            if bar is not None:
                bar.close()


class _TrainLines:
    """Plain progress lines on stderr for logs and pipes: the start, one line per validation,
    the end; no bars, no escape codes."""

    def __init__(self, stream: object = None) -> None:
        self.stream = stream
        self.budget = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def run_start(self, info: Mapping[str, object]) -> None:
        for line in start_lines(info):
            self._print(line)
        self.budget = _Budget(info)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """Nothing: one line per validation."""

    def batch_end(
        self, epoch: int, batch: int, batches: int, loss: float, images_per_second: float
    ) -> None:
        """Nothing: one line per validation."""

    def epoch_end(self, epoch: int, epochs: int, row: Mapping[str, object]) -> None:
        if row["mean_iou"] != row["mean_iou"]:  # NaN: not validated this epoch
            return
        where = f"epoch {epoch}" if self.budget else f"epoch {epoch}/{epochs}"
        text = f"{where}: train loss {row['train_loss']:.4f}, val mIoU {score(row['mean_iou'])}"
        if row.get("minutes") is not None:
            text += f", {float(row['minutes']):.1f} min"
        self._print(text + (f" ({self.budget.text(row)})" if self.budget else ""))

    def run_end(self, result: object) -> None:
        minutes = getattr(result, "minutes", None)
        self._print("training done" + (f" after {minutes:.1f} min" if minutes is not None else ""))

    def close(self) -> None:
        """Nothing to close (the bars' interface)."""


def _progress() -> _TrainBars | _TrainLines:
    """Bars on a terminal, plain lines otherwise."""
    if sys.stdout.isatty() and sys.stderr.isatty():
        return _TrainBars()
    return _TrainLines()


def _train_argv(args: argparse.Namespace, plan_text: str | None = None) -> list[str]:
    """The ``pixelwise train`` command line of ``args`` without ``--nproc``, for the workers;
    a data folder's plan (``plan_text``) goes to them as a config file, planned once."""
    argv = ["--debug"] if args.debug else []
    config = args.config
    if plan_text is not None:
        import tempfile

        from pixelwise._files import write_text_atomic

        config = str(Path(tempfile.mkdtemp(prefix="pixelwise-plan-")) / "plan.toml")
        write_text_atomic(config, plan_text)
    argv += ["train", *([config] if config else [])]
    if args.minutes is not None and plan_text is None:
        argv += ["--minutes", str(args.minutes)]
    for text in args.set or ():
        argv += ["--set", text]
    if args.resume:
        argv += ["--resume", args.resume]
    if args.out_dir:
        argv += ["--out-dir", args.out_dir]
    if args.download:
        argv += ["--download"]
    return argv


def _print_result(result: object) -> None:
    print(f"run folder: {result.run_dir}")
    when = f"after epoch {result.epochs}"
    if result.stopped_by == "time_limit":
        when = (
            f"after {result.iterations} iterations ({result.epochs} full epochs; "
            f"stopped by the time budget at {result.minutes:.1f} min)"
        )
    if result.stopped_by == "interrupted":
        when = f"after {result.iterations} iterations (stopped by Ctrl-C)"
    if result.metrics:
        print(
            f"validation mean IoU {score(result.metrics['mean_iou'])} {when} "
            f"(best {result.metric} {score(result.best_value)} at epoch "
            f"{result.best_epoch}: {result.best_path.name})"
        )
    if result.stopped_by == "interrupted":
        print(f"resume with: pixelwise train --resume {result.last_path}")
    _print_instances(result)


def _print_instances(result: object) -> None:
    """After an instance run: the post-processing recorded in the best checkpoint."""
    from pixelwise.cli.checkpoint import _instances_text
    from pixelwise.engine.checkpoint import load_checkpoint

    best = getattr(result, "best_path", None)
    if best is None or not best.is_file():
        return
    checkpoint = load_checkpoint(best)
    if checkpoint.instances:
        text = _instances_text(checkpoint.instances, checkpoint.class_names)
        print(f"objects ({best.name}): {text}")


def _planned(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    """With a data folder in place of a config: the plan's tables and its TOML text (the
    data folder planned for ``--minutes``); else (None, None)."""
    from pathlib import Path

    if not (args.config and Path(args.config).is_dir()):
        return None, None
    if args.resume:
        raise ValueError(
            message("--resume", "come without a data folder", args.config, "drop the folder")
        )
    from pixelwise.cli.plan import DEFAULT_MINUTES, plan_folder

    minutes = DEFAULT_MINUTES if args.minutes is None else args.minutes
    plan, text = plan_folder(args.config, minutes, device=_device_choice(args))
    return {k: dict(v) for k, v in plan.tables.items()}, text


def _device_choice(args: argparse.Namespace) -> str:
    """A ``--set train.device=...`` given with a data folder is the device the plan measures."""
    for text in args.set or ():
        key, _, value = text.partition("=")
        if key.strip() == "train.device":
            return value.strip().strip("\"'")
    return "auto"


def _keep_plan(text: str | None) -> object:
    """A progress callback that writes the plan's TOML into the run folder when it starts."""

    def keep(event: str, info: Mapping[str, object]) -> None:
        if event == "run_start" and text is not None:
            from pixelwise._files import write_text_atomic

            write_text_atomic(info["run_dir"] / "plan.toml", text)

    return keep


def cmd_train(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from pixelwise.config import load_config
    from pixelwise.engine import distributed
    from pixelwise.engine.checkpoint import load_checkpoint
    from pixelwise.engine.events import Callbacks

    planned, plan_text = _planned(args)
    overrides = list(args.set or ())
    if args.minutes is not None and planned is None:
        overrides.append(f"train.time_limit_minutes={float(args.minutes)!r}")
    if args.out_dir:
        overrides.append(f"train.out_dir={json.dumps(args.out_dir)}")
    if args.download:
        overrides.append("model.options.allow_download=true")
    base = load_checkpoint(args.resume).config if args.resume and not args.config else None
    path = None if planned is not None else args.config
    config = load_config(path, overrides, base=planned if planned is not None else base)
    if args.nproc != 1 and not distributed.context().enabled:
        return distributed.launch(_train_argv(args, plan_text), args.nproc)
    from pixelwise.engine.trainer import Trainer

    main_process = distributed.context().is_main
    progress = _progress() if main_process else None
    callbacks = Callbacks([progress, _keep_plan(plan_text)]) if main_process else None
    trainer = Trainer(config, progress=callbacks)
    try:
        result = trainer.fit(resume=args.resume)
    finally:
        trainer.close()
        if progress is not None:
            progress.close()
    if main_process:
        _print_result(result)
    return 130 if result.stopped_by == "interrupted" else 0  # 130: the shell's "interrupted"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    p = sub.add_parser(
        "train",
        help="train a model from a run config or a data folder (default: U-Net on the built-in "
        "data)",
    )
    p.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.toml|DATA",
        help="the run config, or a data folder to plan for (see pixelwise plan); omitted: the "
        "built-in job, or the checkpoint's config with --resume",
    )
    p.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="the training budget: what a data folder is planned for (default 15), or "
        "train.time_limit_minutes of a config",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--resume", metavar="CKPT", help="continue a run from its last.pt, in a new run folder"
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train in N processes on this machine (torch.distributed: gloo on CPU, NCCL on GPU)",
    )
    p.add_argument(
        "--out-dir", metavar="DIR", help="parent of the new run folder (default train.out_dir)"
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download the ImageNet weights of model.options.encoder "
        "(encoder_weights = 'imagenet') when they are not in its cache; nothing is downloaded "
        "otherwise",
    )
    p.set_defaults(func=cmd_train)
