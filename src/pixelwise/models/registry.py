"""The model registry: every network is registered by name behind one contract.

Contract (tested over every registered model in ``tests/models/test_contract.py``):
``forward(images (N, C, H, W) float) -> logits (N, K, H, W)`` at the input size for any H, W,
no softmax inside. The one declared exception is ``unet`` with ``padding="valid"``, whose
output is smaller by construction and which exposes its size arithmetic.

Each built model carries:
    ``size_divisor``: H and W are padded inside to a multiple of this (1 = no padding needed);
    ``stage_names``: dotted names of the submodules whose outputs are the network's stages,
    in forward order (used by ``pixelwise shapes``);
    ``pixelwise_name`` and ``pixelwise_args``: what :func:`create_model` was called with, so a
    checkpoint can rebuild the model with one call.

This module imports no model: it is the leaf the model modules register into. The package
(``pixelwise/models/__init__.py``) imports every model module after it, so importing anything
from ``pixelwise.models`` fills the registry.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pixelwise._checks import did_you_mean, message
from pixelwise.nn.distance import DistanceHead


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder and what ``pixelwise models`` shows of it."""

    name: str
    builder: Callable[..., nn.Module]
    summary: str
    paper: str


_REGISTRY: dict[str, ModelEntry] = {}

# The most parameters a model may have: 8 GiB of float32 weights, 16 times the largest
# registered model at its defaults (FCN-8s, 134M). Options past it (depth = 100) would fill
# the memory before the first line of training.
MAX_PARAMETERS = 2**31


def register_model(name: str, *, summary: str, paper: str) -> Callable:
    """Register a keyword-only builder ``builder(*, num_classes, in_channels, ...)`` under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(message("model name", "be unique", repr(name)))
        params = inspect.signature(builder).parameters
        for required in ("num_classes", "in_channels"):
            if (
                required not in params
                or params[required].kind is not inspect.Parameter.KEYWORD_ONLY
            ):
                raise TypeError(f"builder for {name!r} must take keyword-only {required!r}")
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            raise TypeError(f"builder for {name!r} must not swallow **kwargs")
        _REGISTRY[name] = ModelEntry(name, builder, summary, paper)
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names raise a ValueError with a suggestion."""
    if name not in _REGISTRY:
        raise ValueError(
            message(
                "model name", "be a registered model", repr(name), did_you_mean(name, _REGISTRY)
            )
        )
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, Any]:
    """The options of model ``name`` beyond num_classes/in_channels, with their defaults."""
    params = inspect.signature(get_entry(name).builder).parameters
    return {
        key: (p.default if p.default is not inspect.Parameter.empty else None)
        for key, p in params.items()
        if key not in ("num_classes", "in_channels")
    }


def check_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    distance_head: bool = False,
    **options: Any,
) -> None:
    """Raise what :func:`create_model` would for these arguments, building nothing (the model
    is built on PyTorch's meta device)."""
    _check_arguments(name, num_classes, in_channels, options)
    if not isinstance(distance_head, bool):
        raise ValueError(message("distance_head", "be true or false", repr(distance_head)))
    outputs = num_classes + int(distance_head)
    _check_size(get_entry(name), num_classes=outputs, in_channels=in_channels, **options)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    distance_head: bool = False,
    **options: Any,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models` (a near miss gets a did-you-mean).
        num_classes: K, the number of output channels (classes).
        in_channels: C, the number of image channels.
        distance_head: Build the model with one more output channel, a regressed distance
            map, inside a :class:`pixelwise.nn.distance.DistanceHead` (any model).
        **options: the model's own options (see ``pixelwise models``); unknown ones raise.

    Returns:
        The model, with ``size_divisor``, ``stage_names``, ``pixelwise_name`` and
        ``pixelwise_args`` set (``distance_head`` in the arguments only when true).
    """
    check_model(
        name,
        num_classes=num_classes,
        in_channels=in_channels,
        distance_head=distance_head,
        **options,
    )
    outputs = num_classes + int(distance_head)
    model = get_entry(name).builder(num_classes=outputs, in_channels=in_channels, **options)
    if distance_head:
        model = DistanceHead(model, num_classes)
        options = {**options, "distance_head": True}
    model.pixelwise_name = name
    model.pixelwise_args = {"num_classes": num_classes, "in_channels": in_channels, **options}
    return model


def _check_arguments(name: str, num_classes: object, in_channels: object, options: dict) -> None:
    known = model_options(name)
    for key in options:
        if key not in known:
            raise ValueError(
                message(
                    f"option for model '{name}'",
                    "be one of " + str(sorted(known)),
                    repr(key),
                    did_you_mean(key, known),
                )
            )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(message("num_classes", "be an integer >= 1", repr(num_classes)))
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(message("in_channels", "be an integer >= 1", repr(in_channels)))


def _from_torch(error: BaseException) -> bool:
    """Whether ``error`` was raised inside torch (a size it cannot hold), not by a builder's
    own checks of its options, which already say what is wrong."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or "pixelwise" not in tb.tb_frame.f_code.co_filename


def _check_size(entry: ModelEntry, **args: Any) -> None:
    """Build the model on PyTorch's meta device (no memory) and refuse options that torch
    cannot build or that give more than :data:`MAX_PARAMETERS` parameters."""
    options = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in ("num_classes",))
    what = f"model '{entry.name}' with {options}"
    fix = "use smaller options (depth, widths)"
    try:
        # Weight files load into meta tensors as a no-op, which torch warns about per tensor.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = entry.builder(**args)
    except (RuntimeError, OverflowError, TypeError, MemoryError) as error:
        if isinstance(error, TypeError) and not _from_torch(error):
            raise
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise ValueError(message(what, "be a size torch can build", detail, fix)) from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(
            message(what, f"have at most {MAX_PARAMETERS:,} parameters", f"{count:,}", fix)
        )
