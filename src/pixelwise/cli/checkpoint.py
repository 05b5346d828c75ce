"""``pixelwise evaluate``, ``predict``, ``info`` and ``export``: what a checkpoint does.

Each command loads the checkpoint as a :class:`pixelwise.inference.segmenter.Segmenter`,
which carries its normalisation, class names and ignore index. The library is imported inside
the commands, so that building the parser does not import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pixelwise.cli._format import (
    bar_progress,
    config_text,
    device,
    print_metrics,
    score,
    without_nan,
)
from pixelwise.cli.data import add_data_flags, data_flags


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.tta is not None and not args.instances:
        flag = "--tta" if args.tta else "--no-tta"
        raise ValueError(f"{flag} goes with --instances: the per-pixel scores come from one pass")
    # At call time: start-up without torch.
    from tqdm import tqdm

    from pixelwise.data import check_dataset
    from pixelwise.data.build import check_classes, evaluation_dataset, folder_table
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import evaluate_dataset

    segmenter = load_model(args.checkpoint, device=device(args.device))
    checkpoint = segmenter.checkpoint
    table = folder_table(checkpoint.config.get("data") or {}, args.data, **data_flags(args))
    table["channels"] = checkpoint.in_channels
    dataset = evaluation_dataset(table, args.split)
    check_classes(dataset, checkpoint.num_classes, args.data)
    with tqdm(total=len(dataset), desc="check", unit="image", leave=False, disable=None) as bar:
        check_dataset(dataset, progress=bar_progress(bar))  # every bad file named, up front
    segmenter.ignore_index = dataset.ignore_index  # the masks' own unlabelled value
    if args.instances:
        return _evaluate_instances(args, segmenter, dataset)
    with tqdm(total=len(dataset), desc="evaluate", unit="image", disable=None) as bar:
        result = evaluate_dataset(segmenter, dataset, progress=bar_progress(bar))
    if args.json:
        print(json.dumps(without_nan(result), indent=2))
        return 0
    print(
        f"{checkpoint.model_name} (epoch {checkpoint.epoch}) on {args.data}, "
        f"split {args.split}: {result['num_images']} images"
    )
    print_metrics(result)
    return 0


def _evaluate_instances(args: argparse.Namespace, segmenter: object, dataset: object) -> int:
    """``evaluate --instances``: object scores against the instance labels."""
    from tqdm import tqdm

    from pixelwise.inference.instances import evaluate_instances

    with tqdm(total=len(dataset), desc="evaluate", unit="image", disable=None) as bar:
        result = evaluate_instances(segmenter, dataset, tta=args.tta, progress=bar_progress(bar))
    if args.json:
        print(json.dumps(without_nan(result), indent=2))
        return 0
    checkpoint = segmenter.checkpoint
    print(
        f"{checkpoint.model_name} (epoch {checkpoint.epoch}) on {args.data}, split "
        f"{args.split}: {result['num_images']} images, {result['objects']} objects, "
        f"{result['predicted_objects']} predicted"
    )
    print(f"instances: {_instances_text(result['settings'], segmenter.class_names)}")
    kept = result["touching_kept_apart"]
    print(f"Data Science Bowl score  {score(result['dsb_score'])}")
    print(f"F1 at IoU 0.5            {score(result['f1'])}")
    print(f"merges / splits          {result['merges']} / {result['splits']}")
    print(
        f"touching pairs kept apart {score(kept)} ({result['touching_separated']} of "
        f"{result['touching_separated'] + result['touching_merged']} detected pairs; "
        f"{result['touching_pairs']} in all)"
    )
    return 0


def _optimized(args: argparse.Namespace) -> object:
    """The checkpoint's Segmenter with its network optimised once (not per image) and on the
    chosen backend (ONNX Runtime exports once per tile shape)."""
    # At call time: start-up without torch.
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference.optimize import optimize_for_inference
    from pixelwise.inference.runtime import with_backend

    if args.backend == "onnxruntime" and args.device == "cuda":
        raise ValueError("--backend onnxruntime runs on the CPU: drop --device cuda")
    where = "cpu" if args.backend == "onnxruntime" else device(args.device)
    segmenter = load_model(args.checkpoint, device=where)
    try:
        network = optimize_for_inference(segmenter.network, inplace=True)
        return segmenter.with_network(with_backend(network, args.backend))
    except ImportError as exc:  # the optional package: one line, like other user errors
        raise ValueError(str(exc)) from None


def _images_of_shard(sources: list[str], shard: tuple[int, int] | None) -> list[Path]:
    """The images named or in the folders ``sources``; with ``shard`` (I, N) only shard I's."""
    from pixelwise.inference import collect_images, shard_images

    images = collect_images(sources)
    if shard is None:
        return images
    chosen = shard_images(images, *shard)
    print(f"shard {shard[0]}/{shard[1]}: {len(chosen)} of {len(images)} image(s)")
    return chosen


