"""Whole-image prediction: logits and masks at the image size, files for a folder of images,
and their files.

:func:`whole_image_logits` is the one place that maps a (normalised) image batch to logits at
its size; overlap-tile prediction of large images slots in beside it with the same signature.
Models that keep the input size (padding to their ``size_divisor`` inside) run as they are.
U-Net with ``padding="valid"`` loses a margin on every side, so the image is mirror-padded by
that margin (and up to the next size the network accepts) and the output cropped back, as in
the U-Net paper's overlap-tile strategy for one tile.

Every function takes a :class:`pixelwise.inference.segmenter.Segmenter` (its normalisation is
applied to the images) or a bare network (which sees the images as they are). Nothing here
prints.

A predicted ``<stem>_mask.png`` is written in the mask encoding of the training data by
default (``mask_format="data"``: 0/255 for a ``{0: 0, 255: 1}`` value map, palette colours for
a palette, so that it can go back into a ``masks/`` folder), or as class indices
(``"index"``); a model without a known encoding writes class indices either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelwise._checks import check_choice, check_images, message, one_line
from pixelwise._files import check_output, save_png_atomic
from pixelwise.data._io import read_image
from pixelwise.data.datasets import list_images
from pixelwise.data.encoding import MaskEncoding
from pixelwise.inference._model import (
    eval_mode,
    model_device,
    model_in_channels,
    model_parts,
    output_margin,
    unwrap_model,
)
from pixelwise.inference.tiling import predict as predict_tiled
from pixelwise.nn.distance import distance_outputs
from pixelwise.nn.padding import mirror_pad
from pixelwise.report.palette import class_palette, colorize, overlay

Progress = Callable[[int, int], None]
OUTPUT_KINDS = ("mask", "color", "overlay")
# With instances: <stem>_instances.png (16-bit labels) and <stem>_contours.png.
INSTANCE_KINDS = ("instances", "contours")
MASK_FORMATS = ("data", "index")  # <stem>_mask.png: the training data's encoding, or classes


def covering_input_size(model: nn.Module, size: int) -> int:
    """The smallest input size the model accepts whose output covers ``size`` pixels."""
    margin = output_margin(model)
    if margin == 0:
        return size
    network = unwrap_model(model_parts(model)[0])
    return network.valid_input_sizes_near(size + 2 * margin)[1]


def whole_image_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of normalised images at their own size, in one forward pass.

    A model whose output is smaller than its input sees the images mirror-padded by its margin
    (see :func:`output_margin`), so that every output pixel has its full context.

    Shape:
        images: (N, C, H, W) on the model's device; returns (N, K, H, W).
    """
    margin = output_margin(model)
    if margin == 0:
        return model(images)  # (N, K, H, W)
    height, width = images.shape[-2:]
    in_h, in_w = covering_input_size(model, height), covering_input_size(model, width)
    pad = max(in_h - height, in_w - width) - margin  # >= margin: the far sides need more
    padded = mirror_pad(images, pad)  # (N, C, H + 2·pad, W + 2·pad)
    start = pad - margin
    window = padded[..., start : start + in_h, start : start + in_w]  # (N, C, in_h, in_w)
    return model(window)[..., :height, :width]  # (N, K, H, W)


