"""``pixelwise serve``: a checkpoint behind an HTTP API and a web page (``pixelwise[serve]``)."""

from __future__ import annotations

import argparse
import ipaddress

from pixelwise.cli._format import device

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # at call time: start-up without torch or the optional extra
        import uvicorn

        from pixelwise.serve import ServeSettings, create_app, load_for_serving
    except ImportError as exc:
        raise ValueError(
            f"pixelwise serve needs the serve extra ({exc.name} is missing): "
            "pip install 'pixelwise[serve]'"
        ) from None
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    settings = ServeSettings(
        max_bytes=int(args.max_upload_mb * 1024 * 1024),
        workers=args.workers,
        queue=args.queue,
        tile=args.tile,
    )
    import torch

    # Each worker's operators get an equal share of the cores, not all of them each.
    torch.set_num_threads(max(1, torch.get_num_threads() // settings.workers))
    segmenter = load_for_serving(args.checkpoint, device(args.device))
    app = create_app(segmenter, settings, name=str(args.checkpoint))
    where = "localhost only" if _is_loopback(args.host) else "reachable from the network"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"serving {args.checkpoint} on http://{host}:{args.port}/ ({where}; "
        f"{settings.workers} worker(s) of {torch.get_num_threads()} thread(s), "
        f"{settings.queue} waiting at most, "
        f"uploads up to {args.max_upload_mb:g} MB)"
    )
    if where == "localhost only":
        print("  other machines cannot reach it; --host 0.0.0.0 serves the network")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``."""
    p = sub.add_parser(
        "serve", help="serve a checkpoint: an HTTP API and a web page to drop images on"
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt or .safetensors)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers", type=int, default=1, help="predictions run at once (threads; default 1)"
    )
    p.add_argument(
        "--queue", type=int, default=8, help="requests waiting at most; more get 503 (default 8)"
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=50,
        help="largest request body in MB; larger gets 413 (default 50)",
    )
    p.add_argument("--tile", type=int, default=512, help="tile side for larger images (512)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=cmd_serve)
