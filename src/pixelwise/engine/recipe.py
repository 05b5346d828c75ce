"""Assembly: a :class:`~pixelwise.config.RunConfig` turned into the objects a run trains.

:func:`build_parts` reads the ``[data]``, ``[model]``, ``[loss]`` and ``[train]`` tables:
the data sets (:func:`pixelwise.data.build_datasets`, augmentation drawing from its own
generator), the input normalisation (per-channel mean and std of up to 256 training images,
untransformed, once; or fixed, or none), class weights from the training masks when asked, the
model through the registry with ``num_classes`` and ``in_channels`` taken from the data
(initialised from ``train.seed`` without touching the global random state), and the loss
(:func:`pixelwise.losses.build_loss`). Nothing here has a global side effect; the loop
(:mod:`pixelwise.engine.trainer`) seeds, sets determinism and joins the process group.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pixelwise import _device
from pixelwise._checks import message
from pixelwise.config import RunConfig, TrainConfig
from pixelwise.data import (
    DataSummary,
    build_datasets,
    check_splits,
    check_training_sizes,
    iter_masks,
)
from pixelwise.engine import distributed
from pixelwise.engine.schedule import build_optimizer, build_scheduler
from pixelwise.engine.task import SegmentationTask
from pixelwise.losses import class_weights as compute_class_weights
from pixelwise.losses.build import SegmentationLoss, build_loss
from pixelwise.models import create_model

logger = logging.getLogger(__name__)

# Normalisation statistics come from at most this many training images, evenly spaced.
STATS_SAMPLES = 256


@dataclasses.dataclass
class RunParts:
    """What a run trains: model, data, loss and the facts the checkpoints record.

    Attributes:
        model: The network, on the run's device.
        train_set, val_set: Map-style data sets of sample dicts.
        loss: Called ``loss(logits, target, weight)``.
        class_names, ignore_index: Of the masks.
        normalisation: ``{"mean": [...], "std": [...]}`` per channel.
        class_weights: The loss's class weights (saved with the training state), or None.
        augment_generator: The generator the training augmentation draws from (its state is
            part of resume), or None.
        optimizer: Builds the optimizer from the model's parameters; None for the config's
            ``[optim]``.
        input_scale: ``data.input_scale``: validation runs the model at it
            (:class:`pixelwise.nn.rescale.Rescaled`), as prediction from the checkpoint does.
    """

    model: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    loss: SegmentationLoss | Callable[..., torch.Tensor]
    class_names: tuple[str, ...]
    ignore_index: int
    normalisation: dict
    class_weights: torch.Tensor | None = None
    augment_generator: torch.Generator | None = None
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None
    input_scale: float = 1.0


def resolve_device(name: str, ctx: distributed.DistContext | None = None) -> torch.device:
    """``train.device`` on this machine (:func:`pixelwise._device.resolve_device`); a
    distributed CUDA run uses ``cuda:<local_rank>``."""
    ctx = ctx or distributed.context()
    device = _device.resolve_device(name, what="train.device")
    if device.type != "cuda" or not ctx.enabled:
        return device
    if ctx.local_rank >= torch.cuda.device_count():
        raise ValueError(
            message(
                "processes per machine",
                f"be at most the number of GPUs ({torch.cuda.device_count()})",
                ctx.local_rank + 1,
                "start fewer processes, or train on CPU with train.device = 'cpu'",
            )
        )
    return torch.device("cuda", ctx.local_rank)


def image_statistics(dataset: Dataset, max_samples: int = STATS_SAMPLES) -> dict:
    """Per-channel mean and std of a data set's images (untransformed), as normalisation.

    Reads at most ``max_samples`` images, evenly spaced; a channel with std below 1e-6 gets
    std 1 (a constant channel is only shifted).
    """
    count = len(dataset)
    indices = np.unique(np.linspace(0, count - 1, min(count, max_samples)).round().astype(int))
    read = getattr(dataset, "load_sample", dataset.__getitem__)
    total = squares = None
    pixels = 0
    for index in indices:
        image = read(int(index))["image"].to(torch.float64)  # (C, H, W)
        sums, sq = image.sum(dim=(1, 2)), image.square().sum(dim=(1, 2))  # (C,)
        total, squares = (sums, sq) if total is None else (total + sums, squares + sq)
        pixels += image.shape[1] * image.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return {"mean": mean.tolist(), "std": std.tolist()}


def normalisation_for(
    method: str,
    dataset: Dataset,
    in_channels: int,
    fixed: Mapping,
    model: nn.Module | None = None,
) -> dict:
    """The input normalisation: ``"auto"`` (the ``input_normalisation`` of a model whose
    encoder loaded pretrained weights, else as ``"dataset"``), ``"dataset"`` statistics,
    ``"fixed"`` mean and std, or ``"none"`` (mean 0, std 1)."""
    encoder = getattr(model, "input_normalisation", None)
    if method == "auto" and encoder is not None:
        logger.info("normalisation of the pretrained encoder: %s", encoder)
        return {"mean": list(encoder["mean"]), "std": list(encoder["std"])}
    if method == "none":
        return {"mean": [0.0] * in_channels, "std": [1.0] * in_channels}
    if method == "fixed":
        if len(fixed["mean"]) != in_channels:
            raise ValueError(
                message(
                    "train.mean and train.std",
                    f"give one value per image channel ({in_channels})",
                    f"{len(fixed['mean'])} values",
                )
            )
        return {"mean": list(fixed["mean"]), "std": list(fixed["std"])}
    stats = image_statistics(dataset)
    logger.info("normalisation from the training images: %s", stats)
    return stats


def _check_weight_maps(config: RunConfig, sample: Mapping) -> None:
    if config.loss.name == "weighted_ce" and "weight" not in sample:
        raise ValueError(
            message(
                "loss 'weighted_ce'",
                "have weight maps in the training samples",
                f"samples of data layout '{config.data.layout}' without 'weight'",
                "use loss.name = 'ce', instance data ('instances', 'synthetic') with "
                "weights = true, or folders with data.weight_map_background",
            )
        )


def _class_weights(config: RunConfig, train_set: Dataset) -> torch.Tensor | None:
    method = config.loss.class_weights
    if method == "none":
        return None
    weights = compute_class_weights(
        iter_masks(train_set),
        int(train_set.num_classes),
        method=method,
        ignore_index=int(train_set.ignore_index),
    )
    logger.info("class weights (%s): %s", method, weights.tolist())
    return weights


def build_model_seeded(name: str, seed: int, **kwargs: object) -> nn.Module:
    """``create_model(name, **kwargs)`` initialised from ``seed``, leaving the global random
    state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **kwargs)


