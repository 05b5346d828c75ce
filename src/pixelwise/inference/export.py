"""Export a model to ONNX or TorchScript, with free batch, height and width where the model
allows, written atomically.

Both formats come from tracing (``torch.jit.trace``; ONNX through torch's TorchScript-based
exporter, which, unlike the ``torch.export``-based one, takes every registered model and keeps
H and W free). Tracing records sizes as graph values but freezes Python branches taken on
them, so a size-dependent branch would bind the export to the traced size. Every export is
therefore traced at one size and checked at a second: if the traced graph reproduces the
model there, H and W (and N) are left free; otherwise the export is fixed to the traced size
(:attr:`Exported.dynamic` says which). The default trace size is not a multiple of the model's
``size_divisor``, so padding to the divisor is traced as padding (by amounts computed from
the size) rather than frozen away.

These models need an export form, used only here and equal to the model's own forward:

* SegNet's max-unpooling (``nn.MaxUnpool2d``) validates its output size in Python, which
  tracing cannot follow; :class:`ScatterMaxUnpool2d` puts each value at its index with a
  scatter instead (ONNX ``ScatterElements``), giving identical outputs.
* U-Net with ``padding="valid"`` checks input sizes in Python, refusing the traced sizes; the
  export runs its layers without that check, so an exported valid U-Net takes only the sizes
  the network accepts (``valid_input_sizes_near``), unchecked.
* A network run at a reduced input scale (:class:`pixelwise.nn.rescale.Rescaled`, from a
  checkpoint trained with ``data.input_scale``) resizes with antialiasing, which ONNX lacks;
  its export form writes that resize as matrix products (equal to float rounding), so the
  exported graph takes full-size images and returns full-size logits.

ONNX needs the ``onnx`` package (``pip install pixelwise[export]``, which also brings
``onnxruntime`` to run the result); both are imported only here, only when needed. The exported
graph takes normalised images ``images`` (N, C, H, W) float32 and returns ``logits``
(N, K, H, W); what normalisation and classes mean is stored beside the graph as JSON (ONNX
``metadata_props`` key ``"pixelwise"``, TorchScript extra file ``pixelwise.json``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from pixelwise._checks import check_choice, check_positive_int, message
from pixelwise._files import atomic_write
from pixelwise.inference._model import eval_mode, model_in_channels, output_margin
from pixelwise.inference.segmenter import Segmenter, as_segmenter

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
DEFAULT_OPSET = 17
METADATA_KEY = "pixelwise"
TORCHSCRIPT_METADATA = "pixelwise.json"
_BASE_SIZE = 96  # default trace size, before moving it off the size divisor
_CHECK_ATOL = 1e-4  # traced vs eager, relative to the logits' scale, at the second size


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote.

    Attributes:
        path: the file.
        format: ``"onnx"`` or ``"torchscript"``.
        example_size: (H, W) the model was traced at.
        dynamic: whether N, H and W are free (else the export takes only (1, C) + ``example_size``).
        opset: the ONNX opset (None for TorchScript).
    """

    path: Path
    format: str
    example_size: tuple[int, int]
    dynamic: bool
    opset: int | None


