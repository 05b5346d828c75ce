"""Benchmark: CPU inference of pixelwise's U-Net against MONAI and segmentation_models_pytorch.

Everything runs in one invocation, on one machine, with the same torch threads, in float32;
warm-up calls are excluded and repeats are interleaved (A, B, C, A, B, C, ...) so that load
from other processes hits every contender alike. The load average is recorded.

1. Forward throughput at 1×1×512×512, batch 1 and 4: pixelwise ``unet`` (base width 64,
   depth 4, same padding) optimised by :func:`pixelwise.inference.optimize.optimize_for_inference`
   and run by ONNX Runtime (:func:`pixelwise.inference.runtime.onnxruntime_model`, exported
   in the untimed warm-up), the same model as plain NCHW PyTorch (eval,
   ``torch.inference_mode``), smp's ``Unet("resnet34")`` and MONAI's ``BasicUNet``.
   Images/s, achieved GFLOP/s (FLOPs counted once per model with
   ``torch.utils.flop_counter.FlopCounterMode``) and its fraction of the machine's measured
   peak (a 2048² sgemm and a channels-last 3×3 convolution, timed in the same rounds).
   ``--extras`` adds what was tried and not adopted: ``torch.compile`` (inductor, freezing).
2. Tiled prediction of a 2048² image (tile 512, overlap 0.25, Gaussian blending, 4 tiles per
   batch): :func:`pixelwise.inference.tiling.predict` with the optimised model and with the
   ONNX Runtime model, against ``monai.inferers.sliding_window_inference`` with the model as
   MONAI users run it. Each measurement is a fresh process (``--child``), so its peak RSS
   (``VmHWM``) is its own; a baseline process that only imports torch and pixelwise and
   builds the model is measured beside them. Set-up (optimising, exporting, one warm-up
   batch) is recorded apart from the timed prediction.
3. The same at 8192² for memory (``--part3-repeats``, 1 by default: tens of minutes on two
   cores at full width), PyTorch path and MONAI.

    .venv/bin/python benchmarks/inference.py [--threads 2] [--repeats 5] [--parts 1,2,3]
        [--part3-repeats 1] [--no-extras] [--out benchmarks/results/inference.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _peak import load_average, peak_kernels, seconds, summarise_peak
from pixelwise._files import write_json_atomic
from pixelwise.inference.optimize import optimize_for_inference
from pixelwise.inference.runtime import onnxruntime_model
from pixelwise.models import create_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "inference.json"
UNET = {"num_classes": 2, "in_channels": 1, "base_width": 64, "depth": 4, "padding": "same"}
SIZE, BATCHES = 512, (1, 4)
TILE, OVERLAP, TILE_BATCH = 512, 0.25, 4
TILED_SIZES = {2: 2048, 3: 8192}
TILED_MODES = ("tiled-pixelwise", "tiled-pixelwise-onnxruntime", "tiled-monai")
PART3_MODES = ("tiled-pixelwise", "tiled-monai")
EXTRA_TILED_MODE = "tiled-monai-optimised"  # MONAI's tiler with pixelwise's optimised model
MIB = 2**20
PLAIN, OPTIMISED = "pixelwise_plain", "pixelwise_optimised"
ONNXRUNTIME = "pixelwise_onnxruntime"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, parts 1-2 (>= 5)")
    parser.add_argument("--part3-repeats", type=int, default=1, help="runs each in part 3")
    parser.add_argument("--parts", default="1,2,3", help="comma-separated parts (default 1,2,3)")
    parser.add_argument("--no-extras", dest="extras", action="store_false", help="skip extras")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result path")
    parser.add_argument(
        "--child", choices=(*TILED_MODES, EXTRA_TILED_MODE, "baseline"), help=argparse.SUPPRESS
    )
    parser.add_argument("--size", type=int, default=2048, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}; the median needs several runs")
    if args.part3_repeats < 1:
        parser.error(f"--part3-repeats must be >= 1, got {args.part3_repeats}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or not parts <= {"1", "2", "3"}:
        parser.error(f"--parts must list parts among 1,2,3, got {args.parts!r}; e.g. --parts 1,2")
    args.parts = sorted(int(p) for p in parts)
    return args


def versions() -> dict[str, str]:
    import monai
    import segmentation_models_pytorch as smp

    import pixelwise

    out = {"python": platform.python_version(), "torch": torch.__version__}
    out |= {"pixelwise": pixelwise.__version__, "monai": monai.__version__}
    out["segmentation_models_pytorch"] = smp.__version__
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def machine(threads: int) -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "platform": platform.platform(),
        "torch_threads": threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def build_unet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("unet", **UNET).eval()


# --------------------------------------------------------------------------- part 1


def peer_models() -> dict[str, nn.Module]:
    """The peers as their users build them: random weights, eval mode."""
    import segmentation_models_pytorch as smp
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    smp_unet = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2)
    monai_unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    return {"smp_unet_resnet34": smp_unet.eval(), "monai_basicunet": monai_unet.eval()}


def compiled(model: nn.Module) -> nn.Module:
    """Extra: inductor with frozen weights (conv + ReLU fusion, pre-packed weights)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    # dynamic=False: one graph per batch size. With automatic dynamic shapes the second batch
    # size recompiles to a graph that fails a stride assertion on channels-last inputs.
    return torch.compile(optimize_for_inference(model), dynamic=False)