def predict_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of one image or a batch at the image size, the model in eval mode, without grad.

    Args:
        model: A :class:`pixelwise.inference.segmenter.Segmenter` (e.g. from
            :func:`pixelwise.engine.checkpoint.load_model`), whose normalisation is applied, or
            a bare network, which sees the images as they are. Its train/eval mode is
            restored afterwards.
        images: Float images in [0, 1], moved to the model's device.

    Returns:
        Logits on the model's device.

    Shape:
        images: (C, H, W) or (N, C, H, W); returns (K, H, W) or (N, K, H, W).
    """
    network, normalize = model_parts(model)
    single = isinstance(images, torch.Tensor) and images.dim() == 3
    batch = check_images(images.unsqueeze(0) if single else images, model_in_channels(network))
    batch = normalize(batch.to(model_device(network)))
    with eval_mode(network), torch.inference_mode():
        logits = whole_image_logits(network, batch)  # (N, K, H, W)
    return logits[0] if single else logits


def predict_mask(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted classes (the argmax of :func:`predict_logits`), on the CPU.

    Shape:
        images: (C, H, W) or (N, C, H, W); returns (H, W) or (N, H, W) int64.
    """
    logits = predict_logits(model, images)
    return logits.argmax(dim=-3).cpu()


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found in the given folders (not recursive), in order.

    Raises on a missing path, a folder without images, or two images with the same stem
    (their outputs would collide).
    """
    found: dict[Path, None] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found.update(dict.fromkeys(list_images(item, "image").values()))
        elif item.is_file():
            found[item] = None
        else:
            raise FileNotFoundError(
                message(f"input {item}", "be an image file or a folder of images", "a missing path")
            )
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems and stems[path.stem].resolve() != path.resolve():
            raise ValueError(
                message(
                    "input image stems",
                    "be unique (outputs are named after them)",
                    f"{stems[path.stem]} and {path}",
                    "predict them into separate output folders",
                )
            )
        stems[path.stem] = path
    return list(stems.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (``--shard``) as ``(i, N)``, with 0 ≤ i < N.

    Raises:
        ValueError: anything else, in one line.
    """
    parts = str(text).split("/")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        index, count = (int(p) for p in parts)
        if count >= 1 and 0 <= index < count:
            return index, count
    raise ValueError(
        message(
            "--shard",
            "be i/N with 0 <= i < N (e.g. 0/4 … 3/4 for four jobs)",
            repr(text),
        )
    )


def shard_of(image: str | Path, count: int) -> int:
    """The shard (0 … count-1) an image belongs to: from the SHA-256 of its file name's stem
    alone, so that it does not depend on the order, the folder it was found in, the machine,
    or which other images exist (a job that starts later over a folder that has grown still
    agrees with the others about every image they share)."""
    digest = hashlib.sha256(Path(image).stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_images(images: Sequence[Path], index: int, count: int) -> list[Path]:
    """The images of shard ``index`` of ``count`` (:func:`shard_of`), in their order. The
    shards are disjoint and together hold every image; outputs are named after the stems,
    which :func:`collect_images` makes unique, so shards never write the same file."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int)) or not (
        0 <= index < count
    ):
        raise ValueError(message("shard", "be i of N with 0 <= i < N", f"{index} of {count}"))
    return [image for image in images if shard_of(image, count) == index]


def prediction_paths(image: Path, out_dir: Path, instances: bool = False) -> dict[str, Path]:
    """``<stem>_mask.png``, ``<stem>_color.png`` and ``<stem>_overlay.png`` in ``out_dir``
    (and with ``instances`` ``<stem>_instances.png`` and ``<stem>_contours.png``)."""
    kinds = OUTPUT_KINDS + (INSTANCE_KINDS if instances else ())
    return {kind: Path(out_dir) / f"{Path(image).stem}_{kind}.png" for kind in kinds}


def plan_outputs(
    images: Sequence[Path],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    instances: bool = False,
) -> list[tuple[Path, dict[str, Path]]]:
    """Pair each image with its output paths, refusing before anything is written.

    An output may never be one of the inputs (even with ``overwrite``); an existing output is
    replaced only with ``overwrite``. With ``skip_existing`` an image whose outputs all exist
    is left out (one with only some of them is predicted again). Refusals name the first
    output concerned and count the others.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(message(f"output folder {out_dir}", "be a folder", "a file"))
    plan, existing = [], []
    for image in images:
        paths = prediction_paths(image, out_dir, instances)
        if skip_existing and all(path.is_file() for path in paths.values()):
            continue
        for path in paths.values():
            check_output(
                path,
                images,
                overwrite=True,
                kind="input image",
                fix="choose an output folder other than the images' folder",
            )
            if path.exists() and not (overwrite or skip_existing):
                existing.append(path)
        plan.append((Path(image), paths))
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            message(
                f"output {existing[0]}{more}",
                "not exist already",
                "an existing file",
                "pass --overwrite to replace it, --skip-existing to predict only the images "
                "without outputs, or choose another output folder",
            )
        )
    return plan


