"""Encoders taken from torchvision's definitions, and safe loading of local weight files.

Pretrained weights are only ever read from a file path the user gives: nothing here
downloads. Files are loaded with ``weights_only=True`` (no pickled code runs), or as
safetensors when the path ends in ``.safetensors``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from pixelwise._checks import message


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` without executing pickled code.

    Accepts a plain state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            message(what, "be an existing file", str(path), "give the path of a local file")
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse is reported as one line naming the file
        raise ValueError(
            message(
                what,
                "be a readable torch or safetensors file",
                f"{path} ({exc.__class__.__name__}: {' '.join(str(exc).split())})",
            )
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            message(what, "hold a state dict of tensors", f"{path} ({type(state).__name__})")
        )
    return state


def load_local_weights(
    module: nn.Module, path: str | Path, *, prefix: str = "", what: str = "weights file"
) -> None:
    """Load a state dict from a local file into ``module``, strictly.

    Args:
        module: the module to fill.
        path: a local ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors`` file.
        prefix: keep only keys starting with this prefix and strip it (e.g. ``"features."``
            to take the convolutional part of a torchvision classifier's file).
        what: how the file is named in error messages.
    """
    state = read_state_dict(path, what)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ValueError(
            message(
                what,
                "match the network's parameter names",
                f"{path}: {detail}",
                "check the file is for this architecture",
            )
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                message(
                    what,
                    "match the network's parameter shapes",
                    f"{path}: {key} is {tuple(value.shape)}, expected {tuple(own[key].shape)}",
                )
            )
    module.load_state_dict(state)


# The VGG16 layout ("D") as torchvision defines it: channel counts, "M" = 2×2 max-pooling.
VGG16_LAYOUT: tuple[int | str, ...] = tuple(tv_vgg.cfgs["D"])


def check_width(width: object, what: str = "width") -> float:
    """Return ``width`` as a float if it is a positive finite number, else raise a ValueError."""
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width < math.inf:
        raise ValueError(
            message(
                what,
                "be a positive number (channel multiplier)",
                repr(width),
                "use 1.0 for the paper's channels or e.g. 0.125 for a small model",
            )
        )
    return float(width)


def check_torchvision_layout(
    width: float, in_channels: int, *, architecture: str, what: str = "encoder_weights"
) -> None:
    """Raise a ValueError unless a torchvision ``architecture`` file fits: width 1.0, C = 3."""
    if width != 1.0 or in_channels != 3:
        raise ValueError(
            message(
                what,
                f"be used with width=1.0 and in_channels=3 (torchvision's {architecture} layout)",
                f"width={width}, in_channels={in_channels}",
                "build with width=1.0 and in_channels=3, or leave encoder_weights=None",
            )
        )


def scale_channels(channels: int, width: float) -> int:
    """``channels`` scaled by ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


class Pooled(NamedTuple):
    """One encoder stage after max-pooling, with what max-unpooling needs to undo it.

    Shape:
        features: (N, D, H', W'); indices: (N, D, H', W') flat positions in the
        (size[0], size[1]) plane before pooling; size: (H_before, W_before).
    """

    features: torch.Tensor
    indices: torch.Tensor
    size: torch.Size


class VGGEncoder(nn.Module):
    """The 13 convolutions of VGG16 (torchvision's definition) in five blocks, each closed
    by 2×2 max-pooling that also returns its indices.

    The layers are the ones ``torchvision.models.vgg.make_layers`` builds, regrouped as
    ``block1..block5`` and ``pool1..pool5`` so each stage has a name; ``width`` scales the
    channels (1.0 gives 64, 128, 256, 512, 512). Weights come from a torchvision ``vgg16`` /
    ``vgg16_bn`` state dict through :meth:`load_torchvision_features`.

    Args:
        in_channels: C; a value other than 3 replaces the first convolution.
        width: channel multiplier.
        batch_norm: the ``vgg16_bn`` form (batch norm after each convolution).
        ceil_mode: round pooled sizes up (45 -> 23) instead of down (45 -> 22), so that the
            last row and column of an odd size take part in pooling.

    Shape:
        (N, C, H, W) -> five pooled maps (N, D_b, H/2^b, W/2^b), b = 1..5, D = ``channels``;
        H/2^b rounds down, or up with ``ceil_mode``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        batch_norm: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        layout = [v if v == "M" else scale_channels(int(v), width) for v in VGG16_LAYOUT]
        layers = tv_vgg.make_layers(layout, batch_norm=batch_norm)
        if in_channels != 3:
            layers[0] = nn.Conv2d(in_channels, int(layout[0]), kernel_size=3, padding=1)
        blocks, self._torchvision_names = _split_at_pools(layers)
        self.channels: tuple[int, ...] = tuple(
            int(layout[i - 1]) for i, v in enumerate(layout) if v == "M"
        )
        for b, block in enumerate(blocks, start=1):
            self.add_module(f"block{b}", block)
            self.add_module(
                f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=ceil_mode, return_indices=True)
            )
        init_like_torchvision_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The pooled maps pool1..pool5 (see the class docstring for shapes)."""
        return tuple(stage.features for stage in self.forward_with_indices(x))

    def forward_with_indices(self, x: torch.Tensor) -> tuple[Pooled, ...]:
        """pool1..pool5, each with its pooling indices and the size before pooling."""
        stages = []
        for b in range(1, 6):
            x = getattr(self, f"block{b}")(x)  # (N, D_b, H/2^(b-1), W/2^(b-1))
            size = x.shape[-2:]
            x, indices = getattr(self, f"pool{b}")(x)  # (N, D_b, H/2^b, W/2^b)
            stages.append(Pooled(x, indices, size))
        return tuple(stages)

    def load_torchvision_features(
        self, state: dict[str, torch.Tensor], *, source: str, what: str
    ) -> None:
        """Copy the ``features.*`` tensors of a torchvision VGG16 state dict into the blocks.

        Raises a one-line ValueError naming ``source`` when a tensor is missing or has
        another shape (wrong architecture, width or in_channels).
        """
        converted = {}
        for key, own in self.state_dict().items():
            module_name, _, tensor_name = key.rpartition(".")
            file_key = f"{self._torchvision_names[module_name]}.{tensor_name}"
            converted[key] = take_tensor(state, file_key, own.shape, source=source, what=what)
        self.load_state_dict(converted)


def _split_at_pools(layers: nn.Sequential) -> tuple[list[nn.Sequential], dict[str, str]]:
    """Cut torchvision's flat ``features`` at its max-pools; map new names to ``features.i``."""
    blocks: list[nn.Sequential] = []
    current: list[nn.Module] = []
    names: dict[str, str] = {}
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
            continue
        names[f"block{len(blocks) + 1}.{len(current)}"] = f"features.{index}"
        current.append(layer)
    return blocks, names


@torch.no_grad()
def init_like_torchvision_(module: nn.Module) -> None:
    """Initialise convolutions and batch norms in ``module`` as torchvision's VGG does.

    Kaiming normal (fan-out, ReLU gain) weights and zero biases for convolutions; batch norm
    scale 1, shift 0. ``make_layers`` alone would leave PyTorch's defaults.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def take_tensor(
    state: dict[str, torch.Tensor],
    key: str,
    shape: tuple[int, ...] | torch.Size,
    *,
    source: str,
    what: str,
) -> torch.Tensor:
    """``state[key]`` checked to exist with ``shape``; a one-line ValueError naming ``source``."""
    if key not in state:
        first = sorted(state)[:3]
        raise ValueError(
            message(
                what,
                f"hold '{key}'",
                f"{source} without it (its keys begin {first})",
                "give a torchvision state dict of the architecture the model names",
            )
        )
    tensor = state[key]
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            message(
                what,
                f"hold '{key}' of shape {tuple(shape)}",
                f"{tuple(tensor.shape)} in {source}",
                "check the file is for this architecture",
            )
        )
    return tensor