def contenders(extras: bool, threads: int) -> tuple[dict[str, Callable], dict[str, float]]:
    """``name -> forward call`` and ``name -> seconds to prepare it`` (optimise, wrap). The
    ONNX Runtime model exports on its first call, in the (untimed, recorded) warm-up."""
    plain = build_unet()
    start = time.perf_counter()
    calls: dict[str, Callable] = {OPTIMISED: optimize_for_inference(plain)}
    setup = {OPTIMISED: time.perf_counter() - start}
    start = time.perf_counter()
    calls[ONNXRUNTIME] = onnxruntime_model(plain, threads=threads)
    setup[ONNXRUNTIME] = time.perf_counter() - start
    calls[PLAIN] = plain
    calls |= peer_models()
    if extras:
        calls["pixelwise_compiled"] = compiled(plain)  # compiles in the warm-up call
    return calls, setup


def count_gflop(model: Callable, x: torch.Tensor) -> float:
    """GFLOP of one forward pass (multiply-add = 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / 1e9


def model_gflop(calls: dict[str, Callable]) -> dict[str, float]:
    """Per-image GFLOP; the optimised, compiled and exported U-Nets are the plain one's."""
    x = torch.rand(1, UNET["in_channels"], SIZE, SIZE)
    counted = {name: count_gflop(calls[name], x) for name in (PLAIN, *peer_models())}
    return {name: counted.get(name, counted[PLAIN]) for name in calls}


def interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call in ``repeats`` rounds, every call once per round in turn."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(seconds(call))
    return times


def warm_up(calls: dict[str, Callable], x: torch.Tensor) -> tuple[dict, dict]:
    """One untimed call each: its seconds (compilation happens here) and its logits."""
    seconds_, outputs = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        outputs[name] = call(x)
        seconds_[name] = time.perf_counter() - start
    return seconds_, outputs


def forward_batch(calls: dict, gflop: dict, batch: int, repeats: int) -> dict:
    """Part 1 at one batch size: warm-up, interleaved rounds with the peak kernels."""
    x = torch.rand(
        batch, UNET["in_channels"], SIZE, SIZE, generator=torch.Generator().manual_seed(1)
    )
    kernels = peak_kernels()
    with torch.inference_mode():
        warm, outputs = warm_up(calls, x)
        rounds = {name: (lambda c=call: c(x)) for name, call in calls.items()}
        rounds |= {name: call for name, (call, _) in kernels.items()}
        load_before = load_average()
        times = interleaved(rounds, repeats)
    peak = summarise_peak(
        {k: times.pop(k) for k in kernels}, {k: f for k, (_, f) in kernels.items()}
    )
    reference = outputs[PLAIN]
    rows = {}
    for name, values in times.items():
        rows[name] = forward_row(values, times[PLAIN], gflop[name] * batch, batch, peak)
        rows[name]["warmup_s"] = warm[name]
        if name.startswith("pixelwise"):
            rows[name]["max_abs_diff_vs_plain"] = (outputs[name] - reference).abs().max().item()
    return {
        "batch": batch,
        "load_before": load_before,
        "load_after": load_average(),
        "peak": peak,
        "models": rows,
    }


