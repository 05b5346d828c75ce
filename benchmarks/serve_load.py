"""Benchmark: ``pixelwise serve`` under load on loopback — latency, throughput, errors.

Saves a checkpoint (``--checkpoint`` uses yours instead: a U-Net, base width 16, depth 4,
three classes, RGB, random weights — latency does not depend on the weights), starts the real
command (``pixelwise serve CKPT --port P --workers W``) in a subprocess for each ``--workers``
value, waits for ``/health``, then sends ``--requests`` POST /predict requests of one PNG
(``--image``, default a 256 × 256 random RGB picture), ``--concurrency`` at a time, from
client threads (httpx). Reported per server: errors (any status but 200), latency p50 / p95 /
p99 (waiting behind the other clients included) and requests per second over the whole run;
beside them, in the same run, the in-process prediction of the same image
(:func:`pixelwise.inference.tiling.predict`, the call the server makes), so that the wall time
per request over it is what the HTTP layer, decoding and encoding add.

    .venv/bin/python benchmarks/serve_load.py --requests 200 --concurrency 8 --workers 1 2

Writes ``OUT/serve_load.json`` (default ``benchmarks/results/serve_load/``).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import _runs
from pixelwise.engine.checkpoint import load_model, save_checkpoint
from pixelwise.inference.optimize import optimize_for_inference
from pixelwise.inference.tiling import predict as predict_tiled
from pixelwise.models import create_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"num_classes": 3, "in_channels": 3, "depth": 4, "base_width": 16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="serve this checkpoint instead")
    parser.add_argument("--image", type=Path, help="the image sent (default 256² random RGB)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load")
    args = parser.parse_args(argv)
    bad = [
        f"--{name} must be >= 1, got {getattr(args, name)}"
        for name in ("requests", "concurrency")
        if getattr(args, name) < 1
    ] + [f"--workers must be >= 1, got {w}" for w in args.workers if w < 1]
    if args.image is not None and not args.image.is_file():
        bad.append(f"--image {args.image} must be an existing file")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        bad.append(f"--checkpoint {args.checkpoint} must be an existing file")
    if bad:
        parser.error("; ".join(bad))
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def in_process(checkpoint: Path, body: bytes, repeats: int = 20) -> dict:
    """Median seconds of the prediction the server makes, without HTTP, decode or encode."""
    segmenter = load_model(checkpoint)
    segmenter = segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))
    pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    predict_tiled(segmenter, image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_tiled(segmenter, image)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "repeats": repeats}


def load(url: str, body: bytes, requests: int, concurrency: int) -> dict:
    import httpx

    def one(client: httpx.Client) -> tuple[int, float]:
        start = time.perf_counter()
        answer = client.post(url, content=body, headers={"Content-Type": "image/png"})
        return answer.status_code, time.perf_counter() - start

    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(timeout=120, limits=limits) as client:
        one(client)  # warm-up, not counted
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda _: one(client), range(requests)))
        wall = time.perf_counter() - start
    latencies = [s for _, s in results]
    statuses = [code for code, _ in results]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": sum(code != 200 for code in statuses),
        "statuses": {str(c): statuses.count(c) for c in sorted(set(statuses))},
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "requests_per_s": requests / wall,
        "wall_s": wall,
    }


def serve(checkpoint: Path, workers: int, queue: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "pixelwise", "serve", str(checkpoint), "--port", str(port)]
    command += ["--workers", str(workers), "--queue", str(queue), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pixelwise serve exited: {process.stderr.read().decode()[-500:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("pixelwise serve did not answer /health within 120 s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = save_checkpoint(
                Path(folder) / "unet.pt",
                model=create_model("unet", **MODEL),
                class_names=("background", "object", "edge"),
                ignore_index=255,
                normalisation=None,
                config={},
                epoch=0,
                metrics={},
            )
        if args.image is not None:
            body = args.image.read_bytes()
        else:
            pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            body = buffer.getvalue()
        baseline = in_process(checkpoint, body)
        servers = {}
        for workers in args.workers:
            # Room for every client to wait: a load test of latency, not of refusals.
            process, base = serve(checkpoint, workers, queue=args.concurrency)
            try:
                servers[f"workers={workers}"] = load(
                    f"{base}/predict", body, args.requests, args.concurrency
                )
            finally:
                process.terminate()
                process.wait(30)
    for figures in servers.values():
        # Latency includes waiting behind the other clients; the cost of one request is the
        # wall time per request, against the prediction alone.
        figures["seconds_per_request"] = figures["wall_s"] / figures["requests"]
        figures["per_request_over_in_process"] = (
            figures["seconds_per_request"] / baseline["median_s"]
        )
    report = {
        "benchmark": "serve_load",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "checkpoint": str(args.checkpoint) if args.checkpoint else f"unet {MODEL}",
        "image_bytes": len(body),
        "in_process": baseline,
        "servers": servers,
        "cpu_count": os.cpu_count(),
    }
    path = _runs.write_json(args.out / "serve_load.json", report)
    print(f"in process: {1000 * baseline['median_s']:.1f} ms per image (median)")
    for label, f in servers.items():
        print(
            f"{label}: {f['requests']} requests, {f['concurrency']} at a time, errors "
            f"{f['errors']}, p50 {1000 * f['p50_s']:.0f} ms, p95 {1000 * f['p95_s']:.0f} ms, "
            f"{f['requests_per_s']:.1f} requests/s"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