def _check_training_sizes(config: RunConfig, summary: DataSummary) -> None:
    """Refuse training images that cannot be batched as configured; warn of a crop larger
    than every image."""
    data = config.data
    for line in check_training_sizes(
        summary,
        crop_size=data.crop_size,
        batch_size=config.train.batch_size,
        scale=data.training_scale,
        rot90=data.rot90,
    ):
        logger.warning(line)


def build_parts(config: RunConfig, *, device: torch.device, rank: int = 0) -> RunParts:
    """Build the data, normalisation, class weights, model and loss of ``config``. Data read
    from files is checked whole first (:func:`pixelwise.data.check_splits`): a bad file in
    either split stops the run before it starts, every problem named.

    Args:
        config: The run.
        device: Where the model goes.
        rank: This process's rank (its augmentation draws from its own generator).
    """
    seed = config.train.seed
    augment = torch.Generator().manual_seed(seed + 1_000_003 * rank)
    train_set, val_set = build_datasets(config.data, generator=augment)
    if config.data.layout != "synthetic":  # files on disk: every one read before training
        summaries = check_splits({"train": train_set, "val": val_set})
        _check_training_sizes(config, summaries["train"])
    first = train_set.load_sample(0)
    _check_weight_maps(config, first)
    in_channels = int(first["image"].shape[0])
    train = config.train
    # data.distance_target: the data set adds the target, the network the channel for it.
    distance = {"distance_head": True} if config.data.distance_target else {}
    model = build_model_seeded(
        config.model.name,
        seed,
        num_classes=int(train_set.num_classes),
        in_channels=in_channels,
        **config.model.options,
        **distance,
    )
    normalisation = normalisation_for(
        train.normalisation,
        train_set,
        in_channels,
        {"mean": train.mean, "std": train.std},
        model,
    )
    weights = _class_weights(config, train_set)
    ignore_index = int(train_set.ignore_index)
    loss = build_loss(
        config.loss.name,
        class_weights=weights,
        ignore_index=ignore_index,
        ce_weight=config.loss.ce_weight,
        dice_weight=config.loss.dice_weight,
    )
    return RunParts(
        model=model.to(device),
        train_set=train_set,
        val_set=val_set,
        loss=loss,
        class_names=tuple(train_set.class_names),
        ignore_index=ignore_index,
        normalisation=normalisation,
        class_weights=weights,
        augment_generator=augment,
        input_scale=config.data.input_scale,
    )