def forward_row(
    values: list[float], plain: list[float], gflop: float, batch: int, peak: dict
) -> dict:
    median = statistics.median(values)
    gflops = gflop / median
    return {
        "median_s": median,
        "times_s": values,
        "images_per_s": batch / median,
        "gflop_per_batch": gflop,
        "gflops": gflops,
        "fraction_of_peak": gflops / peak["peak_gflops"],
        "fraction_of_sgemm": gflops / peak["sgemm_2048"]["gflops"],
        "fraction_of_conv3x3_channels_last": gflops / peak["conv3x3_channels_last"]["gflops"],
        # The median of per-round ratios: a load change within a round hits both alike.
        "speedup_vs_plain": statistics.median(p / v for p, v in zip(plain, values, strict=True)),
    }


def part_forward(args: argparse.Namespace) -> dict:
    calls, setup = contenders(args.extras, args.threads)
    gflop = model_gflop(calls)
    batches = [forward_batch(calls, gflop, batch, args.repeats) for batch in BATCHES]
    return {
        "input": [1, UNET["in_channels"], SIZE, SIZE],
        "setup_s": setup,
        "gflop_per_image": gflop,
        "batches": batches,
    }


# --------------------------------------------------------------------------- parts 2 and 3


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def current_rss_mib() -> float:
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries the high-water mark of
    the address space an ``exec`` replaces into it, so a child started by a large parent
    would report the parent's peak."""
    return _status_mib("VmHWM")