def cmd_predict(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from tqdm import tqdm

    from pixelwise._checks import one_line
    from pixelwise.inference import (
        instance_plan,
        instance_settings,
        mask_encoding,
        parse_shard,
        plan_outputs,
        predict_file,
    )
    from pixelwise.report.palette import check_alpha

    check_alpha(args.alpha)
    shard = parse_shard(args.shard) if args.shard is not None else None
    segmenter = _optimized(args)  # the checkpoint is checked first
    images = _images_of_shard(args.images, shard)
    encoding = mask_encoding(segmenter, args.mask_format)  # refused before anything is written
    tta = args.tta or False
    instances = None
    if args.instances:  # the checkpoint's choice, or --tta / --no-tta's
        instances, tta = instance_plan(instance_settings(segmenter), args.tta)
    plan = plan_outputs(
        images,
        args.out,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        instances=args.instances,
    )
    if instances is not None:
        print(f"instances: {_instances_text(instances, segmenter.class_names)}")
    failed = []
    for image, paths in tqdm(plan, desc="predict", unit="image", disable=None):
        with tqdm(desc=image.name, unit="tile", leave=False, disable=None) as bar:

            def progress(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                predict_file(
                    segmenter,
                    image,
                    paths,
                    alpha=args.alpha,
                    tile=args.tile,
                    tta=tta,
                    progress=progress,
                    mask_format=args.mask_format,
                    instances=instances,
                )
            except (ValueError, OSError) as problem:  # named; the other images go on
                if len(plan) == 1:
                    raise
                line = str(problem) if str(image) in str(problem) else f"image {image}: {problem}"
                failed.append(one_line(line))
                tqdm.write(f"pixelwise: error: {failed[-1]}", file=sys.stderr)
    return _report_predictions(args.out, len(plan), len(failed), encoding, instances=args.instances)


def _instances_text(settings: dict, class_names: Sequence[str] | None = None) -> str:
    """How the objects are made, and where the settings come from, in one line; the seed
    class by its name when ``class_names`` are given (index K after K classes: the predicted
    distance map)."""
    interior = settings.get("interior_class")
    named = class_names is not None and isinstance(interior, int) and interior < len(class_names)
    seed = f"{class_names[interior]} class" if named else "interior class"
    if class_names is not None and interior == len(class_names):
        seed = "predicted distance map"
    if interior is None:
        seeds = "distance peaks"
    elif settings.get("seeds") == "peaks":
        seeds = f"peaks of the {seed}'s regions"
    elif settings.get("seeds") == "hmaxima":
        seeds = f"h-maxima of the {seed}'s regions, h = {settings.get('h', 2.0):g}"
    else:
        seeds = seed
    how = (
        f"{settings['method']} (seeds: {seeds})"
        if settings["method"] == "watershed"
        else "components"
    )
    source = (
        f"chosen on the validation split (score {settings['score']:.3f})"
        if settings.get("score") is not None
        else "defaults: the checkpoint records none (it was not trained on instance labels)"
    )
    transforms = settings.get("tta") or ()
    averaged = f", predicted as the mean of {len(transforms)} flipped or rotated copies"
    averaged = averaged if transforms else ""
    return (
        f"{how}, threshold {settings['threshold']:g}, minimum size {settings['min_size']}"
        f"{averaged}; {source}"
    )


def _recorded_instances_text(instances: object, class_names: Sequence[str] | None = None) -> str:
    """What ``pixelwise info`` says of the checkpoint's recorded instance post-processing."""
    if not instances:
        return "none recorded (not trained on instance labels)"
    try:
        return _instances_text(dict(instances), class_names)
    except (KeyError, TypeError, ValueError):
        return "a damaged record (predict --instances refuses it; train again)"


def _report_predictions(
    out: str, planned: int, failed: int, encoding: object, *, instances: bool = False
) -> int:
    """Print what ``predict`` wrote (and what its masks hold); the exit status."""
    from pixelwise.inference import INSTANCE_KINDS, OUTPUT_KINDS  # at call time

    written = OUTPUT_KINDS + (INSTANCE_KINDS if instances else ())
    kinds = ", ".join(f"<stem>_{kind}.png" for kind in written)
    print(f"wrote {planned - failed} image(s) × {len(written)} files to {out} ({kinds})")
    held = (
        "class indices"
        if encoding is None
        else (f"mask values of the training data ({encoding.kind} encoding)")
    )
    print(f"masks: {held}")
    if failed:
        print(
            f"pixelwise: error: {failed} of {planned} image(s) not predicted "
            "(each named above); fix them and rerun with --skip-existing",
            file=sys.stderr,
        )
        return 1
    return 0


def _scale_text(scale: float) -> str:
    if scale == 1:
        return "1 (images as they are)"
    return f"{scale:g} (images resized by {scale:g} in, logits back to the image size)"


def cmd_info(args: argparse.Namespace) -> int:
    from pixelwise._toml import flatten  # at call time: start-up without torch
    from pixelwise.engine.checkpoint import checkpoint_summary, load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    summary = checkpoint_summary(checkpoint)
    norm = summary["normalisation"]
    model = summary["model"] or f"{summary['model_class']} (not in the registry)"
    counted = "" if summary["parameters_of"] == "model" else " (in the saved weights)"
    rows = (
        ("checkpoint", args.checkpoint),
        ("model", model),
        ("model args", ", ".join(f"{k}={v!r}" for k, v in checkpoint.model_args.items())),
        ("parameters", f"{summary['parameters']:,}{counted}"),
        ("classes", f"{summary['num_classes']}: " + ", ".join(summary["class_names"])),
        ("ignore_index", summary["ignore_index"]),
        ("normalisation", f"mean {norm['mean']}, std {norm['std']}" if norm else "none"),
        ("input scale", _scale_text(summary["input_scale"])),
        ("epoch", summary["epoch"]),
        ("training state", "saved (resumable)" if summary["resumable"] else "none"),
        ("objects", _recorded_instances_text(checkpoint.instances, summary["class_names"])),
    )
    for label, value in rows:
        print(f"{label.ljust(15)}{value}")
    print("metrics" + ("" if checkpoint.metrics else "        none"))
    metrics = list(flatten(checkpoint.metrics).items())
    width = max((len(key) for key, _ in metrics), default=0)
    for key, value in metrics:
        print(f"  {key.ljust(width)}  {score(value) if isinstance(value, float) else value}")
    print("config")
    print(config_text(checkpoint.config))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from pixelwise._files import check_output
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference.export import SUFFIXES, export_model

    source = Path(args.checkpoint)
    out = Path(args.out) if args.out else source.with_suffix(SUFFIXES[args.format])
    # The checkpoint and its .pt / .safetensors twin are inputs: never written over.
    check_output(
        out,
        [source, source.with_suffix(".pt"), source.with_suffix(".safetensors")],
        overwrite=args.overwrite,
        kind="input checkpoint",
        fix="choose another --out",
        elsewhere="choose another --out",
    )
    segmenter = load_model(source)
    try:
        exported = export_model(
            segmenter,
            out,
            format=args.format,
            example_size=tuple(args.size) if args.size else None,
            opset=args.opset,
            metadata={"checkpoint": source.name, "epoch": segmenter.checkpoint.epoch},
            overwrite=args.overwrite,
        )
    except ImportError as exc:  # the optional onnx package: one line, like other user errors
        raise ValueError(str(exc)) from None
    height, width = exported.example_size
    what = f"onnx, opset {exported.opset}" if exported.opset else "torchscript"
    sizes = (
        "any N, H, W"
        if exported.dynamic
        else f"fixed to 1×{segmenter.in_channels}×{height}×{width}; omit --size for any size"
    )
    print(f"wrote {exported.path} ({what}; input 'images' (N, C, H, W): {sizes})")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a data folder: per-class IoU, accuracy, Dice, boundary F1",
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument("data", help="the data folder")
    add_data_flags(p)
    p.add_argument(
        "--split",
        choices=("val", "train", "all", "test"),
        default="val",
        help="val/train: as the training run split the data (default val); all: every sample "
        "(a separate test folder); CamVid: the split folder (val, train or test)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON only")
    p.add_argument(
        "--instances",
        action="store_true",
        help="score objects against instance labels: Data Science Bowl score, F1 at IoU 0.5, "
        "merges, splits, touching pairs kept apart",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --instances: predict as the mean of the 8 flips and 90° rotations; --no-tta: "
        "one pass (default: what the checkpoint chose on its validation split)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="write mask, colour and overlay PNGs of a checkpoint's predictions"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument(
        "--out", required=True, help="the folder to write <stem>_mask/_color/_overlay.png"
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out images whose outputs all exist (e.g. a rerun after fixing a bad image)",
    )
    p.add_argument(
        "--mask-format",
        choices=("data", "index"),
        default="data",
        help="<stem>_mask.png in the training data's mask encoding, ready for a masks/ folder "
        "(data, the default: e.g. 0/255, palette colours) or as class indices (index); "
        "class indices when the checkpoint declares no encoding",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument(
        "--instances",
        action="store_true",
        help="also write <stem>_instances.png (16-bit, 0 background, 1..N one object each) and "
        "<stem>_contours.png, with the post-processing the checkpoint records",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=512,
        help="tile size for images larger than it (default 512; overlap-tile for valid U-Net)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over flips and 90° rotations (8 transforms); --no-tta: one pass (default: "
        "one pass, but with --instances what the checkpoint chose on its validation split)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="predict only shard I of N (0 <= I < N), chosen from each file name alone, so N "
        "jobs (a job array, xargs -P, Ray, Dask) together predict every image exactly once",
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


def _add_export(sub: argparse._SubParsersAction) -> None:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate``, ``predict``, ``info`` and ``export``."""
    _add_evaluate(sub)
    _add_predict(sub)
    p = sub.add_parser(
        "info", help="what a checkpoint holds: model, parameters, classes, metrics, config"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.set_defaults(func=cmd_info)
    _add_export(sub)
