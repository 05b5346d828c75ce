"""Data: folder, CamVid, instance-label and TIFF-stack data sets, the built-in synthetic data,
mask encodings, joint augmentation, splits and the pre-training data check.

Every data set yields ``{"image": (C, H, W) float in [0, 1], "mask": (H, W) int64, "path": str}``
(plus ``"instances"`` and ``"weight"`` for instance data); see :mod:`pixelwise.data.datasets`.
"""

from pixelwise.config import LAYOUTS, DataConfig
from pixelwise.data.build import build_datasets
from pixelwise.data.checks import (
    DataProblems,
    DataSummary,
    check_dataset,
    check_splits,
    check_training_sizes,
    class_frequencies,
    iter_masks,
)
from pixelwise.data.datasets import (
    CAMVID_ENCODING,
    CamVidDataset,
    DatasetView,
    FolderDataset,
    InstanceDataset,
    PairedDataset,
    SegmentationDataset,
    TiffStackDataset,
    separate_touching,
)
from pixelwise.data.encoding import MaskEncoding, read_class_names, read_palette
from pixelwise.data.splits import split_by_manifest, split_dataset, split_indices
from pixelwise.data.synthetic import BlobStyle, SyntheticNuclei, make_blobs, synthetic_splits

# The transforms need torchvision, whose import takes seconds: loaded on first use, so that
# reading and checking data (``pixelwise check-data``) starts fast.
_TRANSFORMS = (
    "ColourJitter",
    "ElasticDeformation",
    "InstanceMask",
    "JointTransform",
    "RandomCrop",
    "RandomFlip",
    "RandomRot90",
    "RandomScale",
    "WeightMap",
    "build_transforms",
    "elastic_field",
)


def __getattr__(name: str) -> object:
    if name in _TRANSFORMS:
        from pixelwise.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'pixelwise.data' has no attribute {name!r}")


__all__ = [
    "CAMVID_ENCODING",
    "LAYOUTS",
    "BlobStyle",
    "CamVidDataset",
    "ColourJitter",
    "DataConfig",
    "DataProblems",
    "DataSummary",
    "DatasetView",
    "ElasticDeformation",
    "FolderDataset",
    "InstanceDataset",
    "InstanceMask",
    "JointTransform",
    "MaskEncoding",
    "PairedDataset",
    "RandomCrop",
    "RandomFlip",
    "RandomRot90",
    "RandomScale",
    "SegmentationDataset",
    "SyntheticNuclei",
    "TiffStackDataset",
    "WeightMap",
    "build_datasets",
    "build_transforms",
    "check_dataset",
    "check_splits",
    "check_training_sizes",
    "class_frequencies",
    "elastic_field",
    "iter_masks",
    "make_blobs",
    "read_class_names",
    "read_palette",
    "separate_touching",
    "split_by_manifest",
    "split_dataset",
    "split_indices",
    "synthetic_splits",
]
