"""``pixelwise stylize``: neural style transfer (Gatys et al. 2016) of two image files.

The library is imported inside the command, so that building the parser does not import torch.
"""

from __future__ import annotations

import argparse

from pixelwise.cli._format import device


def cmd_stylize(args: argparse.Namespace) -> int:
    # At call time: start-up without torch.
    from tqdm import tqdm

    from pixelwise.style.files import feature_network, parse_layers, plan_stylize, stylize_files

    plan = plan_stylize(
        args.content, args.style, args.out, trace=args.trace, overwrite=args.overwrite
    )
    style_layers = parse_layers(args.style_layers)
    network = feature_network(
        network=args.network,
        transform=args.transform,
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
            device=device(args.device),
            progress=progress,
            content_layer=args.content_layer,
            style_layers=style_layers,
            content_weight=args.content_weight,
            style_weight=network.style_weight if args.style_weight is None else args.style_weight,
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``stylize``."""
    p = sub.add_parser(
        "stylize", help="render a content image in the style of another (Gatys et al. 2016)"
    )
    p.add_argument("content", help="the content image C")
    p.add_argument("style", help="the style image S")
    p.add_argument("--out", required=True, help="the PNG to write (and OUT_trace.png)")
    p.add_argument("--size", type=int, default=512, help="longer side in pixels (default 512)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    p.add_argument("--content-weight", type=float, default=1.0, help="α (default 1)")
    p.add_argument(
        "--style-weight",
        type=float,
        help="β (default: the feature network's: 1e6, 1e7 for random VGG19, 1e8 with softmax)",
    )
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
    p.add_argument(
        "--network",
        choices=("vgg19", "vgg19-random", "efficientnet-lite0"),
        help="the feature network: efficientnet-lite0 (ImageNet weights of "
        "pixelwise[pretrained], no download; the default where installed), vgg19-random "
        "(seeded random weights; the default otherwise), vgg19 (ImageNet weights from "
        "--weights or --download)",
    )
    p.add_argument(
        "--transform",
        choices=("none", "softmax"),
        help="softmax: smooth each layer's responses (SWAG, Wang et al. 2021); default none",
    )
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
