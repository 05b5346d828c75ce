"""Run a pixelwise model's forward pass in ONNX Runtime instead of PyTorch.

On CPU, ONNX Runtime's convolutions (blocked NCHWc kernels with fused activations) run a
U-Net faster than PyTorch's, even after :func:`pixelwise.inference.optimize.optimize_for_inference`
(measured in ``benchmarks/inference.py``). :func:`onnxruntime_model` wraps a model so that
everything that takes a model takes it: :func:`pixelwise.inference.tiling.predict`, test-time
augmentation, ``pixelwise predict --backend onnxruntime``.

How: the first call at each input shape (C, H, W) exports the batch-norm-folded model to ONNX
in memory (traced at that shape, batch left free; SegNet's unpooling and the valid U-Net in
their export forms, :func:`pixelwise.inference.export.export_module`) and opens an ONNX Runtime
session on it; later calls at that shape reuse the session. Tracing at the very shape it runs
at means no size-dependent branch can be frozen wrongly. The first call at a shape therefore
costs an export (seconds for a U-Net); tiled prediction uses one shape for all its tiles.

Needs ``onnx`` and ``onnxruntime`` (``pip install 'pixelwise[export]'``). Inference only: no
gradients; logits equal PyTorch's to float rounding (tests pin 1e-4 of the logits' scale).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

from pixelwise._checks import check_choice, check_positive_int, message
from pixelwise.inference.export import export_module, onnx_bytes
from pixelwise.inference.optimize import OPTIMIZED_ATTRIBUTE, optimize_for_inference

BACKENDS = ("torch", "onnxruntime")


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            message(
                "the onnxruntime backend",
                "have the onnxruntime package installed",
                "no module named 'onnxruntime'",
                "install pixelwise[export] (pip install 'pixelwise[export]')",
            )
        ) from None
    return onnxruntime


class OnnxRuntimeModel(nn.Module):
    """A model whose forward pass runs in ONNX Runtime (see the module docstring).

    Attributes the wrapper does not have are looked up on the wrapped model (its
    ``size_divisor``, ``pixelwise_args``, the valid U-Net's size arithmetic), so tiling plans
    the same tiles for both. The wrapped model is held, not copied (its parameters answer for
    the device and dtype), and is left as it is; nothing trains through the wrapper, and a
    session keeps the weights the model had when that shape was first run.

    Shape:
        (N, C, H, W) float32 on the CPU -> (N, K, H', W') float32, as the wrapped model.
    """

    def __init__(self, model: nn.Module, *, threads: int | None = None) -> None:
        super().__init__()
        self._ort = _import_onnxruntime()
        # The model itself, not a copy: it answers the tiling's questions (sizes, channels,
        # device); each export folds a temporary copy, so only ONNX Runtime holds the weights
        # twice. The sessions keep the weights as they were when exported.
        self.model = model
        self.threads = check_positive_int("threads", threads or torch.get_num_threads())
        self._sessions: dict[tuple[int, ...], Any] = {}
        setattr(self, OPTIMIZED_ATTRIBUTE, True)  # predict must not copy it again

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name == "model":
                raise
            return getattr(super().__getattr__("model"), name)

    def __deepcopy__(self, memo: dict) -> OnnxRuntimeModel:
        # Sessions cannot be copied; a copy re-exports on its first call.
        return OnnxRuntimeModel(self.model, threads=self.threads)

    def session(self, shape: tuple[int, int, int]) -> Any:
        """The session for inputs of shape (C, H, W), exported on first use."""
        if shape not in self._sessions:
            self._sessions[shape] = self._export(shape)
        return self._sessions[shape]

    def _export(self, shape: tuple[int, int, int]) -> Any:
        folded = export_module(optimize_for_inference(self.model, channels_last=False))
        graph = onnx_bytes(
            folded, torch.zeros(1, *shape), dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}}
        )
        del folded  # the session holds its own copy of the weights
        options = self._ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        # Idle threads sleep instead of spinning, leaving the cores to the rest of the work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena: freed activations go back to the system rather than staying
        # reserved for the session (peak memory measured in benchmarks/inference.py).
        options.enable_cpu_mem_arena = False
        return self._ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(
                message("images", "have 4 dimensions (N, C, H, W)", f"shape {tuple(images.shape)}")
            )
        if images.device.type != "cpu":
            raise ValueError(
                message("images", "be on the CPU for onnxruntime", images.device, "use .cpu()")
            )
        array = images.detach().float().contiguous().numpy()
        logits = self.session(tuple(images.shape[1:]))
        return torch.from_numpy(logits.run(None, {"images": array})[0])


def onnxruntime_model(model: nn.Module, *, threads: int | None = None) -> OnnxRuntimeModel:
    """``model`` with its forward pass in ONNX Runtime on the CPU (see the module docstring).

    Args:
        model: Any pixelwise model (on the CPU); left as it is (a folded copy is exported).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        ImportError: if onnxruntime (or onnx) is not installed, in one line naming the extra.
    """
    if isinstance(model, OnnxRuntimeModel):
        return model
    return OnnxRuntimeModel(model, threads=threads)


def with_backend(model: nn.Module, backend: str) -> nn.Module:
    """``model`` for the named backend: ``"torch"`` (optimised for inference) or
    ``"onnxruntime"`` (wrapped by :func:`onnxruntime_model`)."""
    check_choice("backend", backend, BACKENDS)
    if backend == "onnxruntime":
        return onnxruntime_model(model)
    return optimize_for_inference(model)
