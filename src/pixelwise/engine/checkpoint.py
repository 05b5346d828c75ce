"""Checkpoints that describe themselves: model name and arguments, classes, input
normalisation, the run's config, metrics, weights and (for resume) the training state.

A checkpoint file ``<name>.pt`` is one dict written with ``torch.save``; it holds only plain
Python containers (dict, list, tuple, str, int, float, bool, None) and tensors, so
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` and no pickled code
runs. Its keys::

    format          "pixelwise-checkpoint"
    version         1
    model_name      registry name, e.g. "unet"; None for a model outside the registry
    model_class     the model's qualified class name, e.g. "pixelwise.models.unet.UNet"
                    (absent from checkpoints written before it was recorded)
    model_args      what create_model got: num_classes, in_channels and the model's options;
                    for a model outside the registry, the num_classes and in_channels known
    class_names     K names
    ignore_index    target value left out of loss and metrics
    normalisation   {"mean": [per channel], "std": [per channel]} applied to images in [0, 1]
    config          the run's resolved config (RunConfig.to_dict())
    epoch           epochs completed
    metrics         validation metrics of that epoch (plain numbers)
    state_dict      the unwrapped model's weights (no DDP "module." or compile prefixes), CPU;
                    with train.ema, the moving average of the weights (engine/average.py)
    training        None, or what resume needs: optimizer, scheduler, scaler, RNG states, ...,
                    and "average" (None, or the trained weights and the update count)
    instances       None, or how probabilities become objects for instance data: the
                    parameters chosen on the validation split (pixelwise.instances), with
                    "interior_class", the validation "score" and "tta" (the test-time
                    transforms the objects are predicted with, or false; absent from older
                    files, which predict in one pass)

Beside it, ``<name>.safetensors`` holds the same weights with everything above except
``state_dict`` and ``training`` as JSON in its metadata (key ``"pixelwise"``), for tools that
read safetensors; :func:`load_checkpoint` reads either file.

Both files are written to temporary files in the same folder and then moved into place
together (``os.replace``), so an interrupted save never leaves a truncated checkpoint behind,
nor a ``.pt`` and a ``.safetensors`` of different saves (but for the instant between the moves).

:func:`load_model` rebuilds the model through the registry and returns a
:class:`pixelwise.inference.segmenter.Segmenter` carrying the normalisation, class names,
ignore index and the mask encoding of the training data (from ``config["data"]``), with the
:class:`Checkpoint` as its ``checkpoint`` attribute. A run trained at a reduced input scale
(``config["data"]["input_scale"]`` below 1) gets its network inside
:class:`pixelwise.nn.rescale.Rescaled`, so that it predicts at the scale it was trained at;
``state_dict`` is always the bare network's. A model outside the registry (any
``nn.Module``) is checkpointed the same way; to load it, build the module and pass it:
``load_model(path, network=module)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from pixelwise._checks import message, one_line
from pixelwise._files import atomic_write_all
from pixelwise.data.build import declared_encoding
from pixelwise.inference._model import (
    model_in_channels,
    model_parts,
    rescaled_part,
    unwrap_model,
)
from pixelwise.inference.segmenter import Segmenter, qualified_name
from pixelwise.models import create_model
from pixelwise.nn.normalise import Normalize, check_normalisation
from pixelwise.nn.rescale import Rescaled, check_scale

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

    model_name: str | None
    model_args: dict
    class_names: tuple[str, ...]
    ignore_index: int
    normalisation: dict
    config: dict
    epoch: int
    metrics: dict
    state_dict: dict[str, torch.Tensor]
    training: dict | None
    model_class: str | None = None
    path: str | None = None  # the file it was read from, for messages
    instances: dict | None = None

    @property
    def num_classes(self) -> int:
        """K, from the model arguments (else the class names)."""
        return int(self.model_args.get("num_classes", len(self.class_names)))

    @property
    def in_channels(self) -> int | None:
        """C, from the model arguments (else the normalisation); None when neither says."""
        channels = self.model_args.get("in_channels")
        if channels is None and self.normalisation:
            channels = len(self.normalisation["mean"])
        return None if channels is None else int(channels)

    @property
    def input_scale(self) -> float:
        """The run's ``data.input_scale`` (1.0 without a ``[data]`` table that sets it).

        Raises:
            ValueError: a recorded scale that is not in (0, 1], in one line.
        """
        data = self.config.get("data")
        scale = data.get("input_scale", 1.0) if isinstance(data, Mapping) else 1.0
        return check_scale(scale, "the checkpoint's data.input_scale")


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
    instances: Mapping | None = None,
) -> Path:
    """Write a checkpoint and, beside it, the weights as ``<stem>.safetensors``.

    Args:
        path: The ``.pt`` file to write (its folder must exist); replaced atomically.
        model: Any ``nn.Module``, possibly wrapped in DistributedDataParallel or compiled
            (the plain model is saved). One built by :func:`pixelwise.models.create_model`
            records its name and arguments, so :func:`load_model` can rebuild it; any other
            records its class name, K and (when it says) C.
        class_names: K names.
        ignore_index: Target value left out of loss and metrics.
        normalisation: ``{"mean": [...], "std": [...]}`` per channel; None for none.
        config: The run's config as plain containers (``RunConfig.to_dict()``).
        epoch: Epochs completed.
        metrics: Validation metrics (plain numbers, nested dicts allowed).
        training: Resume state (plain containers and tensors), or None.
        instances: The instance post-processing chosen for this model (plain values), or None.

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            message(f"checkpoint folder {path.parent}", "exist", "a missing folder")
        )
    model = unwrap_model(model_parts(model)[0])  # a Segmenter is saved as its network
    header = {
        **_model_header(model, class_names),
        "class_names": [str(n) for n in class_names],
        "ignore_index": int(ignore_index),
        "normalisation": check_normalisation(normalisation),
        "config": plain(config),
        "epoch": int(epoch),
        "metrics": plain(metrics),
        "instances": plain(instances) if instances is not None else None,
    }
    weights = _weights(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        **header,
        "state_dict": weights,
        "training": plain(training) if training is not None else None,
    }
    # Both files are moved into place together: a kill leaves the old pair or the new one.
    atomic_write_all(
        [
            (path.with_suffix(".safetensors"), _safetensors_writer(weights, header)),
            (path, lambda stream: torch.save(payload, stream)),
        ]
    )
    logger.info("saved checkpoint %s (epoch %d)", path, epoch)
    return path


