"""The ``pixelwise`` command: parses arguments, calls the library, prints.

Errors raised at the library's public boundary (ValueError, TypeError, FileNotFoundError)
are printed as one line, ``pixelwise: error: ...``, with exit status 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import torch

from pixelwise import __version__
from pixelwise._checks import message

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def parse_option(text: str) -> tuple[str, object]:
    """Parse one ``key=value`` model option; the value is a Python literal or a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(
            message("option", "look like key=value", repr(text), "e.g. -o padding=valid")
        )
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _options(pairs: Sequence[str] | None) -> dict[str, object]:
    return dict(parse_option(p) for p in pairs or ())


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def _build_on_meta(name: str, **kwargs: object) -> torch.nn.Module:
    # Building on the meta device allocates nothing, so even the 134M-parameter FCN is listed instantly.
    from pixelwise.models import create_model

    with torch.device("meta"):
        return create_model(name, **kwargs)


def cmd_models(args: argparse.Namespace) -> int:
    from pixelwise.models import get_entry, list_models

    rows = []
    for name in list_models():
        model = _build_on_meta(name, num_classes=args.num_classes, in_channels=args.in_channels)
        rows.append(
            (
                name,
                f"{count_parameters(model) / 1e6:.2f}M",
                str(model.size_divisor),
                get_entry(name).summary,
            )
        )
    header = ("model", "params", "size_divisor", "summary")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print(
        f"parameters counted at num_classes={args.num_classes}, in_channels={args.in_channels}, default options"
    )
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    from pixelwise.models import create_model
    from pixelwise.nn.trace import trace_stages

    height, width = args.size
    model = create_model(
        args.model,
        num_classes=args.num_classes,
        in_channels=args.in_channels,
        **_options(args.option),
    )
    if hasattr(model, "is_valid_input_size"):
        for axis, n in (("height", height), ("width", width)):
            if not model.is_valid_input_size(n):
                print(model.describe_input_size(n, axis))
                return 2
    stages = trace_stages(
        model, (1, args.in_channels, height, width), receptive_fields=not args.no_receptive_field
    )
    print(
        f"{args.model}  input (1, {args.in_channels}, {height}, {width})  size_divisor {model.size_divisor}"
    )
    name_w = max([len(s.name) for s in stages] + [5])
    print(f"{'stage'.ljust(name_w)}  {'shape'.ljust(22)}  receptive field")
    for s in stages:
        rf = "-" if s.receptive_field is None else f"{s.receptive_field} px"
        print(f"{s.name.ljust(name_w)}  {str(s.shape).ljust(22)}  {rf}")
    if hasattr(model, "output_size"):
        print(
            f"output {model.output_size(height)}×{model.output_size(width)} for input {height}×{width}"
        )
        for axis, n in (("height", height), ("width", width)):
            print(model.describe_input_size(n, axis))
    return 0


def cmd_weightmap(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pixelwise.report.weight_map import save_weight_map_png

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(
            message("--out", "not be an existing file", str(out), "pass --overwrite to replace it")
        )
    w = save_weight_map_png(
        args.mask,
        out,
        semantic=args.semantic,
        w0=args.w0,
        sigma=args.sigma,
        border=args.border,
        colormap=args.colormap,
    )
    print(
        f"wrote {out}  ({w.shape[0]}×{w.shape[1]}, w min {w.min():.3f} max {w.max():.3f} mean {w.mean():.3f})"
    )
    return 0


# --- evaluate, predict, info, check-data ---------------------------------------------------

_DATA_LAYOUTS = ("folders", "camvid", "instances", "tiff")
_ENCODING_EXAMPLE = 'e.g. --encoding \'{"kind": "values", "value_map": {"0": 0, "255": 1}}\''
_MEANS = (
    ("pixel accuracy", "pixel_accuracy"),
    ("mean accuracy", "mean_accuracy"),
    ("mean IoU", "mean_iou"),
    ("frequency-weighted IoU", "frequency_weighted_iou"),
    ("mean Dice", "mean_dice"),
    ("boundary F1", "boundary_f1"),
)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            message("--device", "name an available device", "'cuda' without a GPU", "use cpu")
        )
    return name