def build_task(parts: RunParts, train: TrainConfig, device: torch.device) -> SegmentationTask:
    """The parts' model, loss, normalisation and input scale on ``device``, with
    ``[train]``'s precision and memory format (channels-last ``"auto"``: on CUDA)."""
    channels_last = (
        train.channels_last if isinstance(train.channels_last, bool) else device.type == "cuda"
    )
    model = parts.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return SegmentationTask(
        model,
        parts.loss,
        parts.normalisation,
        class_names=parts.class_names,
        ignore_index=parts.ignore_index,
        device=device,
        amp=train.amp,
        channels_last=channels_last,
        input_scale=parts.input_scale,
    )


def model_encoder(model: nn.Module, config: RunConfig) -> nn.Module | None:
    """The model's ``encoder`` when ``optim.encoder_lr_scale`` or ``train.freeze_encoder``
    act on it (None when neither is set); a model without one refuses them in one line."""
    scale, freeze = config.optim.encoder_lr_scale, config.train.freeze_encoder
    if scale == 1 and freeze == 0:
        return None
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        key = "optim.encoder_lr_scale" if scale != 1 else "train.freeze_encoder"
        raise ValueError(
            message(
                key,
                "act on a model with an encoder",
                f"model '{config.model.name}' without one",
                "set model.options.encoder (unet, fcn8s, deeplabv3) or drop the key",
            )
        )
    return encoder


def parameter_groups(model: nn.Module, lr: float, encoder_scale: float) -> list[dict]:
    """The model's parameters as optimizer groups: the encoder's at ``lr · encoder_scale``,
    the rest at ``lr`` (one group when the scale is 1)."""
    encoder = getattr(model, "encoder", None)
    if encoder_scale == 1 or not isinstance(encoder, nn.Module):
        return [{"params": list(model.parameters())}]
    own = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    return [{"params": rest}, {"params": list(encoder.parameters()), "lr": lr * encoder_scale}]


def build_optimization(
    model: nn.Module,
    config: RunConfig,
    *,
    factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None,
    steps: int,
    fraction: Callable[[], float],
    has_budget: bool,
    amp: bool,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler]:
    """The optimizer (``factory`` or ``[optim]``), the ``[schedule]`` over ``steps`` optimizer
    steps or over the time budget (``fraction`` of it used), and the gradient scaler."""
    optim, schedule = config.optim, config.schedule
    model_encoder(model, config)  # a model without an encoder refuses the encoder options
    if factory is not None:
        optimizer = factory(model.parameters())
    else:
        optimizer = build_optimizer(
            parameter_groups(model, optim.lr, optim.encoder_lr_scale),
            optim.name,
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
            nesterov=optim.nesterov,
        )
    scheduler = build_scheduler(
        optimizer,
        schedule.name,
        power=schedule.power,
        over=schedule.over,
        total_steps=steps,
        fraction=fraction,
        has_budget=has_budget,
    )
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp)
