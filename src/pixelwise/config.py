"""A training run's configuration: frozen dataclasses read from TOML, with ``--set`` overrides.

A run file has up to six tables; every key is optional and defaults to the built-in job (a
small U-Net on the synthetic data, weighted cross entropy, Adam)::

    [data]                      # DataConfig: layout, root, encoding, augmentation
    layout = "synthetic"

    [model]
    name = "unet"
    options = { depth = 3, base_width = 16 }   # the model's own options (pixelwise models)

    [loss]
    name = "weighted_ce"        # "ce" | "weighted_ce" (× the U-Net weight map) | "dice" | "ce_dice"
    class_weights = "none"      # "none" | "median_frequency" | "inverse_frequency"
    ce_weight = 1.0             # the two terms of "ce_dice"
    dice_weight = 1.0

    [optim]
    name = "adam"               # "adam" | "sgd"
    lr = 0.003
    momentum = 0.9              # sgd only
    weight_decay = 0.0
    nesterov = false            # sgd only
    encoder_lr_scale = 1.0      # the encoder's learning rate is lr times this (e.g. 0.1 for a
                                # pretrained encoder)

    [schedule]
    name = "poly"               # "none" | "poly" | "cosine", stepped once per iteration
    power = 0.9                 # poly: lr · (1 − t) ** power, t = step / total_steps
    over = "iterations"         # t runs over "iterations" (epochs × batches) or "time":
                                # the fraction of train.time_limit_minutes trained

    [train]
    epochs = 30
    batch_size = 8
    time_limit_minutes = 0.0    # wall-clock training budget; 0 = none (stops mid-epoch)
    snapshot_minutes = []       # e.g. [15, 30, 60]: snapshot_15min.pt, ... in the run folder
    val_every = 1               # validate (and write last.pt) every n epochs and at the end
    seed = 0
    deterministic = false
    device = "auto"             # "auto" | "cpu" | "cuda"
    amp = true                  # mixed precision, on CUDA only
    channels_last = "auto"      # "auto" (on CUDA) | true | false
    grad_clip = 0.0             # max gradient norm; 0 = off
    freeze_encoder = 0.0        # share of the run (of the time budget, else of the iterations)
                                # during which the encoder is not updated
    ema = 0.0                   # decay of a moving average of the weights (e.g. 0.99, about
                                # the last 100 iterations), which validation, checkpoints and
                                # prediction use; 0 = off
    num_workers = 0
    metric = "mean_iou"         # validation metric that picks best.pt
    out_dir = "runs"
    overlays = 4                # validation images drawn with their predictions
    normalisation = "auto"      # "auto" (a pretrained encoder's own, else "dataset") | "dataset"
                                # (mean/std of the training images) | "fixed" | "none"
    # mean = [0.5], std = [0.25]  with normalisation = "fixed"

Overrides are ``section.key=value`` strings, the value a TOML literal (``3``, ``0.5``, ``true``,
``[64, 64]``, ``"text"``, an inline table) or else a bare string (``train.device=cpu``); nested
keys take more dots (``model.options.depth=2``). Unknown sections and keys, and bad values, raise
a one-line ValueError with a did-you-mean, naming the file or ``--set`` they came from.

``data.encoding`` is a table in its one spelling, the TOML inline table
``{ kind = "values", value_map = { "0" = 0, "255" = 1 } }``; given as text (``--set
data.encoding=...``, or a string in a file) it is read as a TOML inline table or as JSON
(``{"kind": "values", "value_map": {"0": 0, "255": 1}}``), and text that is neither is refused
naming ``data.encoding``.

Paths: ``data.root`` and a palette file named in ``data.encoding`` are relative to the folder
of the file that names them (``root = "data"`` in ``exp/run.toml`` is ``exp/data``), and, given
with ``--set``, to the current folder, where they were typed; :func:`load_config` makes both
absolute, so that a run's ``config.toml`` reads back to the same data from anywhere.
``data.images``, ``data.masks`` and ``data.manifest`` lie under ``data.root``. ``train.out_dir``,
where new run folders go, is relative to the current folder wherever it is set, like
``--out-dir``: a run's outputs follow where pixelwise runs, its inputs the file.

Two keys choose what the rest of their table means: changing ``model.name`` (or
``data.layout``) away from the built-in job starts that table from its own defaults (the
model's options, ``DataConfig()``) instead of the built-in job's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelwise._checks import (
    check_choice,
    check_class_names,
    check_positive_int,
    did_you_mean,
    message,
    one_line,
)
from pixelwise._metric_names import SUMMARY_KEYS
from pixelwise._toml import dump_toml

if TYPE_CHECKING:
    from pixelwise.data.encoding import MaskEncoding

LAYOUTS = ("folders", "camvid", "instances", "tiff", "synthetic")
# What instance labels train as: background / object, background / interior / boundary, or
# that and a core class (each object's inner part, far from its neighbours).
INSTANCE_TARGETS = ("semantic", "three_class", "core")
LOSSES = ("ce", "weighted_ce", "dice", "ce_dice")
CLASS_WEIGHTS = ("none", "median_frequency", "inverse_frequency")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "poly", "cosine")
SCHEDULE_SPANS = ("iterations", "time")
DEVICES = ("auto", "cpu", "cuda")
METRICS = SUMMARY_KEYS  # the scores train.metric may name
NORMALISATIONS = ("auto", "dataset", "fixed", "none")
MAX_WORKERS = 256  # train.num_workers: each is a process; a typo (10**6) would start them all

# The built-in job: about a minute on two CPU cores (see the README for the measured numbers).
DEFAULT_MODEL = "unet"
DEFAULT_MODEL_OPTIONS: dict[str, object] = {"depth": 3, "base_width": 16, "batch_norm": True}
DEFAULT_DATA: dict[str, object] = {
    "layout": "synthetic",
    "hflip": True,
    "vflip": True,
    "rot90": True,
}


class BadValue(ValueError):
    """A bad value of one key, ``key`` (``"train.epochs"``), so that :func:`load_config` can
    add where the value came from (the file or ``--set``)."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text)
        self.key = key