def _parse_encoding(text: str | None) -> dict | None:
    import json

    from pixelwise.data import MaskEncoding

    if text is None:
        return None
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        table = None
    if not isinstance(table, dict):
        raise ValueError(message("--encoding", "be a JSON table", repr(text), _ENCODING_EXAMPLE))
    MaskEncoding.from_config(table)  # refuses a bad table before any file is read
    return table


def _override_data(table: dict, args: argparse.Namespace) -> dict:
    """A ``[data]`` table with ``--layout`` and ``--encoding`` applied."""
    table = dict(table)
    if args.layout and args.layout != table.get("layout"):
        # Folder names and manifests belong to the layout they were written for.
        table = {k: v for k, v in table.items() if k not in ("images", "masks", "manifest")}
        table["layout"] = args.layout
    encoding = _parse_encoding(args.encoding)
    if encoding is not None:
        table["encoding"] = encoding
    return table


def _folder_table(base: dict, root: str, args: argparse.Namespace) -> dict:
    """The ``[data]`` table of the folder DATA: ``base`` with DATA as root and the flags applied."""
    table = {"layout": "folders", **_override_data(base, args), "root": root}
    if table["layout"] == "synthetic":
        raise ValueError(
            message(
                f"the layout of {root}",
                f"be one of {list(_DATA_LAYOUTS)}",
                "'synthetic' (the checkpoint's built-in training data)",
                "pass --layout",
            )
        )
    if table["layout"] in ("folders", "tiff") and table.get("encoding") is None:
        raise ValueError(
            message(f"the mask encoding of {root}", "be declared", "nothing", _ENCODING_EXAMPLE)
        )
    return table


def _check_classes(dataset: object, checkpoint: object, data: str) -> None:
    if dataset.num_classes != checkpoint.num_classes:
        raise ValueError(
            message(
                f"the classes of {data}",
                f"be the checkpoint's {checkpoint.num_classes}",
                f"{dataset.num_classes} from the mask encoding",
                "pass the --encoding the model was trained with",
            )
        )


def _bar_progress(bar: object) -> Callable[[int, int], None]:
    return lambda done, total: bar.update(done - bar.n)