class ScatterMaxUnpool2d(nn.Module):
    """Max-unpooling as a scatter into a zero map: the same output as ``nn.MaxUnpool2d``,
    written with operations that tracing and ONNX (``ScatterElements``) follow for any size.

    Args:
        kernel_size, stride, padding: as the ``nn.MaxUnpool2d`` it replaces (they set the
            default output size; the indices alone place the values).

    Shape:
        x, indices: (N, D, h, w) -> (N, D, H, W), (H, W) = ``output_size`` or the default
        ``((h − 1)·s − 2p + k, (w − 1)·s − 2p + k)``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = _two(kernel_size)
        self.stride = _two(stride) if stride is not None else self.kernel_size
        self.padding = _two(padding)

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int] | None = None
    ) -> torch.Tensor:
        n, d = x.shape[:2]
        if output_size is None:
            height, width = (
                (x.shape[2 + a] - 1) * self.stride[a] - 2 * self.padding[a] + self.kernel_size[a]
                for a in (0, 1)
            )
        else:
            height, width = output_size[-2], output_size[-1]
        flat = x.new_zeros((n, d, height * width))  # (N, D, H·W)
        flat = flat.scatter(2, indices.flatten(2), x.flatten(2))
        return flat.view(n, d, height, width)  # (N, D, H, W)


def _two(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def export_module(model: nn.Module) -> nn.Module:
    """The model in the form that traces for any size: max-unpooling as a scatter (on a copy;
    ``model`` is left as it is) and the form a model declares with an ``export_module()``
    method (a valid U-Net without its Python size check).

    Its outputs equal the model's; it is meant for export only.

    Shape:
        (N, C, H, W) -> (N, K, H', W'), as ``model``.
    """
    unpools = [name for name, m in model.named_modules() if isinstance(m, nn.MaxUnpool2d)]
    if unpools:
        model = copy.deepcopy(model)
        for name in unpools:
            parent, _, attribute = name.rpartition(".")
            old = model.get_submodule(name)
            new = ScatterMaxUnpool2d(old.kernel_size, old.stride, old.padding)
            setattr(model.get_submodule(parent), attribute, new)
    declared = getattr(model, "export_module", None)
    return declared() if callable(declared) else model


def _in_channels(model: nn.Module) -> int:
    channels = model_in_channels(model)
    if channels is None:
        raise ValueError(
            message(
                "the model",
                "record its in_channels (pixelwise_args or an in_channels attribute)",
                type(model).__name__,
                "build it with pixelwise.models.create_model",
            )
        )
    return int(channels)


def default_example_size(model: nn.Module) -> tuple[int, int]:
    """A trace size the model accepts and that is not a multiple of its ``size_divisor``
    (H ≠ W, so that a swapped axis shows), near 96 pixels."""
    divisor = int(getattr(model, "size_divisor", 1))
    if output_margin(model) > 0:
        height = model.valid_input_sizes_near(_BASE_SIZE + 2 * output_margin(model))[1]
        return height, model.valid_input_sizes_near(height + 1)[1]
    height = _BASE_SIZE + (divisor // 2 + 1 if divisor > 1 else 3)
    return height, height + max(divisor, 8)


def _check_size(model: nn.Module, size: object) -> tuple[int, int]:
    if not isinstance(size, Sequence) or len(size) != 2:
        raise TypeError(message("example_size", "be a pair (H, W) of ints", repr(size)))
    height, width = (check_positive_int("example_size", s) for s in size)
    if hasattr(model, "is_valid_input_size"):
        for axis, n in (("height", height), ("width", width)):
            if not model.is_valid_input_size(n):
                lower, upper = model.valid_input_sizes_near(n)
                raise ValueError(
                    message(
                        f"example {axis}",
                        "be an input size the network accepts",
                        n,
                        f"use {lower} or {upper}" if lower else f"use {upper}",
                    )
                )
    return height, width


def _second_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """A size other than ``size`` on both axes, to check the trace generalises."""
    if output_margin(model) > 0:
        return tuple(model.valid_input_sizes_near(n + 1)[1] for n in size)
    divisor = int(getattr(model, "size_divisor", 1))
    # One axis a multiple of the divisor (nothing to pad), the other not.
    return (size[0] // divisor + 2) * divisor, size[1] + divisor + 1


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's warnings: the export checks the trace at a second size instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for text in (
            ".*legacy TorchScript-based ONNX export",
            ".*torch\\.jit\\.",
            ".*feature will be removed",
        ):
            warnings.filterwarnings("ignore", message=text, category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=text, category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*Constant folding", category=UserWarning)
        yield


def _traces_any_size(
    traced: torch.jit.ScriptModule, module: nn.Module, example: torch.Tensor, size: tuple[int, int]
) -> bool:
    """Whether the trace reproduces the module at another size (and batch)."""
    generator = torch.Generator().manual_seed(1)  # leaves the global random state alone
    probe = torch.rand(2, example.shape[1], *size, generator=generator, dtype=example.dtype)
    probe = probe.to(example.device)  # (2, C, H2, W2)
    try:
        got = traced(probe)
    except RuntimeError:  # a frozen size no longer fits: shapes mismatch inside the graph
        return False
    want = module(probe)
    if got.shape != want.shape:
        return False
    scale = max(float(want.abs().max()), 1.0)
    return bool((got - want).abs().max() <= _CHECK_ATOL * scale)


def _trace(
    module: nn.Module, example: torch.Tensor, second: tuple[int, int]
) -> tuple[torch.jit.ScriptModule, bool]:
    """Trace ``module`` at ``example``; returns the trace and whether it holds at ``second``."""
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        return traced, _traces_any_size(traced, module, example, second)


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            message(
                "ONNX export",
                "have the onnx package installed",
                "no module named 'onnx'",
                "install pixelwise[export] (pip install 'pixelwise[export]')",
            )
        ) from None
    return onnx


def onnx_bytes(
    module: nn.Module,
    example: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> bytes:
    """``module`` traced at ``example`` and serialised as an ONNX graph (input ``images``,
    output ``logits``; the axes in ``dynamic_axes`` left free), in memory."""
    buffer = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
        )
    return buffer.getvalue()


def _write_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int,
    dynamic: bool,
    shrinks: bool,
    metadata: Mapping[str, object],
) -> None:
    onnx = _import_onnx()
    axes = None
    if dynamic:
        out_h, out_w = ("H_out", "W_out") if shrinks else ("H", "W")
        axes = {"images": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: out_h, 3: out_w}}
    serialized = onnx_bytes(module, example, opset=opset, dynamic_axes=axes)
    graph = onnx.load_from_string(serialized)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(graph)
    atomic_write(path, lambda stream: stream.write(graph.SerializeToString()))


def _write_torchscript(
    traced: torch.jit.ScriptModule, path: Path, metadata: Mapping[str, object]
) -> None:
    files = {TORCHSCRIPT_METADATA: json.dumps(metadata)}
    with _quiet_tracing():
        atomic_write(path, lambda stream: torch.jit.save(traced, stream, _extra_files=files))


def _check_path(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            message(f"export folder {path.parent}", "exist", "a missing folder", "create it first")
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            message(
                f"export file {path}",
                "not exist already",
                "an existing file",
                "pass overwrite=True (--overwrite) to replace it, or choose another path",
            )
        )
    if path.is_dir():
        raise ValueError(message(f"export path {path}", "name a file", "a folder"))
    return path


def _model_metadata(segmenter: Segmenter, exported: Exported, extra: Mapping[str, object]) -> dict:
    model = segmenter.network
    return {
        **segmenter.meta(),
        "input": "images (N, C, H, W) float32, normalised as 'normalisation' says",
        "output": "logits (N, K, H, W)"
        if output_margin(model) == 0
        else "logits (N, K, H', W'), smaller by the valid U-Net's margin",
        "dynamic": exported.dynamic,
        "example_size": list(exported.example_size),
        **dict(extra),
    }


def _example(model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, _in_channels(model), *size, generator=generator, dtype=dtype)
    return example.to(device)  # (1, C, H, W)


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    example_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Exported:
    """Write ``model``'s network (in eval mode) as an ONNX or TorchScript file, atomically.

    Args:
        model: A :class:`pixelwise.inference.segmenter.Segmenter` (e.g. from
            :func:`pixelwise.engine.checkpoint.load_model`) or a bare pixelwise network; its
            mode is restored after. The graph is the network alone (it takes normalised
            images); :meth:`Segmenter.meta` (model name and arguments, class names, ignore
            index, normalisation, K, C) is stored beside it.
        path: The file to write (its folder must exist); suffix ``.onnx`` / ``.ts`` by custom.
        format: ``"onnx"`` (needs the onnx package: ``pixelwise[export]``) or ``"torchscript"``.
        example_size: (H, W) to trace at; default :func:`default_example_size`. If the trace
            does not hold at a second size, the export is fixed to this size.
        opset: ONNX opset version (ignored for TorchScript).
        metadata: Extra JSON-serialisable entries stored with the graph (e.g. the checkpoint
            file and epoch), beside :meth:`Segmenter.meta`.
        overwrite: Replace an existing file (refused otherwise).

    Returns:
        :class:`Exported`: the path, format, traced size and whether N, H and W are free.

    Raises:
        FileNotFoundError: the folder of ``path`` is missing.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError, TypeError: a bad format, size or opset.
        ImportError: ONNX export without the onnx package (one line: install pixelwise[export]).

    Shape:
        exported graph: images (N, C, H, W) float32 -> logits (N, K, H, W) (smaller H, W for
        a valid U-Net).
    """
    segmenter = as_segmenter(model)
    model = segmenter.network
    check_choice("format", format, FORMATS)
    path = _check_path(path, overwrite)
    if format == "onnx":
        _import_onnx()  # fail before tracing
    opset = check_positive_int("opset", opset)
    size = default_example_size(model) if example_size is None else _check_size(model, example_size)
    with eval_mode(model):
        module = export_module(model)
        example = _example(model, size)
        traced, dynamic = _trace(module, example, _second_size(model, size))
        if not dynamic:
            logger.warning("the export of %s is fixed to size %s×%s", path, *size)
        exported = Exported(path, format, size, dynamic, opset if format == "onnx" else None)
        info = _model_metadata(segmenter, exported, metadata or {})
        if format == "torchscript":
            _write_torchscript(traced, path, info)
        else:
            shrinks = output_margin(model) > 0
            _write_onnx(
                module, example, path, opset=opset, dynamic=dynamic, shrinks=shrinks, metadata=info
            )
    logger.info("exported %s (%s, dynamic size: %s)", path, format, dynamic)
    return exported