def read_image_file(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """Read an image for prediction as float in [0, 1], checking the model's channel count.

    Shape:
        returns (C, H, W) float32.
    """
    pixels = read_image(Path(path))  # (H, W, C); damaged files raise naming the file
    if channels is not None and pixels.shape[-1] != channels:
        raise ValueError(
            message(
                f"image {path}",
                f"have {channels} channel(s), the model's in_channels",
                pixels.shape[-1],
                "convert the image (e.g. to RGB or greyscale) to match the model",
            )
        )
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (C, H, W)


def mask_encoding(model: nn.Module, mask_format: str = "data") -> MaskEncoding | None:
    """The encoding ``<stem>_mask.png`` is written in: for ``"data"`` the model's training
    data's (a Segmenter's ``encoding``), None (class indices) for ``"index"`` or a model
    without one.

    Raises:
        ValueError: the encoding cannot be built (a palette file gone) or has no mask value
            for a class the model predicts; before any file is written, when called first.
    """
    check_choice("mask format", mask_format, MASK_FORMATS)
    if mask_format == "index":
        return None
    try:
        encoding = getattr(model, "encoding", None)  # a Segmenter builds it on first use
    except (ValueError, OSError) as exc:
        raise ValueError(
            message(
                "the mask encoding of the training data",
                "be usable to write masks in",
                one_line(exc),
                "write class indices instead (mask_format='index', --mask-format index)",
            )
        ) from None
    if encoding is not None:
        encoding.encode(np.arange(encoding.num_classes))  # refuses a class without a value
    return encoding


def index_dtype(classes: int) -> type:
    """The integer type class-index PNGs are written in: 8-bit, 16-bit above 256 classes."""
    return np.uint8 if classes <= 256 else np.uint16


def save_prediction(
    image: torch.Tensor,
    mask: torch.Tensor,
    paths: Mapping[str, Path],
    palette: np.ndarray,
    *,
    alpha: float = 0.5,
    encoding: MaskEncoding | None = None,
) -> None:
    """Write the mask, colour mask and overlay PNGs.

    The mask holds ``encoding.encode`` of the classes (the data set's own values or colours,
    see :meth:`pixelwise.data.encoding.MaskEncoding.encode`), or without an encoding the class
    indices (8-bit, 16-bit above 256 classes).

    Shape:
        image: (C, H, W) float in [0, 1]; mask: (H, W) integer classes; palette: (K, 3).
    """
    labels = mask.cpu().numpy()
    dtype = index_dtype(len(palette))
    picture = image.cpu().numpy().transpose(1, 2, 0)  # (H, W, C)
    # Everything is drawn before the first write, so a bad argument leaves no file behind.
    arrays = {
        "mask": labels.astype(dtype) if encoding is None else encoding.encode(labels),
        "color": colorize(labels, palette, ignore_index=None),
        "overlay": overlay(picture, labels, palette, alpha, ignore_index=None),
    }
    for kind, array in arrays.items():
        save_png_atomic(paths[kind], array)


def predict_file(
    model: nn.Module,
    image_path: str | Path,
    paths: Mapping[str, Path],
    palette: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    tile: int = 512,
    tta: bool | str | Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    mask_format: str = "data",
    instances: Mapping[str, object] | None = None,
) -> torch.Tensor:
    """Read one image, predict it and write its three PNGs (five with ``instances``);
    returns the mask (classes).

    Images of any size go through :func:`pixelwise.inference.tiling.predict`: one that fits in
    a tile is predicted whole, a larger one in overlapping tiles (overlap-tile for a valid
    U-Net) with ``progress(done, total)`` over tiles. The network is optimised for inference
    unless it already is (pass a Segmenter of an optimised one to avoid a copy per image; the
    command line does).

    Args:
        model: A :class:`pixelwise.inference.segmenter.Segmenter` (its normalisation,
            palette and encoding are used) or a bare network.
        palette: (K, 3) colours; default the Segmenter's, or
            :func:`pixelwise.report.palette.class_palette` of K for a bare network.
        tta: Test-time augmentation (:func:`pixelwise.inference.tta.check_transforms`); None:
            what ``instances`` records (:func:`instance_plan`), else none.
        mask_format: ``"data"``: ``<stem>_mask.png`` in the training data's encoding
            (:func:`mask_encoding`; class indices without one); ``"index"``: class indices.
        instances: How probabilities become objects (a checkpoint's ``instances`` field, see
            :func:`instance_settings`): ``<stem>_instances.png`` (16-bit, 0 background,
            1 … N) and ``<stem>_contours.png`` (each object's contour in its own colour).

    Shape:
        returns (H, W) int64.
    """
    encoding = mask_encoding(model, mask_format)
    image = read_image_file(image_path, model_in_channels(model))  # (C, H, W)
    if instances is not None:
        instances, tta = instance_plan(instances, tta)
    logits, distance = predict_outputs(
        model, image, tile=tile, tta=tta, progress=progress, distance=instances is not None
    )
    mask = logits.argmax(dim=0).cpu()  # (H, W)
    if palette is None:
        palette = getattr(model, "palette", None)
        palette = class_palette(logits.shape[0]) if palette is None else palette
    if instances is not None:
        objects = objects_of(logits, instances, distance)  # before anything is written
    save_prediction(image, mask, paths, palette, alpha=alpha, encoding=encoding)
    if instances is not None:
        save_png_atomic(paths["instances"], objects.astype(np.uint16))
        save_png_atomic(paths["contours"], contour_overlay(image, objects))
    return mask


def instance_settings(model: nn.Module) -> dict[str, object]:
    """The instance post-processing recorded in the model's checkpoint (chosen on its
    validation split), else the defaults of :class:`pixelwise.instances.InstanceParameters`
    with distance-peak seeds."""
    from pixelwise.instances import InstanceParameters

    checkpoint = getattr(model, "checkpoint", None)
    recorded = getattr(checkpoint, "instances", None)
    if recorded:
        return dict(recorded)
    return {**InstanceParameters().to_dict(), "interior_class": None, "score": None}


def _recorded_tta(settings: Mapping[str, object]) -> tuple[str, ...]:
    """The test-time transforms ``settings`` records; () for none (older checkpoints)."""
    from pixelwise.inference.tta import DIHEDRAL, check_transforms

    value = settings.get("tta")
    if value is None or value is False:
        return ()
    names = value if isinstance(value, list | tuple) else None
    if names and all(isinstance(n, str) for n in names):
        try:
            return check_transforms(tuple(names))
        except ValueError:
            pass
    raise ValueError(
        message(
            "the recorded instances.tta",
            f"be false or a list of distinct transform names from {list(DIHEDRAL)}",
            repr(value),
            "the checkpoint is damaged: train again, or predict without --instances",
        )
    )


def instance_plan(
    settings: Mapping[str, object], tta: bool | str | Sequence[str] | None = None
) -> tuple[dict[str, object], tuple[str, ...]]:
    """How a prediction makes objects: (the post-processing, the test-time transforms).

    With ``tta`` None, what ``settings`` records (:func:`instance_settings`: the choice made
    on the validation split, :mod:`pixelwise.engine.instances`). A given ``tta``
    (:func:`pixelwise.inference.tta.check_transforms`; False or [] for one pass) overrides
    it; turning off a recorded augmentation also takes the parameters the one-pass search
    chose (recorded as ``"one_pass"``). The returned settings' ``"tta"`` is what is used.
    """
    from pixelwise.inference.tta import check_transforms

    recorded = _recorded_tta(settings)
    if tta is None:
        used = recorded
    elif isinstance(tta, list | tuple) and not tta:
        used = ()
    else:
        used = check_transforms(tuple(tta) if isinstance(tta, list | tuple) else tta)
    chosen = dict(settings)
    if recorded and not used and isinstance(settings.get("one_pass"), Mapping):
        chosen.update(settings["one_pass"])
    chosen.pop("one_pass", None)
    chosen["tta"] = list(used) if used else False
    return chosen, used


def predict_outputs(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int = 512,
    tta: bool | str | Sequence[str] = False,
    progress: Progress | None = None,
    distance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The class logits of one image (:func:`pixelwise.inference.tiling.predict`) and, for a
    network with a distance head (:mod:`pixelwise.nn.distance`) when ``distance``, its
    predicted distance map in [0, 1] from the same passes (tiles and test-time transforms);
    None without one.

    Shape:
        image: (C, H, W) -> logits (K, H, W), distance (H, W).
    """
    if not distance:
        return predict_tiled(model, image, tile=tile, tta=tta or False, progress=progress), None
    with distance_outputs(model) as has_head:
        out = predict_tiled(model, image, tile=tile, tta=tta or False, progress=progress)
    if not has_head:
        return out, None
    return out[:-1], torch.sigmoid(out[-1])


def object_maps(logits: torch.Tensor, distance: torch.Tensor | None = None) -> np.ndarray:
    """What objects are made from: the class probabilities (softmax of ``logits``) and, with
    a predicted distance map, that map after them as one more channel.

    Shape:
        logits (K, H, W), distance (H, W) -> (K, H, W) or (K + 1, H, W) float32.
    """
    maps = torch.softmax(logits.float(), dim=0)
    if distance is not None:
        maps = torch.cat([maps, distance.float().to(maps.device)[None]])
    return maps.cpu().numpy()


def objects_of(
    logits: torch.Tensor, settings: Mapping[str, object], distance: torch.Tensor | None = None
) -> np.ndarray:
    """One label per object from ``logits`` (K, H, W) by ``settings`` (:func:`instance_settings`),
    and the predicted ``distance`` map of a network with a distance head (its recorded
    ``interior_class`` is then K: the map seeds and floods the watershed).

    Shape:
        (K, H, W), (H, W) -> (H, W) int32, 0 = background, 1 … N.
    """
    from pixelwise.instances import InstanceParameters, instances_from_probabilities

    fields = InstanceParameters.__dataclass_fields__
    parameters = InstanceParameters(**{k: v for k, v in settings.items() if k in fields})
    probabilities = object_maps(logits, distance)
    interior = settings.get("interior_class")
    classes = probabilities.shape[0]
    if interior is not None and not (
        isinstance(interior, int) and not isinstance(interior, bool) and 0 <= interior < classes
    ):
        raise ValueError(
            message(
                "the recorded instances.interior_class",
                f"be an index below the model's {classes} maps (classes and distance)",
                repr(interior),
                "the checkpoint is damaged: train again, or predict without --instances",
            )
        )
    return instances_from_probabilities(
        probabilities, parameters, interior_class=None if interior is None else int(interior)
    )


def contour_overlay(image: torch.Tensor, objects: np.ndarray) -> np.ndarray:
    """The image with each object's inner contour drawn in its own colour.

    Shape:
        image: (C, H, W) in [0, 1]; objects: (H, W) -> (H, W, 3) uint8.
    """
    from skimage.segmentation import find_boundaries

    from pixelwise.report.palette import as_rgb8

    picture = as_rgb8(image.cpu().numpy().transpose(1, 2, 0)).copy()  # (H, W, 3)
    edges = find_boundaries(objects, mode="inner") & (objects > 0)
    colours = class_palette(int(objects.max()) + 1)  # colour i for object i
    picture[edges] = colours[objects[edges]]
    return picture
