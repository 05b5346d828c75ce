"""Checkpoints that describe themselves: model name and arguments, classes, input
normalisation, the run's config, metrics, weights and (for resume) the training state.

A checkpoint file ``<name>.pt`` is one dict written with ``torch.save``; it holds only plain
Python containers (dict, list, tuple, str, int, float, bool, None) and tensors, so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` and no pickled code
runs. Its keys::

    format          "pixelwise-checkpoint"
    version         1
    model_name      registry name, e.g. "unet"
    model_args      what create_model got: num_classes, in_channels and the model's options
    class_names     K names
    ignore_index    target value left out of loss and metrics
    normalisation   {"mean": [per channel], "std": [per channel]} applied to images in [0, 1]
    config          the run's resolved config (RunConfig.to_dict())
    epoch           epochs completed
    metrics         validation metrics of that epoch (plain numbers)
    state_dict      the unwrapped model's weights (no DDP "module." or compile prefixes), CPU
    training        None, or what resume needs: optimizer, scheduler, scaler, RNG states, ...

Beside it, ``<name>.safetensors`` holds the same weights with everything above except
``state_dict`` and ``training`` as JSON in its metadata (key ``"pixelwise"``), for tools that
read safetensors; :func:`load_checkpoint` reads either file.

Both files are written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pixelwise._checks import message
from pixelwise._files import atomic_write, write_bytes_atomic

logger = logging.getLogger(__name__)

FORMAT = "pixelwise-checkpoint"
VERSION = 1
# Header keys: everything but the weights and the training state (also the safetensors metadata).
_HEADER = (
    "model_name",
    "model_args",
    "class_names",
    "ignore_index",
    "normalisation",
    "config",
    "epoch",
    "metrics",
)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds; see the module docstring for each field."""

    model_name: str
    model_args: dict
    class_names: tuple[str, ...]
    ignore_index: int
    normalisation: dict
    config: dict
    epoch: int
    metrics: dict
    state_dict: dict[str, torch.Tensor]
    training: dict | None

    @property
    def num_classes(self) -> int:
        """K, from the model arguments."""
        return int(self.model_args["num_classes"])

    @property
    def in_channels(self) -> int:
        """C, from the model arguments."""
        return int(self.model_args["in_channels"])


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel and ``torch.compile``."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _plain_key(key: object) -> object:
    # Integer keys stay integers: an optimizer's state is keyed by parameter index.
    return key if isinstance(key, str | int) else str(key)