def record_instances(path: str | Path, instances: Mapping) -> Path:
    """Set the ``instances`` field of the checkpoint ``path`` (and of its ``.safetensors``),
    keeping everything else; both files are replaced together."""
    path = Path(path)
    payload = _read_pt(path)
    _check_header(path, payload)
    payload["instances"] = plain(instances)
    header_keys = (*_HEADER, "model_class", "instances")
    header = {key: payload[key] for key in header_keys if key in payload}
    atomic_write_all(
        [
            (path.with_suffix(".safetensors"), _safetensors_writer(payload["state_dict"], header)),
            (path, lambda stream: torch.save(payload, stream)),
        ]
    )
    return path


def _model_header(model: nn.Module, class_names: Sequence[str]) -> dict:
    name = getattr(model, "pixelwise_name", None)
    if name is not None:
        args = plain(model.pixelwise_args)
    else:
        args = {"num_classes": len(class_names)}
        if model_in_channels(model) is not None:
            args["in_channels"] = int(model_in_channels(model))
    return {"model_name": name, "model_class": qualified_name(model), "model_args": args}


def _safetensors_writer(
    weights: dict[str, torch.Tensor], header: dict
) -> Callable[[BinaryIO], None]:
    metadata = {"format": FORMAT, "version": str(VERSION), "pixelwise": json.dumps(header)}
    data = save_safetensors(weights, metadata=metadata)
    return lambda stream: stream.write(data)


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
    try:
        header = json.loads(metadata["pixelwise"])
    except (ValueError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise _not_a_checkpoint(path, f"pixelwise metadata that is not JSON ({detail})") from None
    if not isinstance(header, dict):
        raise _not_a_checkpoint(path, f"pixelwise metadata that is a {type(header).__name__}")
    return {**header, "state_dict": weights, "training": None}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_names(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(n, str) for n in value)


# What each header field must be, as (test, what it must be); None passes where allowed.
_FIELD_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "model_name": (lambda v: v is None or isinstance(v, str), "a model name or null"),
    "model_args": (
        lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v),
        "a table of arguments",
    ),
    "class_names": (lambda v: _is_names(v) and len(v) > 0, "a list of class names"),
    "ignore_index": (_is_int, "an integer"),
    "normalisation": (lambda v: isinstance(v, Mapping), "a table of mean and std"),
    "config": (lambda v: isinstance(v, Mapping), "a table"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "metrics": (lambda v: isinstance(v, Mapping), "a table"),
    "state_dict": (
        lambda v: (
            isinstance(v, Mapping)
            and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())
        ),
        "a table of named tensors",
    ),
    "training": (lambda v: v is None or isinstance(v, Mapping), "a table or null"),
    "model_class": (lambda v: v is None or isinstance(v, str), "a class name or null"),
    "instances": (lambda v: v is None or isinstance(v, Mapping), "a table or null"),
}


