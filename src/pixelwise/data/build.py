"""Training and validation data sets from a small config, for the training engine.

A ``[data]`` table of a run's TOML file, e.g.::

    [data]
    layout = "folders"            # "folders" | "camvid" | "instances" | "tiff" | "synthetic"
    root = "../../shared/data/isbi2012"   # relative to the TOML file's folder
    encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }
    crop_size = 256
    hflip = true
    elastic_std = 10.0
    val_fraction = 0.2
    shuffle_split = false         # ISBI: slices 00–19 train, 20–24 validate

Mask encodings are declared for the ``folders`` and ``tiff`` layouts; CamVid, instance and
synthetic data know theirs.

Beside the training split, the rules that evaluation and data checks share live here:
:func:`folder_table` (the ``[data]`` table of a data folder, with a layout or encoding given
on the command line, :func:`override_data`), :func:`evaluation_dataset` (one split read
without augmentation) and :func:`check_classes` (a data set against a model's classes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch

from pixelwise._checks import check_choice, message
from pixelwise.config import LAYOUTS, DataConfig
from pixelwise.data.datasets import (
    CAMVID_ENCODING,
    CamVidDataset,
    DatasetView,
    FolderDataset,
    InstanceDataset,
    SegmentationDataset,
    TiffStackDataset,
)
from pixelwise.data.encoding import EXAMPLE, MaskEncoding
from pixelwise.data.splits import split_dataset
from pixelwise.data.synthetic import SyntheticNuclei

# The layouts of data on disk (synthetic data is generated).
FOLDER_LAYOUTS = tuple(layout for layout in LAYOUTS if layout != "synthetic")
CAMVID_EVAL_SPLITS = ("val", "train", "test")
EVAL_SPLITS = ("val", "train", "all")
# The fix for a data folder named on the command line without an encoding.
ENCODING_EXAMPLE = f"e.g. --encoding '{EXAMPLE.to_toml()}'"
# (images, masks) under root when the config names none.
DEFAULT_NAMES = {
    "folders": ("images", "masks"),
    "instances": ("images", "instances"),
    "tiff": ("train-volume.tif", "train-labels.tif"),
}


def declared_encoding(
    data: DataConfig | Mapping[str, object] | None,
) -> MaskEncoding | Mapping[str, object] | None:
    """How the mask files of a ``[data]`` table (or a :class:`DataConfig`) encode classes, as
    declared, not yet built (a palette file is read when it is): the table's ``encoding``, else
    CamVid's own for the camvid layout; None where nothing is declared (instance and synthetic
    data, whose masks are not class files)."""
    if data is None:
        return None
    if isinstance(data, DataConfig):
        encoding, layout = data.encoding, data.layout
    else:
        encoding, layout = data.get("encoding"), data.get("layout")
    if encoding is None and layout == "camvid":
        return CAMVID_ENCODING
    return encoding


def _encoding(config: DataConfig) -> MaskEncoding:
    declared = declared_encoding(config)
    if declared is not None:
        return MaskEncoding.from_config(declared)
    raise ValueError(
        message(
            f"the mask encoding of layout '{config.layout}'",
            "be declared",
            "nothing",
            f"e.g. encoding = {EXAMPLE.to_toml()}",
        )
    )


def full_dataset(config: DataConfig) -> SegmentationDataset:
    """Every sample under ``config.root`` (folders, instances, tiff layouts), unsplit and
    without augmentation."""
    root = Path(config.root)
    default_images, default_masks = DEFAULT_NAMES[config.layout]
    images, masks = config.images or default_images, config.masks or default_masks
    common = {"channels": config.channels}
    if config.layout == "instances":
        return InstanceDataset(
            root,
            images=images,
            instances=masks,
            weights=config.weights,
            target=config.instance_target,
            boundary_width=config.boundary_width,
            distance=config.distance_target,
            **common,
        )
    common["class_names"] = config.class_names
    if config.layout == "folders":
        return FolderDataset(
            root,
            _encoding(config),
            images=images,
            masks=masks,
            weight_map_background=config.weight_map_background,
            **common,
        )
    return TiffStackDataset(root / images, root / masks, _encoding(config), **common)


def camvid_folder(config: DataConfig, split: str) -> str:
    """The CamVid folder of a split: the config's ``images`` / ``masks`` name the training and
    validation folders (default ``train`` and ``val``); any other split is its own folder."""
    return {"train": config.images or "train", "val": config.masks or "val"}.get(split, split)


def build_datasets(
    config: DataConfig | Mapping[str, object], *, generator: torch.Generator | None = None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training set (with augmentation) and the validation set (without) of a config.

    Training samples are resized by ``data.input_scale`` (with ``data.scale``'s random range,
    :attr:`DataConfig.training_scale`) before the crop; validation samples keep their size
    (prediction resizes them, :class:`pixelwise.nn.rescale.Rescaled`).

    Args:
        config: A :class:`DataConfig` or its TOML table.
        generator: Source of the augmentation's randomness; None for the global generator.

    Returns:
        (train, val); both carry ``class_names``, ``num_classes`` and ``ignore_index``.
    """
    from pixelwise.data.transforms import build_transforms

    if not isinstance(config, DataConfig):
        config = DataConfig.from_mapping(config)
    # Instance and synthetic data decode to MaskEncoding.index(2), whose ignore_index is 255.
    fixed = config.layout in ("instances", "synthetic")
    ignore_index = 255 if fixed else _encoding(config).ignore_index
    train_transform = build_transforms(
        crop_size=config.crop_size,
        scale=config.training_scale,  # data.scale times data.input_scale, before the crop
        hflip=config.hflip,
        vflip=config.vflip,
        rot90=config.rot90,
        elastic_std=config.elastic_std,
        colour_jitter=config.colour_jitter,
        invert=config.invert,
        ignore_index=ignore_index,
        generator=generator,
    )
    if config.layout == "synthetic":
        kwargs = {"size": config.image_size, "seed": config.seed, "weights": config.weights}
        train = SyntheticNuclei(
            config.num_train, split="train", transform=train_transform, **kwargs
        )
        return train, SyntheticNuclei(config.num_val, split="val", **kwargs)
    if config.layout == "camvid":
        kwargs = {"encoding": _encoding(config), "channels": config.channels}
        train_split, val_split = camvid_folder(config, "train"), camvid_folder(config, "val")
        train = CamVidDataset(config.root, train_split, transform=train_transform, **kwargs)
        return train, CamVidDataset(config.root, val_split, **kwargs)
    manifest = Path(config.root) / config.manifest if config.manifest else None
    return split_dataset(
        full_dataset(config),
        val_fraction=config.val_fraction,
        seed=config.seed,
        shuffle=config.shuffle_split,
        manifest=manifest,
        train_transform=train_transform,
        val_transform=None,
    )