def plain(value: object) -> object:
    """``value`` as plain containers that ``weights_only`` loading accepts (paths as str);
    dict keys stay str or int, tuples stay tuples."""
    if isinstance(value, Mapping):
        return {_plain_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(
        message("checkpoint value", "be a plain number, string, list, dict or tensor", repr(value))
    )


def _check_normalisation(normalisation: Mapping | None, what: str = "normalisation") -> dict:
    if normalisation is None:
        return {}
    if not isinstance(normalisation, Mapping) or not normalisation:
        raise ValueError(message(what, 'be {"mean": [...], "std": [...]}', repr(normalisation)))
    mean, std = normalisation.get("mean"), normalisation.get("std")
    if mean is None or std is None or len(mean) != len(std) or not len(mean):
        raise ValueError(
            message(
                what, "hold 'mean' and 'std' lists of one value per channel", repr(normalisation)
            )
        )
    if any(float(s) <= 0 for s in std):
        raise ValueError(message(f"{what} std", "be > 0 for every channel", list(std)))
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    # Clones, so that no two entries share storage (safetensors refuses shared tensors).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    class_names: Sequence[str],
    ignore_index: int,
    normalisation: Mapping | None,
    config: Mapping,
    epoch: int,
    metrics: Mapping,
    training: Mapping | None = None,
) -> Path:
    """Write a checkpoint and, beside it, the weights as ``<stem>.safetensors``.

    Args:
        path: The ``.pt`` file to write (its folder must exist); replaced atomically.
        model: A model built by :func:`pixelwise.models.create_model`, possibly wrapped in
            DistributedDataParallel or compiled: the plain model is saved.
        class_names: K names.
        ignore_index: Target value left out of loss and metrics.
        normalisation: ``{"mean": [...], "std": [...]}`` per channel; None for none.
        config: The run's config as plain containers (``RunConfig.to_dict()``).
        epoch: Epochs completed.
        metrics: Validation metrics (plain numbers, nested dicts allowed).
        training: Resume state (plain containers and tensors), or None.

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            message(f"checkpoint folder {path.parent}", "exist", "a missing folder")
        )
    model = unwrap_model(model)
    name = getattr(model, "pixelwise_name", None)
    if name is None:
        raise ValueError(
            message(
                "checkpointed model",
                "be built by pixelwise.models.create_model (it records name and arguments)",
                type(model).__name__,
            )
        )
    header = {
        "model_name": name,
        "model_args": plain(model.pixelwise_args),
        "class_names": [str(n) for n in class_names],
        "ignore_index": int(ignore_index),
        "normalisation": _check_normalisation(normalisation),
        "config": plain(config),
        "epoch": int(epoch),
        "metrics": plain(metrics),
    }
    weights = _weights(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        **header,
        "state_dict": weights,
        "training": plain(training) if training is not None else None,
    }
    atomic_write(path, lambda stream: torch.save(payload, stream))
    _write_safetensors(path.with_suffix(".safetensors"), weights, header)
    logger.info("saved checkpoint %s (epoch %d)", path, epoch)
    return path


def _write_safetensors(path: Path, weights: dict[str, torch.Tensor], header: dict) -> None:
    from safetensors.torch import save

    metadata = {"format": FORMAT, "version": str(VERSION), "pixelwise": json.dumps(header)}
    write_bytes_atomic(path, save(weights, metadata=metadata))


def _not_a_checkpoint(path: Path, actual: str) -> ValueError:
    return ValueError(
        message(
            f"checkpoint {path}",
            "be a pixelwise checkpoint (a .pt or .safetensors written by pixelwise train)",
            actual,
        )
    )


def _read_pt(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse is one line naming the file
        detail = " ".join(str(exc).split())[:200]
        raise _not_a_checkpoint(
            path, f"an unreadable file ({type(exc).__name__}: {detail})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = sorted(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise _not_a_checkpoint(path, f"a file without the pixelwise header ({found})")
    return payload


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # any failure to parse is one line naming the file
        detail = " ".join(str(exc).split())[:200]
        raise _not_a_checkpoint(
            path, f"an unreadable file ({type(exc).__name__}: {detail})"
        ) from None
    if metadata.get("format") != FORMAT or "pixelwise" not in metadata:
        raise _not_a_checkpoint(path, "safetensors without the pixelwise metadata")
    return {**json.loads(metadata["pixelwise"]), "state_dict": weights, "training": None}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (``.pt``, or the ``.safetensors`` beside it) without running code.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: unreadable, or not a pixelwise checkpoint; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        actual = "a folder" if path.is_dir() else "a missing file"
        raise FileNotFoundError(
            message(f"checkpoint {path}", "be an existing file", actual, "e.g. runs/<run>/best.pt")
        )
    payload = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)
    missing = [k for k in (*_HEADER, "state_dict") if k not in payload]
    if missing:
        raise _not_a_checkpoint(path, f"a file without {missing}")
    return Checkpoint(
        model_name=str(payload["model_name"]),
        model_args=dict(payload["model_args"]),
        class_names=tuple(str(n) for n in payload["class_names"]),
        ignore_index=int(payload["ignore_index"]),
        normalisation=dict(payload["normalisation"]),
        config=dict(payload["config"]),
        epoch=int(payload["epoch"]),
        metrics=dict(payload["metrics"]),
        state_dict=dict(payload["state_dict"]),
        training=payload.get("training"),
    )


def rebuild_args(model_args: Mapping) -> dict:
    """The create_model arguments of a checkpoint, local weight-file options set to None.

    Options such as ``encoder_weights`` / ``backbone_weights`` name files used to initialise
    the first training run; the checkpoint's own weights replace them, and the files need not
    exist where the checkpoint is loaded.
    """
    return {k: (None if k.endswith("_weights") else v) for k, v in model_args.items()}


def build_model(checkpoint: Checkpoint, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the checkpoint's model through the registry, load its weights, eval mode."""
    from pixelwise.models import create_model

    args = rebuild_args(checkpoint.model_args)
    model = create_model(checkpoint.model_name, **args)
    result = model.load_state_dict(checkpoint.state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            message(
                f"checkpoint weights for model '{checkpoint.model_name}'",
                "match the rebuilt model",
                f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}",
                "the checkpoint was written by an incompatible version of the model",
            )
        )
    return model.to(device).eval()


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Checkpoint]:
    """Read a checkpoint and rebuild its model (eval mode, on ``device``)."""
    checkpoint = load_checkpoint(path)
    try:
        return build_model(checkpoint, device=device), checkpoint
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{exc} (checkpoint {path})") from None


def normalise_images(images: torch.Tensor, normalisation: Mapping | None) -> torch.Tensor:
    """``(x − mean) / std`` per channel, for images in [0, 1]; None or ``{}`` returns ``images``.

    Shape:
        images: (N, C, H, W) or (C, H, W); output: the same.
    """
    if not normalisation:
        return images
    norm = _check_normalisation(normalisation)
    channels = images.shape[-3] if images.dim() >= 3 else None
    if images.dim() not in (3, 4) or channels != len(norm["mean"]):
        raise ValueError(
            message(
                "images",
                f"have shape (N, C, H, W) or (C, H, W) with C = {len(norm['mean'])} "
                "(the checkpoint's channels)",
                f"shape {tuple(images.shape)}",
            )
        )
    dtype = images.dtype if images.is_floating_point() else torch.float32
    mean = torch.tensor(norm["mean"], dtype=dtype, device=images.device)[:, None, None]  # (C,1,1)
    std = torch.tensor(norm["std"], dtype=dtype, device=images.device)[:, None, None]  # (C,1,1)
    return (images.to(dtype) - mean) / std
