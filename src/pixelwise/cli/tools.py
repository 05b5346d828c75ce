"""``pixelwise models``, ``shapes`` and ``weightmap``: the models and the U-Net weight map.

torch and the models are imported inside the commands, so that building the parser (and
``--help``) stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pixelwise.cli._format import count_parameters, message, options


def _build_on_meta(name: str, **kwargs: object) -> object:
    # At call time: start-up without torch. Building on the meta device allocates nothing, so
    # even the 134M-parameter FCN is listed instantly.
    import torch

    from pixelwise.models import create_model

    with torch.device("meta"):
        return create_model(name, **kwargs)


def cmd_models(args: argparse.Namespace) -> int:
    from pixelwise.models import get_entry, list_models  # at call time: start-up without torch

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


def _invalid_size(model: object, height: int, width: int) -> str | None:
    """The line that refuses a size a valid U-Net does not accept; None when both fit."""
    if not hasattr(model, "is_valid_input_size"):
        return None
    for axis, n in (("height", height), ("width", width)):
        if not model.is_valid_input_size(n):
            return model.describe_input_size(n, axis)
    return None


def _check_size(size: list[int]) -> tuple[int, int]:
    """``--size H W``: both >= 1 and H × W within the image pixel limit (the trace runs an
    image of that size through the network)."""
    from pixelwise._checks import check_positive_int  # at call time: start-up without torch
    from pixelwise.data._io import max_pixels

    height, width = (
        check_positive_int(f"--size {axis}", n) for axis, n in zip("HW", size, strict=True)
    )
    if height * width > max_pixels():
        raise ValueError(
            message(
                "--size",
                f"have at most {max_pixels():,} pixels (the image size limit)",
                f"{height}×{width} = {height * width:,}",
                "trace a smaller size: the stages' shapes scale with it",
            )
        )
    return height, width


def cmd_shapes(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from pixelwise.models import create_model
    from pixelwise.nn.trace import trace_stages

    height, width = _check_size(args.size)
    model = create_model(
        args.model,
        num_classes=args.num_classes,
        in_channels=args.in_channels,
        **options(args.option),
    )
    refusal = _invalid_size(model, height, width)
    if refusal is not None:  # an error like any other: one line on stderr, status 2
        raise ValueError(f"--size: {refusal}")
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
    # At call time: start-up without torch.
    from pixelwise._files import check_output
    from pixelwise.data._io import read_labels
    from pixelwise.report.weight_map import describe_labels, save_weight_map_png

    out = check_output(args.out, [], overwrite=args.overwrite, elsewhere="choose another --out")
    w = save_weight_map_png(
        args.mask,
        out,
        semantic=args.semantic,
        w0=args.w0,
        sigma=args.sigma,
        border=args.border,
        colormap=args.colormap,
    )
    print(describe_labels(read_labels(Path(args.mask), "mask file"), semantic=args.semantic))
    print(
        f"wrote {out}  ({w.shape[0]}×{w.shape[1]}, w min {w.min():.3f} max {w.max():.3f} mean {w.mean():.3f})"
    )
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the registered models with parameter counts and size divisors"
    )
    p.add_argument("--num-classes", type=int, default=2, metavar="K")
    p.add_argument("--in-channels", type=int, default=3, metavar="C")
    p.set_defaults(func=cmd_models)


def _add_shapes(sub: argparse._SubParsersAction) -> None:
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


def _add_weightmap(sub: argparse._SubParsersAction) -> None:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``models``, ``shapes`` and ``weightmap``."""
    _add_models(sub)
    _add_shapes(sub)
    _add_weightmap(sub)