def _check_header(path: Path, payload: Mapping) -> None:
    """Refuse a checkpoint whose header fields are missing or of the wrong kind, all of them
    named in one line (e.g. ``class_names`` a number), before anything uses them."""
    missing = [k for k in (*_HEADER, "state_dict") if k not in payload]
    if missing:
        raise _not_a_checkpoint(path, f"a file without {missing}")
    wrong = [
        f"{key} {one_line(repr(payload[key]), 40)} (must be {what})"
        for key, (test, what) in _FIELD_RULES.items()
        if not test(payload.get(key))
    ]
    if wrong:
        raise _not_a_checkpoint(path, f"a damaged header: {'; '.join(wrong)}")


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
    _check_header(path, payload)
    return Checkpoint(
        model_name=payload["model_name"],
        model_args=dict(payload["model_args"]),
        class_names=tuple(payload["class_names"]),
        ignore_index=int(payload["ignore_index"]),
        normalisation=dict(payload["normalisation"]),
        config=dict(payload["config"]),
        epoch=int(payload["epoch"]),
        metrics=dict(payload["metrics"]),
        state_dict=dict(payload["state_dict"]),
        training=payload.get("training"),
        model_class=payload.get("model_class"),
        instances=payload.get("instances"),
        path=str(path),
    )


def rebuild_args(model_args: Mapping) -> dict:
    """The create_model arguments of a checkpoint, local weight-file options set to None.

    Options such as ``encoder_weights`` / ``backbone_weights`` name files used to initialise
    the first training run; the checkpoint's own weights replace them, and the files need not
    exist where the checkpoint is loaded.
    """
    return {k: (None if k.endswith("_weights") else v) for k, v in model_args.items()}


def _check_weights(
    expected: Mapping[str, torch.Tensor], checkpoint: Checkpoint, what: str, declared: str = ""
) -> None:
    """Refuse stored weights whose names or shapes differ from ``expected`` (a model's
    ``state_dict``, real or on the meta device), in one line with counts and examples;
    ``declared`` says where ``expected`` came from."""
    stored = checkpoint.state_dict
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    reshaped = [
        f"{k} {tuple(stored[k].shape)} for {tuple(t.shape)}"
        for k, t in expected.items()
        if k in stored and stored[k].shape != t.shape
    ]
    if missing or unexpected or reshaped:
        source = (
            f"checkpoint {checkpoint.path} weights" if checkpoint.path else "checkpoint weights"
        )
        expected_size = sum(t.numel() for t in expected.values())
        stored_size = sum(t.numel() for t in stored.values())
        found = [f"{stored_size:,} stored values for {expected_size:,}"]
        for label, keys in (("other shapes", reshaped), ("missing", missing)):
            if keys:
                found.append(f"{label} {', '.join(keys[:2])}" + (" …" if len(keys) > 2 else ""))
        if unexpected:
            found.append(f"unexpected {', '.join(unexpected[:2])}")
        raise ValueError(
            message(
                f"{source} for {what}",
                "match its architecture",
                "; ".join(found) + declared,
                "the checkpoint was written for another model or version, or was altered",
            )
        )


def _load_weights(model: nn.Module, checkpoint: Checkpoint) -> None:
    what = checkpoint.model_name or checkpoint.model_class or type(model).__name__
    _check_weights(model.state_dict(), checkpoint, f"model '{what}'")
    model.load_state_dict(checkpoint.state_dict)


def _check_declared_shapes(checkpoint: Checkpoint) -> None:
    """Build the declared architecture on the meta device (no memory, no arithmetic) and
    compare its tensors with the stored ones, so that a small file declaring a huge model
    (``base_width=4096``) is refused before anything is allocated."""
    args = rebuild_args(checkpoint.model_args)
    with torch.device("meta"):
        declared = create_model(checkpoint.model_name, **args).state_dict()
    what = f"model '{checkpoint.model_name}'"
    _check_weights(declared, checkpoint, what, f" (declared: {one_line(args, 100)})")


