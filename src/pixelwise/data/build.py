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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from pixelwise._checks import message
from pixelwise.config import DataConfig
from pixelwise.data.datasets import (
    CAMVID_ENCODING,
    CamVidDataset,
    FolderDataset,
    InstanceDataset,
    SegmentationDataset,
    TiffStackDataset,
)
from pixelwise.data.encoding import MaskEncoding
from pixelwise.data.splits import split_dataset
from pixelwise.data.synthetic import SyntheticNuclei

# (images, masks) under root when the config names none.
DEFAULT_NAMES = {
    "folders": ("images", "masks"),
    "instances": ("images", "instances"),
    "tiff": ("train-volume.tif", "train-labels.tif"),
}


def _encoding(config: DataConfig) -> MaskEncoding:
    if config.encoding is not None:
        return MaskEncoding.from_config(config.encoding)
    if config.layout == "camvid":
        return CAMVID_ENCODING
    raise ValueError(
        message(
            f"the mask encoding of layout '{config.layout}'",
            "be declared",
            "nothing",
            'e.g. encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }',
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
            root, images=images, instances=masks, weights=config.weights, **common
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


def build_datasets(
    config: DataConfig | Mapping[str, object], *, generator: torch.Generator | None = None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training set (with augmentation) and the validation set (without) of a config.

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
        scale=config.scale,
        hflip=config.hflip,
        vflip=config.vflip,
        rot90=config.rot90,
        elastic_std=config.elastic_std,
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
        train_split, val_split = config.images or "train", config.masks or "val"
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