@contextmanager
def _about(key: str) -> Iterator[None]:
    """Any ValueError raised inside is about ``key``."""
    try:
        yield
    except BadValue:
        raise
    except ValueError as exc:
        raise BadValue(key, str(exc)) from None


def _bad(key: str, expectation: str, actual: object, fix: str = "") -> BadValue:
    return BadValue(key, message(key, expectation, actual, fix))


def _with_origin(error: BadValue, origins: Mapping[str, str]) -> str:
    """The error's text with the origin of its key (or of the table holding it): after the
    key when the text starts with it (``train.epochs (--set) must ...``), else at the end."""
    key, text = error.key, str(error)
    origin = origins.get(key) or origins.get(key.rpartition(".")[0])
    if origin is None:
        return text
    if text.startswith(f"{key} "):
        return f"{key} ({origin}){text[len(key) :]}"
    return f"{text} ({key} in {origin})"


def _check_int(section: str, key: str, value: object, minimum: int) -> int:
    with _about(f"{section}.{key}"):
        return check_positive_int(f"{section}.{key}", value, minimum)


def _check_float(
    section: str,
    key: str,
    value: object,
    low: float,
    high: float = math.inf,
    *,
    open_low: bool = False,
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = "" if math.isinf(low) else f" > {low}" if open_low else f" >= {low}"
        bound += "" if math.isinf(high) else f" and <= {high}"
        raise _bad(f"{section}.{key}", f"be a finite number{bound}", repr(value))
    return float(value)


def _check_bool(section: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{section}.{key}", "be true or false", repr(value))
    return value


def _check_choice(section: str, key: str, value: object, choices: Sequence[str]) -> str:
    with _about(f"{section}.{key}"):
        return check_choice(f"{section}.{key}", value, choices)


def _check_floats(section: str, key: str, value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise _bad(f"{section}.{key}", "be a list of numbers, one per channel", repr(value))
    return tuple(_check_float(section, key, v, -math.inf) for v in value)


def encoding_table(value: object) -> object:
    """``data.encoding`` as a table: text read as a TOML inline table or JSON (:func:`parse_table`);
    a table, a MaskEncoding or None as it is; anything else refused in one line naming the key
    and showing the encoding's one spelling."""
    if value is None or isinstance(value, Mapping) or hasattr(value, "to_config"):
        return value
    table = parse_table(value, "data.encoding") if isinstance(value, str) else None
    if table is None:
        # At call time: the data package imports this module.
        from pixelwise.data.encoding import EXAMPLE

        raise _bad(
            "data.encoding",
            "be a table (a TOML inline table or JSON)",
            repr(value),
            f"e.g. {EXAMPLE.to_toml()}",
        )
    return table


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data is, how its masks are encoded, how to split and augment it.

    Attributes:
        layout: ``"folders"``, ``"camvid"``, ``"instances"``, ``"tiff"`` or ``"synthetic"``.
        root: The data set folder (not used by ``synthetic``); in a config file, relative to
            the file's folder (see the module docstring).
        encoding: A :meth:`MaskEncoding.from_config` table (given as text: a TOML inline table
            or JSON); required for folders and tiff.
        images: Image folder (or TIFF file) under ``root``; for camvid the training split.
        masks: Mask folder (or label TIFF) under ``root``; for camvid the validation split.
        channels: Channels every image must have; None accepts any.
        crop_size: Training crop (int or (h, w)); None keeps the image size.
        scale: Random scale range, e.g. (0.75, 1.25).
        input_scale: The scale the network trains and predicts at, in (0, 1]: training
            images and masks are resized by it before the random crop (``scale``'s range is
            multiplied by it), and the checkpoint's prediction and evaluation resize each
            image by it and the logits back (:class:`pixelwise.nn.rescale.Rescaled`);
            validation samples stay at full resolution. Not with a valid-padding U-Net.
        hflip, vflip, rot90: Random flips and 90° rotations.
        elastic_std: Elastic deformation strength, pixels (0: off; the U-Net paper: 10).
        colour_jitter: Random brightness, contrast, saturation and hue, strength in [0, 1]
            (0: off; :class:`pixelwise.data.transforms.ColourJitter`).
        invert: Probability of training on an image's inverted intensities (1 − image).
        val_fraction: Share of samples that validate (not camvid, which has a val split).
        shuffle_split: Draw the validation samples by ``seed``; False takes the last ones.
        manifest: CSV under ``root`` for a split stratified by its ``group`` column.
        seed: Seed of the split and of the synthetic images.
        weights: Add U-Net weight maps (instances, synthetic).
        instance_target: Instances: ``"semantic"`` (background / object), ``"three_class"``
            (background / interior / boundary, the boundary ``boundary_width`` pixels wide) or
            ``"core"`` (the three and a fourth class, core: the interior pixels at least half
            their object's largest distance from its edge; the watershed seeds from it).
        distance_target: Instances: the network also regresses each object pixel's distance
            to its object's edge over the object's largest (one more output channel,
            :mod:`pixelwise.nn.distance`), and the watershed floods and seeds from that map.
        weight_map_background: Folders: add the U-Net weight map, its objects the connected
            components of the classes other than this one (EM membranes: 0); None: none.
        num_train, num_val, image_size: The synthetic data set's size.
        class_names: One name per class (folders, tiff); default ``classes.txt`` under
            ``root`` when present, else ``class_0 …``.
    """

    layout: str = "synthetic"
    root: str | None = None
    encoding: Mapping[str, object] | MaskEncoding | None = None
    images: str | None = None
    masks: str | None = None
    channels: int | None = None
    crop_size: int | tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    input_scale: float = 1.0
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    elastic_std: float = 0.0
    colour_jitter: float = 0.0
    invert: float = 0.0
    val_fraction: float = 0.2
    shuffle_split: bool = True
    manifest: str | None = None
    seed: int = 0
    weights: bool = True
    weight_map_background: int | None = None
    instance_target: str = "semantic"
    boundary_width: int = 2
    distance_target: bool = False
    num_train: int = 64
    num_val: int = 16
    image_size: int = 96
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("data layout", self.layout, LAYOUTS)
        if self.weight_map_background is not None and self.layout != "folders":
            raise ValueError(
                message(
                    "data.weight_map_background",
                    "go with layout 'folders'",
                    f"layout '{self.layout}'",
                    "instance layouts compute weight maps from their instances (weights = true)",
                )
            )
        if self.layout != "synthetic" and self.root is None:
            raise ValueError(
                message(f"data root for layout '{self.layout}'", "be given", "nothing")
            )
        self._check_synthetic_reads_no_files()
        self._check_instance_target()
        object.__setattr__(self, "encoding", encoding_table(self.encoding))
        for key in ("hflip", "vflip", "rot90", "shuffle_split", "weights"):
            _check_bool("data", key, getattr(self, key))
        std = _check_float("data", "elastic_std", self.elastic_std, 0.0)
        object.__setattr__(self, "elastic_std", std)
        for key in ("colour_jitter", "invert"):
            object.__setattr__(self, key, _check_float("data", key, getattr(self, key), 0.0, 1.0))
        scale = _check_float("data", "input_scale", self.input_scale, 0.0, 1.0, open_low=True)
        object.__setattr__(self, "input_scale", scale)
        self._check_numbers()
        self._check_names()
        encoding = self.encoding
        # Refused with its key now, not when the data is read; a palette file is read then.
        if isinstance(encoding, Mapping) and not isinstance(encoding.get("palette"), str):
            from pixelwise.data.encoding import MaskEncoding

            with _about("data.encoding"):
                MaskEncoding.from_config(self.encoding)

    def _check_instance_target(self) -> None:
        _check_choice("data", "instance_target", self.instance_target, INSTANCE_TARGETS)
        _check_int("data", "boundary_width", self.boundary_width, 1)
        if self.instance_target != "semantic" and self.layout != "instances":
            raise _bad(
                "data.instance_target",
                "go with layout 'instances' (it is built from the instance labels)",
                f"layout '{self.layout}'",
            )
        _check_bool("data", "distance_target", self.distance_target)
        if self.distance_target and self.layout != "instances":
            raise _bad(
                "data.distance_target",
                "go with layout 'instances' (it is built from the instance labels)",
                f"layout '{self.layout}'",
            )

    @property
    def training_scale(self) -> tuple[float, float] | None:
        """The training resize range: ``scale`` times ``input_scale`` ((s, s) without a
        ``scale``); None when neither resizes."""
        s = self.input_scale
        if self.scale is None:
            return None if s == 1 else (s, s)
        return (self.scale[0] * s, self.scale[1] * s)

    def _check_numbers(self) -> None:
        """Sizes, counts and fractions, named with their key before any file is read."""
        d = "data"
        for key, minimum in (("seed", 0), ("num_train", 1), ("num_val", 1), ("image_size", 1)):
            _check_int(d, key, getattr(self, key), minimum)
        for key in ("channels", "weight_map_background"):
            if getattr(self, key) is not None:
                _check_int(d, key, getattr(self, key), 1 if key == "channels" else 0)
        fraction = self.val_fraction
        if (
            not isinstance(fraction, int | float)
            or isinstance(fraction, bool)
            or not 0 < fraction < 1
        ):
            raise _bad("data.val_fraction", "lie strictly between 0 and 1", repr(fraction))
        crop = self.crop_size
        if crop is not None:
            sizes = crop if isinstance(crop, tuple) else (crop,)
            if len(sizes) not in (1, 2):
                raise _bad("data.crop_size", "be an int or [h, w]", list(sizes))
            for size in sizes:
                _check_int(d, "crop_size", size, 1)
            self._check_crop_pixels(sizes[0], sizes[-1])
        if self.scale is not None:
            scale = self.scale
            if not isinstance(scale, tuple) or len(scale) != 2:
                shown = list(scale) if isinstance(scale, tuple) else repr(scale)
                raise _bad("data.scale", "be a range [low, high]", shown, "e.g. [0.75, 1.25]")
            low, high = (_check_float(d, "scale", v, 0.0, open_low=True) for v in scale)
            if low > high:
                raise _bad("data.scale", "be a range [low, high] with low <= high", list(scale))

    def _check_crop_pixels(self, height: int, width: int) -> None:
        """A crop is padded up to its size: one over the image pixel limit could not fit."""
        from pixelwise.data._io import max_pixels

        if height * width > max_pixels():
            raise _bad(
                "data.crop_size",
                f"have at most {max_pixels():,} pixels (the image size limit)",
                f"{height}×{width} = {height * width:,}",
                "crop smaller than the images",
            )

    def _check_names(self) -> None:
        """Paths are strings; class names distinct, non-empty strings (they key the metrics)."""
        for key in ("root", "images", "masks", "manifest"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str | os.PathLike) or value == ""):
                raise _bad(f"data.{key}", "be a path (a non-empty string)", repr(value))
        names = self.class_names
        if names is None:
            return
        if not isinstance(names, tuple) or not names:
            shown = list(names) if isinstance(names, tuple) else repr(names)
            raise _bad("data.class_names", "be a list of names, one per class", shown)
        check_class_names(names, "data.class_names", bad=BadValue)

    def _check_synthetic_reads_no_files(self) -> None:
        """Built-in data reads no files: a data path with it would be ignored without a word."""
        if self.layout != "synthetic":
            return
        given = [k for k in ("root", "images", "masks", "manifest") if getattr(self, k) is not None]
        if given:
            raise ValueError(
                message(
                    f"data.{given[0]}",
                    "go with a layout that reads files (folders, camvid, instances, tiff)",
                    f"layout 'synthetic' (the built-in data) and {given[0]} = {getattr(self, given[0])!r}",
                    "set data.layout too, e.g. --set data.layout=folders, or leave the path out",
                )
            )

    @classmethod
    def from_mapping(cls, table: Mapping[str, object]) -> DataConfig:
        """Build from a TOML table; unknown keys raise with a suggestion."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in table:
            if key not in names:
                raise ValueError(
                    message("data key", "be known", repr(key), did_you_mean(key, names))
                )
        values = dict(table)
        for key in ("crop_size", "scale", "class_names"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which registered model, with which options (``num_classes`` and ``in_channels`` come
    from the data)."""

    name: str = DEFAULT_MODEL
    options: Mapping[str, object] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_MODEL_OPTIONS)
    )

    def __post_init__(self) -> None:
        # The registry imports torch and every model: loaded when a model config is checked,
        # not when this module is imported (the CLI's start-up, --help and --version).
        from pixelwise.models import get_entry, model_options

        if not isinstance(self.name, str):
            raise _bad("model.name", "be a string", repr(self.name))
        with _about("model.name"):
            get_entry(self.name)
        if not isinstance(self.options, Mapping):
            raise _bad("model.options", "be a table", repr(self.options))
        known = model_options(self.name)
        for key in self.options:
            what = f"model.options.{key}"
            if key in ("num_classes", "in_channels"):
                raise _bad(
                    what, "be left out", repr(self.options[key]), "it is taken from the data"
                )
            if key not in known:
                raise _bad(
                    what,
                    f"name an option of model '{self.name}' {sorted(known)}",
                    repr(key),
                    did_you_mean(key, known),
                )
        object.__setattr__(self, "options", dict(self.options))
        self._check_option_values()

    def _check_option_values(self) -> None:
        """Build the model on PyTorch's meta device (no memory, no time), so that a bad option
        value (``depth = "3"``, a model too large to build) is named with its key now, not when
        training starts; the data's classes and channels are not known yet (2 and 3 stand in)."""
        from pixelwise.models import check_model

        try:
            check_model(self.name, num_classes=2, in_channels=3, **self.options)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            key = next((k for k in self.options if text.startswith(f"{k} ")), None)
            if key is None:
                raise BadValue("model.options", text) from None
            raise BadValue(f"model.options.{key}", f"model.options.{text}") from None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The training loss; ``weighted_ce`` multiplies each pixel's cross entropy by the sample's
    ``"weight"`` map (the U-Net weight map), so it needs data that provides one."""

    name: str = "weighted_ce"
    class_weights: str = "none"
    ce_weight: float = 1.0
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("loss", "name", self.name, LOSSES)
        _check_choice("loss", "class_weights", self.class_weights, CLASS_WEIGHTS)
        for key in ("ce_weight", "dice_weight"):
            object.__setattr__(self, key, _check_float("loss", key, getattr(self, key), 0.0))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer: Adam, or SGD with (Nesterov) momentum."""

    name: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    encoder_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("optim", "name", self.name, OPTIMIZERS)
        object.__setattr__(self, "lr", _check_float("optim", "lr", self.lr, 0.0, open_low=True))
        object.__setattr__(
            self, "momentum", _check_float("optim", "momentum", self.momentum, 0.0, 1.0)
        )
        object.__setattr__(
            self, "weight_decay", _check_float("optim", "weight_decay", self.weight_decay, 0.0)
        )
        _check_bool("optim", "nesterov", self.nesterov)
        scale = _check_float("optim", "encoder_lr_scale", self.encoder_lr_scale, 0.0)
        object.__setattr__(self, "encoder_lr_scale", scale)
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise _bad(
                "optim.nesterov",
                "go with name = 'sgd' and momentum > 0",
                f"name {self.name!r}, momentum {self.momentum}",
            )


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, stepped once per iteration (optimizer step)."""

    name: str = "poly"
    power: float = 0.9
    over: str = "iterations"

    def __post_init__(self) -> None:
        _check_choice("schedule", "name", self.name, SCHEDULES)
        _check_choice("schedule", "over", self.over, SCHEDULE_SPANS)
        object.__setattr__(
            self, "power", _check_float("schedule", "power", self.power, 0.0, open_low=True)
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Epochs, batches, seeds, device and precision, the run folder and what it holds."""

    epochs: int = 30
    batch_size: int = 8
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True
    channels_last: bool | str = "auto"
    grad_clip: float = 0.0
    freeze_encoder: float = 0.0
    ema: float = 0.0
    num_workers: int = 0
    metric: str = "mean_iou"
    out_dir: str = "runs"
    overlays: int = 4
    normalisation: str = "auto"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    time_limit_minutes: float = 0.0
    snapshot_minutes: tuple[float, ...] = ()
    val_every: int = 1

    def __post_init__(self) -> None:
        t = "train"
        for key, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("val_every", 1)):
            _check_int(t, key, getattr(self, key), minimum)
        if _check_int(t, "num_workers", self.num_workers, 0) > MAX_WORKERS:
            raise _bad(
                "train.num_workers",
                f"be at most {MAX_WORKERS} (loader processes)",
                self.num_workers,
                f"use about one per CPU core ({os.cpu_count()} here)",
            )
        _check_int(t, "overlays", self.overlays, 0)
        for key in ("deterministic", "amp"):
            _check_bool(t, key, getattr(self, key))
        _check_choice(t, "device", self.device, DEVICES)
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise _bad("train.channels_last", "be 'auto', true or false", repr(self.channels_last))
        object.__setattr__(self, "grad_clip", _check_float(t, "grad_clip", self.grad_clip, 0.0))
        freeze = _check_float(t, "freeze_encoder", self.freeze_encoder, 0.0, 1.0)
        object.__setattr__(self, "freeze_encoder", freeze)
        ema = _check_float(t, "ema", self.ema, 0.0, 0.9999)
        object.__setattr__(self, "ema", ema)
        _check_choice(t, "metric", self.metric, METRICS)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise _bad("train.out_dir", "be a folder name", repr(self.out_dir))
        _check_choice(t, "normalisation", self.normalisation, NORMALISATIONS)
        self._check_mean_std()
        self._check_budget()

    def _check_budget(self) -> None:
        """``time_limit_minutes`` >= 0 (0: none); ``snapshot_minutes`` increasing, > 0, and
        within the limit (a mark past it would never be reached)."""
        t = "train"
        limit = _check_float(t, "time_limit_minutes", self.time_limit_minutes, 0.0)
        object.__setattr__(self, "time_limit_minutes", limit)
        marks = self.snapshot_minutes
        if not isinstance(marks, list | tuple):
            raise _bad("train.snapshot_minutes", "be a list of minutes", repr(marks))
        marks = tuple(_check_float(t, "snapshot_minutes", m, 0.0, open_low=True) for m in marks)
        if any(b <= a for a, b in itertools.pairwise(marks)):
            raise _bad("train.snapshot_minutes", "increase strictly", list(marks))
        if limit > 0 and marks and marks[-1] > limit:
            raise _bad(
                "train.snapshot_minutes",
                f"lie within train.time_limit_minutes ({limit:g})",
                list(marks),
                "raise the limit or drop the later marks",
            )
        object.__setattr__(self, "snapshot_minutes", marks)

    def _check_mean_std(self) -> None:
        t = "train"
        mean, std = _check_floats(t, "mean", self.mean), _check_floats(t, "std", self.std)
        fixed = self.normalisation == "fixed"
        if fixed and (mean is None or std is None or len(mean) != len(std)):
            raise _bad(
                "train.normalisation",
                "come with mean and std lists of equal length when 'fixed'",
                f"mean {self.mean}, std {self.std}",
                "e.g. mean = [0.5], std = [0.25]",
            )
        if not fixed and (mean is not None or std is not None):
            raise _bad(
                "train.mean",
                "be set only with normalisation = 'fixed'",
                f"normalisation {self.normalisation!r}",
                "set train.normalisation = 'fixed' or drop mean and std",
            )
        if std is not None and min(std) <= 0:
            raise _bad("train.std", "be > 0 for every channel", list(std))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}
SECTIONS = ("data", *_SECTION_TYPES)


def _default_data() -> DataConfig:
    return DataConfig(**DEFAULT_DATA)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: one frozen dataclass per TOML table."""

    data: DataConfig = dataclasses.field(default_factory=_default_data)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Rules across tables: a reduced ``data.input_scale`` needs a network that keeps its
        input size (overlap-tile arithmetic of a valid U-Net assumes the native scale)."""
        if self.data.input_scale != 1 and self.model.options.get("padding") == "valid":
            raise _bad(
                "data.input_scale",
                "be 1 with model.options.padding = 'valid'",
                self.data.input_scale,
                "set model.options.padding = 'same', or leave data.input_scale at 1",
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dicts (lists for tuples, None kept), e.g. for the checkpoint."""
        return {name: _plain(_section_dict(getattr(self, name))) for name in SECTIONS}

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> RunConfig:
        """Build from nested tables (a parsed TOML file or :meth:`to_dict`); missing keys take
        the built-in job's defaults."""
        table = _merge(RunConfig().to_dict(), _check_tables(table, "config"), replace=True)
        return _build(table, origins={})

    def to_toml(self) -> str:
        """The config as a TOML file that :func:`load_config` reads back to the same run.

        Relative data paths (relative to the current folder, as the data is opened) are
        written absolute, since a file's relative paths are relative to its own folder.
        """
        table = self.to_dict()
        table["data"] = absolute_data_paths(table["data"], Path.cwd())
        return dump_toml(table)

    def replace(self, **sections: object) -> RunConfig:
        """A copy with whole sections replaced, e.g. ``config.replace(train=...)``."""
        return dataclasses.replace(self, **sections)


def _section_dict(section: object) -> dict[str, Any]:
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    if isinstance(section, DataConfig) and values.get("encoding") is not None:
        encoding = values["encoding"]
        values["encoding"] = (
            encoding.to_config() if hasattr(encoding, "to_config") else dict(encoding)
        )
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _absolute(value: object, folder: Path) -> object:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value  # absolute paths as written; bad values are left to the checks
    return str((folder / value).resolve())


def absolute_data_paths(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A ``[data]`` table with ``root`` and a palette file of ``encoding`` made absolute,
    relative ones taken relative to ``folder``; other keys unchanged."""
    data = dict(data)
    if "root" in data:
        data["root"] = _absolute(data["root"], folder)
    encoding = data.get("encoding")
    if isinstance(encoding, Mapping) and isinstance(encoding.get("palette"), str):
        data["encoding"] = {**encoding, "palette": _absolute(encoding["palette"], folder)}
    return data


def _read_encoding_text(table: dict[str, dict[str, Any]], origin: str) -> dict:
    """A parsed file's or override's tables with ``data.encoding`` given as text read as its
    table (:func:`encoding_table`), so that it merges, and has its palette path resolved, as
    a table does; a refusal names ``origin``."""
    data = table.get("data", {})
    if not isinstance(data.get("encoding"), str):
        return table
    try:
        encoding = encoding_table(data["encoding"])
    except BadValue as exc:
        raise ValueError(_with_origin(exc, {exc.key: origin})) from None
    return {**table, "data": {**data, "encoding": encoding}}


def _with_absolute_paths(table: dict[str, dict[str, Any]], folder: Path) -> dict:
    if "data" in table:
        table = {**table, "data": absolute_data_paths(table["data"], folder)}
    return table


def _check_tables(table: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Check section names and key names (not values) of a parsed file or override set."""
    if not isinstance(table, Mapping):
        raise ValueError(message(f"config {source}", "be a table of tables", repr(table)))
    for section, values in table.items():
        if section not in SECTIONS:
            raise ValueError(
                message(
                    f"section in {source}",
                    f"be one of {list(SECTIONS)}",
                    repr(section),
                    did_you_mean(section, SECTIONS),
                )
            )
        if not isinstance(values, Mapping):
            raise ValueError(
                message(f"[{section}] in {source}", "be a table of keys", repr(values))
            )
        known = [f.name for f in dataclasses.fields(_section_type(section))]
        for key in values:
            if key not in known:
                raise ValueError(
                    message(
                        f"key of [{section}] in {source}",
                        "be known",
                        repr(key),
                        did_you_mean(key, known),
                    )
                )
    return {section: dict(values) for section, values in table.items()}


def _section_type(section: str) -> type:
    return DataConfig if section == "data" else _SECTION_TYPES[section]


# The key that chooses what the rest of a table means, and that table's own defaults.
_KIND_KEYS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "model": ("name", lambda: {"options": {}}),
    "data": ("layout", lambda: _plain(_section_dict(DataConfig()))),
}


def _merge(base: dict, table: Mapping, *, replace: bool) -> dict:
    """``base`` updated by ``table``, section by section.

    Nested tables (model options, the data encoding) are replaced as a whole when ``replace``
    (a file says the whole table) and merged key by key otherwise (``--set`` overrides), except
    that a table naming another ``kind`` (an encoding of another kind) replaces the old one:
    the keys of one kind mean nothing, or something else, to another.
    """
    merged = {name: dict(values) for name, values in base.items()}
    for section, values in table.items():
        current = merged.setdefault(section, {})
        kind = _KIND_KEYS.get(section)
        if kind and kind[0] in values and values[kind[0]] != current.get(kind[0]):
            current = merged[section] = {**kind[1](), kind[0]: current.get(kind[0])}
        for key, value in values.items():
            old = current.get(key)
            if isinstance(value, Mapping) and isinstance(old, Mapping) and not replace:
                same_kind = value.get("kind", old.get("kind")) == old.get("kind")
                current[key] = {**old, **value} if same_kind else dict(value)
            else:
                current[key] = value
    return merged


def _build(table: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str]) -> RunConfig:
    """The sections of ``table``; a bad value names where it came from (``origins``:
    ``"section.key"`` -> the file or ``"--set"``)."""
    sections: dict[str, object] = {}
    for name in SECTIONS:
        values = dict(table.get(name, {}))
        if name == "data":
            sections[name] = _build_data(values, origins)
            continue
        values = {k: v for k, v in values.items() if v is not None}
        try:
            sections[name] = _SECTION_TYPES[name](**values)
        except BadValue as exc:
            raise ValueError(_with_origin(exc, origins)) from None
    try:
        return RunConfig(**sections)
    except BadValue as exc:
        raise ValueError(_with_origin(exc, origins)) from None


def _build_data(values: dict[str, Any], origins: Mapping[str, str]) -> DataConfig:
    sources = {origins.get(f"data.{k}") for k in values} - {None}
    try:
        return DataConfig.from_mapping(values)
    except BadValue as exc:
        raise ValueError(_with_origin(exc, origins)) from None
    except (ValueError, TypeError) as exc:
        note = f" (in {', '.join(sorted(sources))})" if sources else ""
        raise type(exc)(f"{exc}{note}") from None


# Tables and arrays nest at most this deep in a config (a run file needs 3: section, an
# options table, a list in it); deeper is refused before anything recurses over it.
MAX_NESTING = 16


def _too_deep(value: object, where: str) -> str | None:
    """The key path of the first value nested more than :data:`MAX_NESTING` deep, or None.
    Walks with a stack, so a 100,000-level value is measured without recursion."""
    stack = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return path
        if isinstance(item, Mapping):
            stack += [(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in item.items()]
        elif isinstance(item, list | tuple):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item)]
    return None


def _nesting_refusal(source: str, actual: str) -> ValueError:
    expectation = f"nest tables and arrays at most {MAX_NESTING} levels deep"
    return ValueError(message(source, expectation, actual, "flatten it"))


def _bounded(value: Any, source: str) -> Any:
    path = _too_deep(value, "")
    if path is not None:
        raise _nesting_refusal(source, f"deeper at {one_line(path, 80)}")
    return value


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    """``tomllib.loads`` with nesting bounded: a value nested past :data:`MAX_NESTING` (which
    the parser would recurse into until Python's limit) is one line naming ``source``."""
    try:
        return _bounded(tomllib.loads(text), source)
    except RecursionError:
        raise _nesting_refusal(source, "far deeper") from None


def parse_table(text: str, what: str) -> dict[str, Any] | None:
    """A table written as text: a TOML inline table (``{ kind = "index", num_classes = 3 }``)
    or JSON (``{"kind": "index", "num_classes": 3}``); None when the text is neither. Nesting is
    bounded as in a config file (``what`` names the text in that refusal)."""
    try:
        parsed = _parse_toml(f"value = {text}", what)
        value = parsed["value"] if list(parsed) == ["value"] else None
    except tomllib.TOMLDecodeError:
        try:
            value = _bounded(json.loads(text), what)
        except json.JSONDecodeError:
            value = None
        except RecursionError:
            raise _nesting_refusal(what, "far deeper") from None
    return value if isinstance(value, dict) else None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``, an
    inline table), else the bare text as a string."""
    try:
        return _parse_toml(f"value = {text}", f"--set value {one_line(text, 60)}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(text: str) -> dict[str, Any]:
    """``"section.key=value"`` (more dots for nested keys) as a nested table."""
    path, sep, raw = text.partition("=")
    keys = [k.strip() for k in path.split(".")]
    if not sep or len(keys) < 2 or not all(keys):
        raise ValueError(
            message(
                "override",
                "look like section.key=value",
                repr(text),
                "e.g. --set train.epochs=5",
            )
        )
    table: dict[str, Any] = {keys[-1]: parse_value(raw.strip())}
    for key in reversed(keys[:-1]):
        table = {key: table}
    return table


def _leaf_keys(table: Mapping[str, Any]) -> Iterator[str]:
    for section, values in table.items():
        if isinstance(values, Mapping):
            for key in values:
                yield f"{section}.{key}"


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        actual = "a folder" if path.is_dir() else "a missing file"
        raise FileNotFoundError(message(f"config file {path}", "exist", actual))
    try:
        return _parse_toml(path.read_bytes().decode("utf-8"), f"config file {path}")
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(
            message(f"config file {path}", "be valid TOML", str(exc), "see https://toml.io")
        ) from None
    except UnicodeDecodeError:
        raise ValueError(message(f"config file {path}", "be UTF-8 text", "binary data")) from None


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run config: built-in defaults, then the TOML file (if any), then the overrides.

    Data paths of the file are relative to the file's folder, those of the overrides to the
    current folder; both come back absolute (see the module docstring). ``base`` is taken as
    it is.

    Args:
        path: A TOML file, or None for the built-in job.
        overrides: ``"section.key=value"`` strings, applied in order.
        base: Tables to start from instead of the built-in job, e.g. a checkpoint's
            ``config`` when resuming.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: malformed TOML, unknown sections or keys (with a did-you-mean), bad
            values; one line naming the file or ``--set``.
    """
    table = RunConfig.from_dict(base).to_dict() if base is not None else RunConfig().to_dict()
    origins: dict[str, str] = {}
    if path is not None:
        source = str(path)
        parsed = _read_encoding_text(_check_tables(read_toml(path), source), source)
        parsed = _with_absolute_paths(parsed, Path(path).parent)
        table = _merge(table, parsed, replace=True)
        origins.update(dict.fromkeys(_leaf_keys(parsed), source))
    for text in overrides:
        parsed = _read_encoding_text(_check_tables(parse_override(text), f"--set {text}"), "--set")
        parsed = _with_absolute_paths(parsed, Path.cwd())
        table = _merge(table, parsed, replace=False)
        origins.update(dict.fromkeys(_leaf_keys(parsed), "--set"))
    return _build(table, origins)