def build_model(checkpoint: Checkpoint, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the checkpoint's model through the registry, load its weights, eval mode.

    The declared architecture is checked against the stored tensors first (names and shapes,
    on the meta device), so nothing larger than the file is ever built.
    """
    if checkpoint.model_name is None:
        raise ValueError(
            message(
                "the checkpoint's model",
                "be registered to be rebuilt",
                f"an unregistered {checkpoint.model_class or 'model'}",
                "build the module, then load_model(path, network=module), or "
                "module.load_state_dict(load_checkpoint(path).state_dict)",
            )
        )
    _check_declared_shapes(checkpoint)
    model = create_model(checkpoint.model_name, **rebuild_args(checkpoint.model_args))
    _load_weights(model, checkpoint)
    return model.to(device).eval()


def checkpoint_summary(checkpoint: Checkpoint) -> dict[str, object]:
    """What ``pixelwise info`` shows (and ``pixelwise serve`` answers at ``/model``), as plain
    JSON values: the file, model and its arguments, parameter count, classes, ignore index,
    normalisation, input scale, epoch, whether training state is saved, metrics and config.

    The parameter count is of the rebuilt model when the registry can rebuild it
    (``parameters_of = "model"``), else of the saved weights, buffers such as batch-norm
    statistics left out by name (``"weights"``).
    """
    if checkpoint.model_name is not None:
        parameters = sum(p.numel() for p in build_model(checkpoint).parameters())
        counted = "model"
    else:
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        weights = checkpoint.state_dict.items()
        parameters = sum(v.numel() for k, v in weights if not k.endswith(buffers))
        counted = "weights"
    return {
        "checkpoint": checkpoint.path,
        "model": checkpoint.model_name,
        "model_class": checkpoint.model_class,
        "model_args": plain(checkpoint.model_args),
        "parameters": int(parameters),
        "parameters_of": counted,
        "num_classes": checkpoint.num_classes,
        "class_names": list(checkpoint.class_names),
        "ignore_index": checkpoint.ignore_index,
        "normalisation": plain(checkpoint.normalisation),
        "input_scale": checkpoint.input_scale,
        "epoch": checkpoint.epoch,
        "resumable": checkpoint.training is not None,
        "metrics": plain(checkpoint.metrics),
        "config": plain(checkpoint.config),
    }


def _training_encoding(config: Mapping) -> object:
    """The mask encoding the checkpoint's ``[data]`` table declares, as written (built when
    first used); None without a ``[data]`` table that declares one."""
    data = config.get("data") if isinstance(config, Mapping) else None
    return declared_encoding(data) if isinstance(data, Mapping) else None


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    network: nn.Module | None = None,
) -> Segmenter:
    """Read a checkpoint and return its model as a Segmenter (eval mode, on ``device``).

    Args:
        path: A ``.pt`` or ``.safetensors`` checkpoint.
        device: Where the model goes.
        network: The module to load the weights into, for a model outside the registry (or
            to reuse one); default: rebuilt through the registry.

    Returns:
        A :class:`pixelwise.inference.segmenter.Segmenter` with the checkpoint's
        normalisation, class names and ignore index, and as its ``encoding`` the mask
        encoding of the training data the checkpoint's config declares (None without one,
        e.g. from :func:`pixelwise.fit`); ``segmenter.checkpoint`` is the
        :class:`Checkpoint` read (config, epoch, metrics, weights). With a
        ``data.input_scale`` below 1 its network is the rebuilt one inside
        :class:`pixelwise.nn.rescale.Rescaled` (``segmenter.input_scale``).

    Raises:
        ValueError: as :func:`load_checkpoint`; a model outside the registry without
            ``network``; weights that do not fit the model (one line naming the file).
    """
    checkpoint = load_checkpoint(path)
    try:
        if network is None:
            network = build_model(checkpoint, device=device)
        else:
            _load_weights(unwrap_model(network), checkpoint)
            network = network.to(device).eval()
        if checkpoint.input_scale != 1 and rescaled_part(network) is None:
            network = Rescaled(network, checkpoint.input_scale).eval()
        segmenter = Segmenter(
            network,
            Normalize.from_dict(checkpoint.normalisation).to(device),
            class_names=checkpoint.class_names,
            ignore_index=checkpoint.ignore_index,
            encoding=_training_encoding(checkpoint.config),
        )
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        text = one_line(exc)
        raise ValueError(text if str(path) in text else f"{text} (checkpoint {path})") from None
    segmenter.checkpoint = checkpoint
    return segmenter.eval()
