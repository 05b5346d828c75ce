"""The feature networks of ``pixelwise stylize`` side by side: one grid, one JSON.

Rows are content/style pairs of scikit-image's sample photographs; columns the content, the
style, and the result of each run ``NETWORK:TRANSFORM:STYLE_WEIGHT`` (the same size, steps,
optimiser and start for all). Nothing is downloaded: ``vgg19-random`` is VGG19 with seeded
random weights, ``efficientnet-lite0`` the ImageNet weights of ``pixelwise[pretrained]``.

    .venv/bin/python benchmarks/style_grid.py            # writes docs/style_grid.png

Writes ``--grid`` (default ``docs/style_grid.png``) and ``OUT/style_grid.json`` (seconds and
final loss terms per run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import _runs
from pixelwise.style import stylize
from pixelwise.style.files import feature_network

PAIRS = (("chelsea", "immunohistochemistry"), ("astronaut", "hubble_deep_field"))
RUNS = (
    "vgg19-random:none:1e7",
    "efficientnet-lite0:none:1e6",
    "efficientnet-lite0:softmax:1e8",
)


def sample(name: str, side: int) -> torch.Tensor:
    """A scikit-image sample photograph, longer side ``side``, as (3, H, W) in [0, 1]."""
    from skimage import data, transform

    image = getattr(data, name)()[..., :3]
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (round(height * scale), round(width * scale))
    resized = transform.resize(image, size, anti_aliasing=True)
    return torch.tensor(resized, dtype=torch.float32).permute(2, 0, 1)


def tile(image: torch.Tensor, side: int, label: str) -> Image.Image:
    """``image`` centred on a ``side``-square white tile with ``label`` under it."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    canvas = Image.new("RGB", (side, side + 14), "white")
    canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    ImageDraw.Draw(canvas).text((2, side + 1), label, fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192, help="longer side (default 192)")
    parser.add_argument("--steps", type=int, default=150, help="L-BFGS steps (default 150)")
    parser.add_argument("--runs", default=",".join(RUNS), help="NETWORK:TRANSFORM:BETA,...")
    parser.add_argument("--grid", type=Path, default=Path("docs/style_grid.png"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/style_grid"))
    args = parser.parse_args(argv)
    runs = [run.split(":") for run in args.runs.split(",")]
    torch.manual_seed(0)
    rows, report = [], {"size": args.size, "steps": args.steps, "runs": []}
    for content_name, style_name in PAIRS:
        content, style = sample(content_name, args.size), sample(style_name, args.size)
        row = [tile(content, args.size, content_name), tile(style, args.size, style_name)]
        for network_name, transform, beta in runs:
            network = feature_network(network=network_name, transform=transform)
            start = time.perf_counter()
            result = stylize(content, style, network, style_weight=float(beta), steps=args.steps)
            seconds = time.perf_counter() - start
            last = result.history[-1]
            label = f"{network_name} {transform} {float(beta):.0e}"
            row.append(tile(result.image, args.size, label))
            report["runs"].append(
                {
                    "content": content_name,
                    "style": style_name,
                    "network": network_name,
                    "transform": transform,
                    "style_weight": float(beta),
                    "seconds": round(seconds, 1),
                    "content_term": last.content,
                    "style_term": last.style,
                }
            )
            print(f"{content_name}/{style_name} {label}: {seconds:.0f} s", file=sys.stderr)
        rows.append(row)
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * len(rows[0]), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            grid.paste(picture, (c * width, r * height))
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.grid.with_name(f".{args.grid.name}.tmp")
    grid.save(tmp, format="PNG")
    tmp.replace(args.grid)
    path = _runs.write_json(args.out / "style_grid.json", report)
    print(f"wrote {args.grid} and {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