def evaluation_dataset(
    config: DataConfig | Mapping[str, object], split: str = "val"
) -> SegmentationDataset:
    """The samples of one split of a data config, read without augmentation.

    Args:
        config: A :class:`DataConfig` or its ``[data]`` table (augmentation keys are ignored).
        split: ``"val"`` or ``"train"`` as the training run split the data; ``"all"`` for every
            sample under the root (a separate test folder); for CamVid the split folder
            (``"val"``, ``"train"`` or ``"test"``).
    """
    if not isinstance(config, DataConfig):
        config = DataConfig.from_mapping(config)
    config = dataclasses.replace(
        config,
        crop_size=None,
        scale=None,
        hflip=False,
        vflip=False,
        rot90=False,
        elastic_std=0.0,
        colour_jitter=0.0,
        invert=0.0,
        weights=False,  # U-Net weight maps are for training losses
    )
    if config.layout == "camvid":
        check_choice("split", split, CAMVID_EVAL_SPLITS)
        folder = camvid_folder(config, split)
        return CamVidDataset(
            config.root, folder, encoding=_encoding(config), channels=config.channels
        )
    check_choice("split", split, EVAL_SPLITS)
    if split == "all":
        if config.layout == "synthetic":
            raise ValueError(message("split 'all'", "name data under a root", "layout synthetic"))
        return full_dataset(config)
    train, val = build_datasets(config)
    chosen = train if split == "train" else val
    # A view without the transform: evaluation sees the images as stored.
    return DatasetView(chosen, range(len(chosen))) if chosen.transform is not None else chosen


def override_data(
    table: Mapping[str, object],
    *,
    layout: str | None = None,
    encoding: Mapping[str, object] | None = None,
) -> dict:
    """A ``[data]`` table with another layout and/or mask encoding.

    A new layout drops the table's ``images``, ``masks`` and ``manifest`` (folder names and
    manifests belong to the layout they were written for).
    """
    table = dict(table)
    if layout and layout != table.get("layout"):
        table = {k: v for k, v in table.items() if k not in ("images", "masks", "manifest")}
        table["layout"] = layout
    if encoding is not None:
        table["encoding"] = dict(encoding)
    return table


def folder_table(
    base: Mapping[str, object],
    root: str,
    *,
    layout: str | None = None,
    encoding: Mapping[str, object] | None = None,
) -> dict:
    """The ``[data]`` table of the data folder ``root``: ``base`` (e.g. a checkpoint's) with
    ``root``, ``layout`` and ``encoding`` applied; the layout defaults to ``folders``.

    Raises:
        ValueError: the layout is ``synthetic``, or a folders / tiff layout has no encoding.
    """
    table = {"layout": "folders", **override_data(base, layout=layout, encoding=encoding)}
    table["root"] = root
    if table["layout"] == "synthetic":
        raise ValueError(
            message(
                f"the layout of {root}",
                f"be one of {list(FOLDER_LAYOUTS)}",
                "'synthetic' (the checkpoint's built-in training data)",
                "pass --layout",
            )
        )
    if table["layout"] in ("folders", "tiff") and table.get("encoding") is None:
        raise ValueError(
            message(f"the mask encoding of {root}", "be declared", "nothing", ENCODING_EXAMPLE)
        )
    return table


def check_classes(dataset: SegmentationDataset, num_classes: int, data: str) -> None:
    """Refuse, in one line, a data set whose encoding gives other classes than the model's."""
    if dataset.num_classes != num_classes:
        raise ValueError(
            message(
                f"the classes of {data}",
                f"be the checkpoint's {num_classes}",
                f"{dataset.num_classes} from the mask encoding",
                "pass the --encoding the model was trained with",
            )
        )
