"""Input normalisation as a module: ``(x − mean) / std`` per channel, for images in [0, 1].

The statistics travel with a trained model (a checkpoint's ``normalisation`` entry,
``{"mean": [...], "std": [...]}``), so the module is built from and written back to that dict.
An empty or missing dict means the model takes images in [0, 1] as they are: the module is then
the identity (``Normalize().identity`` is True) and checks nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from pixelwise._checks import message


def check_normalisation(normalisation: Mapping | None, what: str = "normalisation") -> dict:
    """The normalisation dict with float lists, ``{}`` for None; raises one line when it is not
    ``{"mean": [...], "std": [...]}`` with one positive std per mean."""
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


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel; without statistics, the identity.

    Args:
        mean: One value per channel; None (with ``std`` None) for the identity.
        std: One value per channel, each > 0.

    The statistics are buffers (moved by ``.to(device)``, not in the state dict: a checkpoint
    stores them as its ``normalisation`` entry). Integer images are converted to float32;
    floating images keep their dtype.

    Shape:
        images: (N, C, H, W) or (C, H, W) with C = ``len(mean)``; output: the same.
    """

    def __init__(
        self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        stats = {} if mean is None and std is None else {"mean": mean, "std": std}
        norm = check_normalisation(stats or None)
        # float64 buffers: cast to the image dtype per call, as exact as building them in it.
        for name in ("mean", "std"):
            values = torch.tensor(norm.get(name, []), dtype=torch.float64)
            self.register_buffer(name, values[:, None, None], persistent=False)  # (C, 1, 1)

    @property
    def identity(self) -> bool:
        """True when there are no statistics: ``forward`` returns its input."""
        return self.mean.numel() == 0

    @property
    def channels(self) -> int | None:
        """C, the channel count the statistics are for; None for the identity."""
        return None if self.identity else self.mean.shape[0]

    def as_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` as a checkpoint stores it; ``{}`` for the identity."""
        if self.identity:
            return {}
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @classmethod
    def from_dict(cls, normalisation: Mapping | None) -> Normalize:
        """Build from a checkpoint's ``normalisation`` dict; None or ``{}`` gives the identity."""
        if not normalisation:
            return cls()
        norm = check_normalisation(normalisation)
        return cls(norm["mean"], norm["std"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (the input itself for the identity)."""
        if self.identity:
            return images
        channels = images.shape[-3] if images.dim() >= 3 else None
        if images.dim() not in (3, 4) or channels != self.channels:
            raise ValueError(
                message(
                    "images",
                    f"have shape (N, C, H, W) or (C, H, W) with C = {self.channels} "
                    "(the checkpoint's channels)",
                    f"shape {tuple(images.shape)}",
                )
            )
        dtype = images.dtype if images.is_floating_point() else torch.float32
        mean = self.mean.to(images.device, dtype)  # (C, 1, 1)
        std = self.std.to(images.device, dtype)  # (C, 1, 1)
        return (images.to(dtype) - mean) / std

    def extra_repr(self) -> str:
        return (
            "identity"
            if self.identity
            else f"mean={self.as_dict()['mean']}, std={self.as_dict()['std']}"
        )


def normalise_images(images: torch.Tensor, normalisation: Mapping | None) -> torch.Tensor:
    """``(x − mean) / std`` per channel, for images in [0, 1]; None or ``{}`` returns ``images``.

    The function form of :class:`Normalize` for a normalisation dict.

    Shape:
        images: (N, C, H, W) or (C, H, W); output: the same.
    """
    return Normalize.from_dict(normalisation)(images)
