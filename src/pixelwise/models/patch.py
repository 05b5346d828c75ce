"""The naive patch classifier and its fully convolutional twin.

The first way to segment with a CNN: classify the patch centred on each pixel, one patch at
a time. Inference costs O(H·W × patch cost) because neighbouring patches overlap almost
entirely and every overlap is convolved again. The network here is built so that it is
exactly a function of its patch (unpadded stride-1 convolutions, stride-1 pooling, a last
convolution whose kernel covers the remaining extent, then 1×1 convolutions); the same
weights applied once to the whole mirror-padded image therefore give every pixel's score in
one pass, which is the step from patch classification to fully convolutional networks.

``mode="patches"`` evaluates the naive way, ``mode="dense"`` the fully convolutional way; both
return the same logits (to float rounding) and switch on the fly through ``model.mode``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message
from pixelwise.models.registry import register_model
from pixelwise.nn.padding import mirror_pad

MODES = ("dense", "patches")
# Each feature block trims 6 pixels (two 3×3 convolutions and a 3×3 stride-1 pool); two blocks.
FEATURE_TRIM = 12
MIN_PATCH_SIZE = FEATURE_TRIM + 1


def check_patch_size(value: object) -> int:
    """Return ``value`` if it is an odd integer >= ``MIN_PATCH_SIZE``, else raise.

    Raises:
        TypeError: ``value`` is not an int.
        ValueError: ``value`` is even or too small for the feature layers.
    """
    expectation = f"be an odd integer >= {MIN_PATCH_SIZE}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(message("patch_size", expectation, repr(value), "pass an int such as 25"))
    if value < MIN_PATCH_SIZE:
        fix = f"the feature layers alone trim {FEATURE_TRIM} pixels; use 25, say"
        raise ValueError(message("patch_size", expectation, value, fix))
    if value % 2 == 0:
        fix = f"an odd size has a centre pixel; use {value + 1}"
        raise ValueError(message("patch_size", expectation, value, fix))
    return value


def _feature_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # Pooling before ReLU is the same function (both are monotone) and keeps max-pool ties,
    # whose gradient routing could differ between the two modes, out of the ReLU's zeros.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3),
        nn.MaxPool2d(3, stride=1),
        nn.ReLU(),
    )


def _classifier_layer(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size), nn.ReLU())


class PatchClassifier(nn.Module):
    """A CNN that classifies the ``patch_size``² patch centred on each pixel.

    After Ciresan et al. (2012), who segmented neuronal membranes by classifying the patch
    around every pixel; the FCN paper (Long et al., 2015) shows such a network can be run
    fully convolutionally. Unlike Ciresan's networks this one keeps stride 1 throughout
    (stride-1 max-pooling), so its dense form needs no shift-and-stitch.

    Shape:
        images: (N, C, H, W) -> logits (N, K, H, W), any H, W.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        patch_size: int = 25,
        width: int = 16,
        mode: str = "dense",
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        self.patch_size = check_patch_size(patch_size)
        width = check_positive_int("width", width)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.mode = mode
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.size_divisor = 1
        rest = patch_size - FEATURE_TRIM  # the extent the features leave of one patch
        # Side S in: S = patch_size for one patch, H + patch_size − 1 for the padded image.
        self.body = nn.Sequential(
            OrderedDict(
                block1=_feature_block(in_channels, width),  # (·, D, S − 6, S − 6)
                block2=_feature_block(width, 2 * width),  # (·, 2D, S − 12, S − 12)
                fc=_classifier_layer(2 * width, 4 * width, rest),  # (·, 4D, S − P + 1, ·)
                fc2=_classifier_layer(4 * width, 4 * width, 1),
                score=nn.Conv2d(4 * width, num_classes, 1),  # (·, K, S − P + 1, S − P + 1)
            )
        )
        self.stage_names = ("body.block1", "body.block2", "body.fc", "body.fc2", "body.score")

    @property
    def mode(self) -> str:
        """``"dense"`` (whole image in one pass) or ``"patches"`` (one patch per pixel)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = check_choice("mode", value, MODES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Score every pixel from the patch centred on it.

        Shape:
            images: (N, C, H, W) -> logits (N, K, H, W)
        """
        check_images(images, self.in_channels)
        padded = mirror_pad(images, self.patch_size // 2)  # (N, C, H + P − 1, W + P − 1)
        if self.mode == "dense":
            return self.body(padded)  # (N, K, H, W)
        return self.classify_patches(padded)

    def classify_patches(self, padded: torch.Tensor) -> torch.Tensor:
        """Run the network on the patch of every pixel, ``chunk_size`` patches at a time.

        Patches are a strided view of the padded image; only one chunk is copied at a time,
        so memory stays bounded whatever the image size.

        Shape:
            padded: (N, C, H + P − 1, W + P − 1) -> logits (N, K, H, W)
        """
        p = self.patch_size
        n = padded.shape[0]
        h, w = padded.shape[2] - p + 1, padded.shape[3] - p + 1
        view = padded.unfold(2, p, 1).unfold(3, p, 1)  # (N, C, H, W, P, P), no copy
        view = view.permute(0, 2, 3, 1, 4, 5)  # (N, H, W, C, P, P)
        scores = []
        for start in range(0, n * h * w, self.chunk_size):
            flat = torch.arange(
                start, min(start + self.chunk_size, n * h * w), device=padded.device
            )
            rows, cols = (flat // w) % h, flat % w
            patches = view[flat // (h * w), rows, cols]  # (chunk, C, P, P)
            scores.append(self.body(patches).flatten(1))  # (chunk, K)
        logits = torch.cat(scores).reshape(n, h, w, self.num_classes)  # (N, H, W, K)
        return logits.permute(0, 3, 1, 2)  # (N, K, H, W)


@register_model(
    "patch_classifier",
    summary="Naive per-pixel patch CNN; mode='dense' runs the same weights fully convolutionally",
    paper="https://arxiv.org/abs/1411.4038",
)
def build(
    *,
    num_classes: int,
    in_channels: int = 3,
    patch_size: int = 25,
    width: int = 16,
    mode: str = "dense",
    chunk_size: int = 256,
) -> nn.Module:
    """Build the patch classifier.

    Args:
        num_classes: K, the number of classes.
        in_channels: C, the number of image channels.
        patch_size: P, the odd side of the patch classified for each pixel (>= 13).
        width: D, channels of the first block (then 2D, and 4D in the classifier).
        mode: ``"dense"`` (fully convolutional, the default) or ``"patches"`` (the naive
            per-pixel loop); the outputs are the same, and ``model.mode`` switches later.
        chunk_size: patches per network call in ``"patches"`` mode (bounds memory).

    Shape:
        images: (N, C, H, W) -> logits (N, K, H, W)
    """
    return PatchClassifier(
        num_classes=num_classes,
        in_channels=in_channels,
        patch_size=patch_size,
        width=width,
        mode=mode,
        chunk_size=chunk_size,
    )