def tiled_pixelwise() -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """pixelwise's tiled prediction (imported before any timing)."""
    from pixelwise.inference.tiling import predict

    def run(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        return predict(model, image, tile=TILE, overlap=OVERLAP, batch_size=TILE_BATCH)

    return run


def tiled_monai() -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """MONAI's sliding-window inference, run the way its users run it (imported before any
    timing)."""
    from monai.inferers import sliding_window_inference

    def run(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(
                image[None],  # (1, C, H, W)
                roi_size=(TILE, TILE),
                sw_batch_size=TILE_BATCH,
                predictor=model,
                overlap=OVERLAP,
                mode="gaussian",
            )[0]  # (K, H, W)

    return run


def child(mode: str, size: int, threads: int) -> dict:
    """Run in a fresh process: one tiled prediction (or only the set-up, for the baseline)."""
    torch.set_num_threads(threads)
    model = build_unet()
    if mode == "baseline":
        return {"mode": mode, "peak_rss_mib": peak_rss_mib()}
    predict = tiled_pixelwise() if mode.startswith("tiled-pixelwise") else tiled_monai()
    setup_start = time.perf_counter()
    if mode == "tiled-pixelwise-onnxruntime":
        model = onnxruntime_model(model, threads=threads)
    elif mode != "tiled-monai":
        model = optimize_for_inference(model)
    image = torch.rand(UNET["in_channels"], size, size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        # Warm-up, not timed (for ONNX Runtime: the export at the tile shape).
        model(torch.zeros(TILE_BATCH, UNET["in_channels"], TILE, TILE))
    setup = time.perf_counter() - setup_start
    rss_before = current_rss_mib()
    start = time.perf_counter()
    logits = predict(model, image)
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "seconds": elapsed,
        "megapixels_per_s": size * size / 1e6 / elapsed,
        "setup_s": setup,
        "rss_before_predict_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "image_mib": image.numel() * 4 / MIB,
        "output_mib": logits.numel() * logits.element_size() / MIB,
        "finite": bool(torch.isfinite(logits).all()),
    }


def run_child(mode: str, size: int, threads: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--size",
        str(size),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_tiled(size: int, repeats: int, threads: int, modes: tuple[str, ...]) -> dict:
    """Interleaved fresh-process runs of each tiler; medians, and peak RSS above the baseline."""
    baseline = run_child("baseline", size, threads)["peak_rss_mib"]
    load_before = load_average()
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            runs[mode].append(run_child(mode, size, threads))
    rows = {mode: tiled_row(values, baseline) for mode, values in runs.items()}
    monai = runs["tiled-monai"]
    for mode, values in runs.items():
        ratios = [m["seconds"] / v["seconds"] for m, v in zip(monai, values, strict=True)]
        rows[mode]["speedup_vs_monai"] = statistics.median(ratios)
    return {
        "size": size,
        "tile": TILE,
        "overlap": OVERLAP,
        "batch_size": TILE_BATCH,
        "baseline_peak_rss_mib": baseline,
        "load_before": load_before,
        "load_after": load_average(),
        "tilers": rows,
    }


def tiled_row(runs: list[dict], baseline: float) -> dict:
    seconds_ = [r["seconds"] for r in runs]
    peak = max(r["peak_rss_mib"] for r in runs)
    return {
        "median_s": statistics.median(seconds_),
        "setup_s": statistics.median(r["setup_s"] for r in runs),
        "megapixels_per_s": statistics.median(r["megapixels_per_s"] for r in runs),
        "peak_rss_mib": peak,
        "peak_above_baseline_mib": peak - baseline,
        "runs": runs,
    }


# --------------------------------------------------------------------------- report


def print_forward(part: dict) -> None:
    print(f"\nPart 1: forward, input {part['input']}, medians; peak = max(sgemm, conv3x3 CL)")
    print(
        f"{'model':24s} {'batch':>5s} {'median s':>9s} {'img/s':>7s} {'GFLOP/s':>8s} {'%peak':>6s} {'%sgemm':>7s} {'%conv':>6s} {'x plain':>8s}"
    )
    for entry in part["batches"]:
        peak = entry["peak"]
        for name, row in entry["models"].items():
            print(
                f"{name:24s} {entry['batch']:5d} {row['median_s']:9.3f} {row['images_per_s']:7.3f} {row['gflops']:8.1f} "
                f"{100 * row['fraction_of_peak']:6.1f} {100 * row['fraction_of_sgemm']:7.1f} "
                f"{100 * row['fraction_of_conv3x3_channels_last']:6.1f} {row['speedup_vs_plain']:8.2f}"
            )
        print(
            f"{'  peak kernels':24s} {entry['batch']:5d} sgemm {peak['sgemm_2048']['gflops']:.1f} GFLOP/s, "
            f"conv3x3 CL {peak['conv3x3_channels_last']['gflops']:.1f} GFLOP/s; load {entry['load_before']} -> {entry['load_after']}"
        )


def print_tiled(number: int, part: dict) -> None:
    size = part["size"]
    print(
        f"\nPart {number}: tiled {size}x{size}, tile {TILE}, overlap {OVERLAP}, gaussian, batch {TILE_BATCH}"
    )
    print(
        f"{'tiler':28s} {'median s':>9s} {'set-up s':>9s} {'MPix/s':>7s} {'x MONAI':>8s} {'peak RSS MiB':>13s} {'above baseline':>15s}"
    )
    for name, row in part["tilers"].items():
        print(
            f"{name:28s} {row['median_s']:9.1f} {row['setup_s']:9.1f} {row['megapixels_per_s']:7.3f} "
            f"{row['speedup_vs_monai']:8.2f} {row['peak_rss_mib']:13.0f} {row['peak_above_baseline_mib']:15.0f}"
        )
    print(
        f"  baseline process (torch, pixelwise, model): {part['baseline_peak_rss_mib']:.0f} MiB; load {part['load_before']} -> {part['load_after']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.size, args.threads)))
        return 0
    torch.set_num_threads(args.threads)
    result = {
        "machine": machine(args.threads),
        "versions": versions(),
        "repeats": args.repeats,
        "load_start": load_average(),
    }
    if 1 in args.parts:
        result["part1_forward"] = part_forward(args)
        print_forward(result["part1_forward"])
    for number in (2, 3):
        if number in args.parts:
            repeats = args.repeats if number == 2 else args.part3_repeats
            extra = (EXTRA_TILED_MODE,) if args.extras and number == 2 else ()
            # Part 3 is about memory and takes tens of minutes per tiler: the PyTorch path and
            # MONAI only (the ONNX Runtime path's memory is measured in part 2).
            modes = (*TILED_MODES, *extra) if number == 2 else PART3_MODES
            result[f"part{number}_tiled"] = part_tiled(
                TILED_SIZES[number], repeats, args.threads, modes
            )
            print_tiled(number, result[f"part{number}_tiled"])
    result["load_end"] = load_average()
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