def _score(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: undefined


def _print_metrics(result: Mapping[str, object]) -> None:
    classes = result["classes"]
    width = max(len("class"), *map(len, classes))
    columns = ("IoU", "acc", "Dice", "BF")
    print("class".ljust(width) + "".join(f"  {c:>6}" for c in columns) + f"  {'pixels':>12}")
    for name, row in classes.items():
        keys = ("iou", "accuracy", "dice", "boundary_f1")
        cells = "".join(f"  {_score(row[k]):>6}" for k in keys)
        print(f"{name.ljust(width)}{cells}  {row['target_pixels']:>12,}")
    for label, key in _MEANS:
        print(f"{label.ljust(24)}{_score(result[key])}")


def _without_nan(value: object) -> object:
    """JSON has no NaN: undefined scores become null."""
    if isinstance(value, Mapping):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import evaluate_dataset, evaluation_dataset

    model, checkpoint = load_model(args.checkpoint, device=_device(args.device))
    table = _folder_table(checkpoint.config.get("data") or {}, args.data, args)
    table["channels"] = checkpoint.in_channels
    dataset = evaluation_dataset(table, args.split)
    _check_classes(dataset, checkpoint, args.data)
    with tqdm(total=len(dataset), desc="evaluate", unit="image", disable=None) as bar:
        result = evaluate_dataset(
            model,
            dataset,
            num_classes=checkpoint.num_classes,
            ignore_index=dataset.ignore_index,
            normalisation=checkpoint.normalisation,
            class_names=checkpoint.class_names,
            progress=_bar_progress(bar),
        )
    if args.json:
        print(json.dumps(_without_nan(result), indent=2))
        return 0
    print(
        f"{checkpoint.model_name} (epoch {checkpoint.epoch}) on {args.data}, "
        f"split {args.split}: {result['num_images']} images"
    )
    _print_metrics(result)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import OUTPUT_KINDS, collect_images, plan_outputs, predict_file
    from pixelwise.inference.optimize import optimize_for_inference
    from pixelwise.inference.runtime import with_backend
    from pixelwise.report.palette import class_palette

    if args.backend == "onnxruntime" and args.device == "cuda":
        raise ValueError("--backend onnxruntime runs on the CPU: drop --device cuda")
    device = "cpu" if args.backend == "onnxruntime" else _device(args.device)
    model, checkpoint = load_model(args.checkpoint, device=device)
    try:
        # Optimised once, not per image; ONNX Runtime exports once per tile shape.
        model = with_backend(optimize_for_inference(model, inplace=True), args.backend)
    except ImportError as exc:  # the optional package: one line, like other user errors
        raise ValueError(str(exc)) from None
    plan = plan_outputs(collect_images(args.images), args.out, overwrite=args.overwrite)
    palette = class_palette(checkpoint.class_names)
    for image, paths in tqdm(plan, desc="predict", unit="image", disable=None):
        with tqdm(desc=image.name, unit="tile", leave=False, disable=None) as bar:

            def progress(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            predict_file(
                model,
                image,
                paths,
                palette,
                normalisation=checkpoint.normalisation,
                alpha=args.alpha,
                tile=args.tile,
                tta=args.tta,
                progress=progress,
            )
    kinds = ", ".join(f"<stem>_{kind}.png" for kind in OUTPUT_KINDS)
    print(f"wrote {len(plan)} image(s) × {len(OUTPUT_KINDS)} files to {args.out} ({kinds})")
    return 0


def _flat(table: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _config_text(config: Mapping[str, object]) -> str:
    import json

    from pixelwise.config import dump_toml

    if config and all(isinstance(v, Mapping) for v in config.values()):
        return dump_toml(config).rstrip()
    return json.dumps(config, indent=2)


def cmd_info(args: argparse.Namespace) -> int:
    from pixelwise.engine.checkpoint import load_model

    model, checkpoint = load_model(args.checkpoint)
    norm = checkpoint.normalisation
    rows = (
        ("checkpoint", args.checkpoint),
        ("model", checkpoint.model_name),
        ("model args", ", ".join(f"{k}={v!r}" for k, v in checkpoint.model_args.items())),
        ("parameters", f"{count_parameters(model):,}"),
        ("classes", f"{checkpoint.num_classes}: " + ", ".join(checkpoint.class_names)),
        ("ignore_index", checkpoint.ignore_index),
        ("normalisation", f"mean {norm['mean']}, std {norm['std']}" if norm else "none"),
        ("epoch", checkpoint.epoch),
        ("training state", "saved (resumable)" if checkpoint.training else "none"),
    )
    for label, value in rows:
        print(f"{label.ljust(15)}{value}")
    print("metrics" + ("" if checkpoint.metrics else "        none"))
    metrics = _flat(checkpoint.metrics)
    width = max((len(key) for key, _ in metrics), default=0)
    for key, value in metrics:
        print(f"  {key.ljust(width)}  {_score(value) if isinstance(value, float) else value}")
    print("config")
    print(_config_text(checkpoint.config))
    return 0


def _data_to_check(args: argparse.Namespace) -> tuple[dict, tuple[str, ...]]:
    """The ``[data]`` table of CONFIG.toml or DATA, and the splits to check."""
    from pathlib import Path

    from pixelwise.config import load_config

    source = Path(args.source)
    if source.is_file():
        table = _override_data(load_config(source).to_dict()["data"], args)
        return table, ("train", "val")
    if not source.is_dir():
        raise FileNotFoundError(
            message(f"{source}", "be a run config (.toml) or a data folder", "a missing path")
        )
    table = _folder_table({}, str(source), args)
    return table, ("train", "val") if table["layout"] == "camvid" else ("all",)


def _sizes(sizes: Sequence[tuple[int, int]]) -> str:
    shown = [f"{h}×{w}" for h, w in sizes]
    if len(shown) <= 3:
        return "size " + ", ".join(shown) + " (H×W)"
    return f"{len(shown)} sizes from {shown[0]} to {shown[-1]} (H×W)"


def _print_data_summary(source: str, layout: str, summaries: Mapping[str, object]) -> None:
    counts = ", ".join(f"{split} {s.num_samples} samples" for split, s in summaries.items())
    print(f"checked {source} (layout {layout}): {counts}; no problems found")
    channels = sorted({s.channels for s in summaries.values()})
    sizes = sorted({size for s in summaries.values() for size in s.sizes})
    print(f"images: {'/'.join(map(str, channels))} channel(s), {_sizes(sizes)}")
    names = next(iter(summaries.values())).class_names
    width = max(len("ignored"), *map(len, names))
    print(
        "class".ljust(width)
        + "".join(f"  {split + ' pixels':>16}  {'%':>7}" for split in summaries)
    )
    for i, name in enumerate(names):
        cells = "".join(
            f"  {s.class_pixels[i]:>16,}  {100 * s.class_fractions[i]:>6.2f}%"
            for s in summaries.values()
        )
        print(name.ljust(width) + cells)
    ignored = "".join(f"  {s.ignored_pixels:>16,}  {'':>7}" for s in summaries.values())
    print(("ignored".ljust(width) + ignored).rstrip())
    for split, s in summaries.items():
        if s.absent_classes:
            print(f"classes without any pixel in {split}: {', '.join(s.absent_classes)}")


def cmd_check_data(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.data import check_dataset
    from pixelwise.inference import evaluation_dataset

    table, splits = _data_to_check(args)
    summaries = {}
    for split in splits:
        dataset = evaluation_dataset(table, split)
        with tqdm(total=len(dataset), desc=f"check {split}", unit="sample", disable=None) as bar:
            summaries[split] = check_dataset(dataset, progress=_bar_progress(bar))
    _print_data_summary(args.source, table["layout"], summaries)
    return 0


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layout",
        choices=_DATA_LAYOUTS,
        help="how the data is stored (default: the checkpoint's or config's; folders otherwise)",
    )
    p.add_argument(
        "--encoding",
        metavar="JSON",
        help='the mask encoding, e.g. \'{"kind": "values", "value_map": {"0": 0, "255": 1}}\' '
        "(default: the checkpoint's or config's)",
    )


class _TrainBars:
    """tqdm bars for ``pixelwise train``: epochs, and the batches of the current epoch."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.epochs = self.batches = None
        self.val_miou = float("nan")

    def run_start(self, info: Mapping[str, object]) -> None:
        # A time budget ends the run, not the epoch count: no epoch total, no bogus ETA.
        total = None if info.get("time_limit_minutes") else info["epochs"]
        desc = f"train ({info['time_limit_minutes']} min budget)" if total is None else "train"
        self.epochs = self._tqdm(total=total, initial=info["start_epoch"], desc=desc, unit="epoch")

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.batches = self._tqdm(
            total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False
        )

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
        self.epochs.set_postfix(
            loss=f"{row['train_loss']:.4f}", val_mIoU=_score(self.val_miou), refresh=False
        )
        self.epochs.update(1)

    def close(self) -> None:
        for bar in (self.batches, self.epochs):
            if bar is not None:
                bar.close()


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The ``pixelwise train`` command line of ``args`` without ``--nproc``, for the workers."""
    argv = ["--debug"] if args.debug else []
    argv += ["train", *([args.config] if args.config else [])]
    for text in args.set or ():
        argv += ["--set", text]
    if args.resume:
        argv += ["--resume", args.resume]
    if args.out_dir:
        argv += ["--out-dir", args.out_dir]
    return argv


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from pixelwise.config import load_config
    from pixelwise.engine import distributed
    from pixelwise.engine.checkpoint import load_checkpoint

    overrides = list(args.set or ())
    if args.out_dir:
        overrides.append(f"train.out_dir={json.dumps(args.out_dir)}")
    base = load_checkpoint(args.resume).config if args.resume and not args.config else None
    config = load_config(args.config, overrides, base=base)  # a bad config fails before launching
    if args.nproc != 1 and not distributed.context().enabled:
        return distributed.launch(_train_argv(args), args.nproc)
    from pixelwise.engine.trainer import Trainer

    main_process = distributed.context().is_main
    bars = _TrainBars() if main_process else None
    trainer = Trainer(config, progress=bars)
    try:
        result = trainer.fit(resume=args.resume)
    finally:
        trainer.close()
        if bars is not None:
            bars.close()
    if main_process:
        print(f"run folder: {result.run_dir}")
        when = f"after epoch {result.epochs}"
        if result.stopped_by == "time_limit":
            when = (
                f"after {result.iterations} iterations ({result.epochs} full epochs; "
                f"stopped by the time budget at {result.minutes:.1f} min)"
            )
        print(
            f"validation mean IoU {_score(result.metrics['mean_iou'])} {when} "
            f"(best {result.metric} {_score(result.best_value)} at epoch "
            f"{result.best_epoch}: {result.best_path.name})"
        )
    return 0


# --- stylize --------------------------------------------------------------------------------


def cmd_stylize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.style.files import feature_network, parse_layers, plan_stylize, stylize_files

    plan = plan_stylize(
        args.content, args.style, args.out, trace=args.trace, overwrite=args.overwrite
    )
    style_layers = parse_layers(args.style_layers)
    network = feature_network(
        weights=args.weights,
        download=args.download,
        features=args.features,
        content_layer=args.content_layer,
        style_layers=style_layers,
        pooling=args.pooling,
    )
    with tqdm(total=args.steps, desc="stylize", unit="step", disable=None) as bar:

        def progress(row: object) -> None:
            bar.set_postfix(content=f"{row.content:.4g}", style=f"{row.style:.4g}", refresh=False)
            bar.update(row.step - bar.n)

        report = stylize_files(
            plan,
            network,
            size=args.size,
            steps=args.steps,
            device=_device(args.device),
            progress=progress,
            content_layer=args.content_layer,
            style_layers=style_layers,
            content_weight=args.content_weight,
            style_weight=args.style_weight,
            optimizer=args.optimizer,
            init=args.init,
            lr=args.lr,
            seed=args.seed,
        )
    last = report.result.history[-1]
    height, width = report.size
    print(
        f"wrote {plan.out} ({width}×{height}, {args.steps} {args.optimizer} steps, "
        f"{report.result.evaluations} evaluations, {report.seconds:.1f} s; "
        f"content {last.content:.4g}, style {last.style:.4g})"
    )
    if plan.trace:
        print(f"wrote {plan.trace} ({len(report.result.frames)} frames)")
    return 0


def _add_stylize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stylize", help="render a content image in the style of another (Gatys et al. 2016)"
    )
    p.add_argument("content", help="the content image C")
    p.add_argument("style", help="the style image S")
    p.add_argument("--out", required=True, help="the PNG to write (and OUT_trace.png)")
    p.add_argument("--size", type=int, default=512, help="longer side in pixels (default 512)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    p.add_argument("--content-weight", type=float, default=1.0, help="α (default 1)")
    p.add_argument("--style-weight", type=float, default=1e6, help="β (default 1e6)")
    p.add_argument(
        "--style-layers",
        metavar="L1,L2,...",
        help="style layers (VGG19 default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)",
    )
    p.add_argument("--content-layer", metavar="L", help="content layer (VGG19 default conv4_2)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--lr", type=float, help="step size (default 1 for L-BFGS, 0.02 for Adam)")
    p.add_argument("--init", choices=("content", "noise"), default="content")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise start (default 0)")
    p.add_argument("--pooling", choices=("max", "average"), default="max", help="VGG19's pooling")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="PATH", help="a local torchvision vgg19 state dict")
    source.add_argument(
        "--download", action="store_true", help="fetch torchvision's VGG19 ImageNet weights"
    )
    source.add_argument(
        "--features", metavar="CHECKPOINT", help="use a pixelwise checkpoint's convolutions"
    )
    p.add_argument("--trace", action="store_true", help="also write OUT_trace.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=cmd_stylize)


# --- export ---------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference.export import SUFFIXES, export_model

    source = Path(args.checkpoint)
    out = Path(args.out) if args.out else source.with_suffix(SUFFIXES[args.format])
    model, checkpoint = load_model(source)
    metadata = {
        "class_names": list(checkpoint.class_names),
        "ignore_index": checkpoint.ignore_index,
        "normalisation": checkpoint.normalisation,
        "checkpoint": source.name,
        "epoch": checkpoint.epoch,
    }
    try:
        exported = export_model(
            model,
            out,
            format=args.format,
            example_size=tuple(args.size) if args.size else None,
            opset=args.opset,
            metadata=metadata,
            overwrite=args.overwrite,
        )
    except ImportError as exc:  # the optional onnx package: one line, like other user errors
        raise ValueError(str(exc)) from None
    height, width = exported.example_size
    what = f"onnx, opset {exported.opset}" if exported.opset else "torchscript"
    sizes = (
        "any N, H, W"
        if exported.dynamic
        else f"fixed to 1×{checkpoint.in_channels}×{height}×{width}; omit --size for any size"
    )
    print(f"wrote {exported.path} ({what}; input 'images' (N, C, H, W): {sizes})")
    return 0


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a checkpoint's model as ONNX or TorchScript (any input size)"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument(
        "--out", metavar="PATH", help="the file to write (default: the checkpoint's .onnx/.ts)"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="trace at this size (default: one that keeps H and W free in the export)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelwise", description="Semantic segmentation, from patch classifiers to DeepLab."
    )
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "models", help="list the registered models with parameter counts and size divisors"
    )
    p.add_argument("--num-classes", type=int, default=2, metavar="K")
    p.add_argument("--in-channels", type=int, default=3, metavar="C")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "shapes", help="print each stage's tensor shape and receptive field for an input size"
    )
    p.add_argument("model")
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"))
    p.add_argument("--num-classes", type=int, default=2, metavar="K")
    p.add_argument("--in-channels", type=int, default=3, metavar="C")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a model option, e.g. -o padding=valid",
    )
    p.add_argument(
        "--no-receptive-field",
        action="store_true",
        help="skip measuring receptive fields (faster for large models and sizes)",
    )
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser(
        "weightmap", help="write the U-Net weight map of a label image as a colour PNG"
    )
    p.add_argument(
        "mask", help="instance labels (0 = background), or a semantic mask with --semantic"
    )
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument(
        "--semantic",
        action="store_true",
        help="objects are connected components of a semantic mask",
    )
    p.add_argument(
        "--w0", type=float, default=10.0, help="border weight w0 (default 10, as in the paper)"
    )
    p.add_argument("--sigma", type=float, default=5.0, help="border width σ in pixels (default 5)")
    p.add_argument("--border", choices=("background", "everywhere"), default="background")
    p.add_argument("--colormap", choices=("viridis", "jet", "gray"), default="viridis")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_weightmap)

    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a data folder: per-class IoU, accuracy, Dice, boundary F1",
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument("data", help="the data folder")
    _add_data_flags(p)
    p.add_argument(
        "--split",
        choices=("val", "train", "all", "test"),
        default="val",
        help="val/train: as the training run split the data (default val); all: every sample "
        "(a separate test folder); CamVid: the split folder (val, train or test)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON only")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict", help="write index, colour and overlay PNGs of a checkpoint's predictions"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument(
        "--out", required=True, help="the folder to write <stem>_mask/_color/_overlay.png"
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument(
        "--tile",
        type=int,
        default=512,
        help="tile size for images larger than it (default 512; overlap-tile for valid U-Net)",
    )
    p.add_argument(
        "--tta", action="store_true", help="average over flips and 90° rotations (8 transforms)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the network in PyTorch (default) or ONNX Runtime (CPU; faster for U-Net, "
        "needs pixelwise[export]; exports in memory on the first image)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "info", help="what a checkpoint holds: model, parameters, classes, metrics, config"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "check-data",
        help="read a whole data set and report class frequencies, sizes and the first problem",
    )
    p.add_argument("source", metavar="CONFIG.toml|DATA", help="a run config or a data folder")
    _add_data_flags(p)
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser(
        "train", help="train a model from a run config (default: U-Net on the built-in data)"
    )
    p.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.toml",
        help="the run config; omitted: the built-in job, or the checkpoint's config with --resume",
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
    p.set_defaults(func=cmd_train)

    _add_stylize_parser(sub)
    _add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"pixelwise: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `pixelwise info ... | head`): stop quietly, as cat does.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream
        return 0


if __name__ == "__main__":
    sys.exit(main())
