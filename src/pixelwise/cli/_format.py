"""Parsing and printing helpers shared by the commands; nothing here imports torch."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping, Sequence

from pixelwise._metric_names import SUMMARY_KEYS

_LABELS = {
    "pixel_accuracy": "pixel accuracy",
    "mean_accuracy": "mean accuracy",
    "mean_iou": "mean IoU",
    "frequency_weighted_iou": "frequency-weighted IoU",
    "mean_dice": "mean Dice",
}
_MEANS = (*((_LABELS[key], key) for key in SUMMARY_KEYS), ("boundary F1", "boundary_f1"))


def message(what: str, expectation: str, actual: object, fix: str = "") -> str:
    """:func:`pixelwise._checks.message`, imported when an error is raised (``_checks`` loads
    torch, which ``--help`` and ``--version`` do not need)."""
    from pixelwise._checks import message as one_line

    return one_line(what, expectation, actual, fix)


def parse_option(text: str) -> tuple[str, object]:
    """Parse one ``key=value`` model option; the value is a Python literal or a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(
            message("option", "look like key=value", repr(text), "e.g. -o padding=valid")
        )
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def options(pairs: Sequence[str] | None) -> dict[str, object]:
    """The ``-o key=value`` options as a dict."""
    return dict(parse_option(p) for p in pairs or ())


def count_parameters(model: object) -> int:
    """Number of parameters of ``model`` (an ``nn.Module``)."""
    return sum(p.numel() for p in model.parameters())


def device(name: str) -> str:
    """``--device``: ``auto`` is CUDA when available; ``cuda`` without a GPU is refused."""
    from pixelwise._device import resolve_device  # at call time: start-up without torch

    return str(resolve_device(name, what="--device"))


def bar_progress(bar: object) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that moves a tqdm bar."""
    return lambda done, total: bar.update(done - bar.n)


def score(value: float) -> str:
    """A score with four decimals; ``-`` for NaN (undefined)."""
    return "-" if value != value else f"{value:.4f}"


def print_metrics(result: Mapping[str, object]) -> None:
    """The per-class table and the means of an evaluation."""
    classes = result["classes"]
    width = max(len("class"), *map(len, classes))
    columns = ("IoU", "acc", "Dice", "BF")
    print("class".ljust(width) + "".join(f"  {c:>6}" for c in columns) + f"  {'pixels':>12}")
    for name, row in classes.items():
        keys = ("iou", "accuracy", "dice", "boundary_f1")
        cells = "".join(f"  {score(row[k]):>6}" for k in keys)
        print(f"{name.ljust(width)}{cells}  {row['target_pixels']:>12,}")
    for label, key in _MEANS:
        print(f"{label.ljust(24)}{score(result[key])}")


def without_nan(value: object) -> object:
    """JSON has no NaN: undefined scores become null."""
    if isinstance(value, Mapping):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def config_text(config: Mapping[str, object]) -> str:
    """A checkpoint's config as TOML (JSON when it is not a table of sections)."""
    from pixelwise.config import dump_toml  # at call time: start-up without torch

    if config and all(isinstance(v, Mapping) for v in config.values()):
        return dump_toml(config).rstrip()
    return json.dumps(config, indent=2)
