"""``pixelwise.fit``: train any segmentation network on any data set from Python.

The model is any ``nn.Module`` obeying the model contract (``forward(images (N, C, H, W)
float) -> logits (N, K, H, W)``; a valid-padding network may return a centred, smaller map);
the data are map-style data sets whose samples are dicts with ``image`` (C, H, W) float and
``mask`` (H, W) int64 class indices (or ``ignore_index``), and optionally ``weight`` (H, W), a
per-pixel loss weight; other keys are ignored. :func:`fit` builds the same
:class:`~pixelwise.engine.trainer.Trainer` that ``pixelwise train CONFIG`` builds from a config,
so the run folder, checkpoints, time budget, snapshots, resume and report are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from pixelwise._checks import message
from pixelwise.config import (
    LossConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from pixelwise.engine.events import Callbacks, FitResult, Progress
from pixelwise.engine.recipe import RunParts, normalisation_for
from pixelwise.engine.trainer import Trainer
from pixelwise.losses.build import LOSS_NAMES, build_loss

logger = logging.getLogger(__name__)

# With a time budget and no epoch count, the budget alone ends the run.
_UNBOUNDED_EPOCHS = 1_000_000
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _sample_problems(what: str, sample: object) -> list[str]:
    """What is wrong with a data set's first sample against the sample contract."""
    if not isinstance(sample, Mapping):
        return [f"{what} must be a dict with 'image' and 'mask', got {type(sample).__name__}"]
    problems, image, mask = [], sample.get("image"), sample.get("mask")
    if not (isinstance(image, torch.Tensor) and image.dim() == 3 and image.is_floating_point()):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        problems.append(f"{what} 'image' must be a float tensor (C, H, W), got {shape}")
    if not (isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.dtype == torch.int64):
        got = (
            f"{mask.dtype} {tuple(mask.shape)}"
            if isinstance(mask, torch.Tensor)
            else type(mask).__name__
        )
        problems.append(f"{what} 'mask' must be an int64 tensor (H, W), got {got}")
    elif isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[1:] != mask.shape:
        problems.append(
            f"{what} 'image' and 'mask' must share H and W, got {tuple(image.shape[1:])} "
            f"and {tuple(mask.shape)}"
        )
    weight = sample.get("weight")
    if weight is not None and (
        not isinstance(weight, torch.Tensor) or tuple(weight.shape) != tuple(mask.shape)
    ):
        problems.append(f"{what} 'weight' must be a tensor (H, W) like the mask")
    return problems


def check_data(train_data: Dataset, val_data: Dataset | None) -> dict:
    """The first training sample, after checking both data sets against the sample contract;
    every problem found is named in one line."""
    problems = []
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data is None:
            continue
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")) or len(data) == 0:
            problems.append(f"{name} must be a non-empty map-style data set")
            continue
        problems += _sample_problems(f"{name}[0]", data[0])
    if problems:
        raise ValueError("; ".join(problems))
    return train_data[0]


@torch.no_grad()
def infer_num_classes(model: nn.Module, image: torch.Tensor) -> int:
    """K, read off the model's output on one image (the model's mode is restored)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        logits = model(image[None].to(device))
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            message("the model's output", "be one tensor of logits (N, K, H, W)", shape)
        )
    return int(logits.shape[1])


def _class_names(names: Sequence[str] | None, data: Dataset, num_classes: int) -> tuple:
    names = names if names is not None else getattr(data, "class_names", None)
    names = tuple(str(n) for n in names) if names is not None else None
    if names is None or len(names) != num_classes:
        if names is not None:
            logger.warning(
                "%d class names for %d classes: numbered instead", len(names), num_classes
            )
        names = tuple(str(k) for k in range(num_classes))
    return names


def _loss(
    loss: str | Callable, sample: Mapping, class_weights: object, ignore_index: int
) -> tuple[Callable, str]:
    if not isinstance(loss, str):
        return loss, getattr(loss, "name", type(loss).__name__)
    if loss not in LOSS_NAMES:
        LossConfig(name=loss)  # the config's one-line error with a did-you-mean
    if loss == "weighted_ce" and "weight" not in sample:
        raise ValueError(
            message(
                "loss 'weighted_ce'",
                "have weight maps in the training samples",
                "samples without 'weight'",
                "use loss='ce', or add a 'weight' map to each sample",
            )
        )
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    return build_loss(loss, class_weights=weights, ignore_index=ignore_index), loss


def _normalisation(
    normalisation: str | Mapping, data: Dataset, channels: int, model: nn.Module
) -> dict:
    if isinstance(normalisation, Mapping):
        return {"mean": list(normalisation["mean"]), "std": list(normalisation["std"])}
    if normalisation not in ("auto", "dataset", "none"):
        raise ValueError(
            message(
                "normalisation",
                "be 'auto', 'dataset', 'none' or {'mean': [...], 'std': [...]}",
                repr(normalisation),
            )
        )
    return normalisation_for(normalisation, data, channels, {}, model)


def fit(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    epochs: int | None = None,
    minutes: float | None = None,
    loss: str | Callable = "ce",
    class_weights: torch.Tensor | Sequence[float] | None = None,
    optimizer: str | OptimizerFactory = "adam",
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    schedule: str = "poly",
    batch_size: int = 8,
    normalisation: str | Mapping[str, Sequence[float]] = "auto",
    device: str = "auto",
    seed: int = 0,
    deterministic: bool = False,
    val_every: int = 1,
    metric: str = "mean_iou",
    snapshot_minutes: Sequence[float] = (),
    overlays: int = 4,
    num_workers: int = 0,
    grad_clip: float = 0.0,
    amp: bool = True,
    freeze_encoder: float = 0.0,
    encoder_lr_scale: float = 1.0,
    out_dir: str | Path = "runs",
    run_dir: str | Path | None = None,
    callbacks: Progress | Callable | Sequence[Progress | Callable] | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Train ``model`` on ``train_data``, validating on ``val_data``; write a run folder.

    Args:
        model: Any network obeying the model contract (see the module docstring).
        train_data, val_data: Map-style data sets of sample dicts; without ``val_data`` the
            run does not validate and ``best.pt`` is the last checkpoint.
        num_classes: K; None reads it off the model's output on the first training image.
        class_names: K names; default the data set's ``class_names``, else "0", "1", ...
        ignore_index: Mask value left out of the loss and the metrics.
        epochs, minutes: When to stop: after ``epochs`` epochs, after ``minutes`` of training
            (then the schedule decays over the budget), or whichever comes first; neither:
            30 epochs.
        loss: ``"ce"``, ``"weighted_ce"`` (× the samples' ``weight`` maps), ``"dice"``,
            ``"ce_dice"``, or a callable ``loss(logits, target)`` or ``(logits, target,
            weight)`` returning a scalar.
        class_weights: Per-class weights (K,) for a named loss.
        freeze_encoder: Share of the run (of ``minutes``, else of the iterations) during
            which ``model.encoder`` is not updated (and keeps its batch-norm statistics).
        encoder_lr_scale: ``model.encoder``'s learning rate is ``lr`` times this.
        optimizer: ``"adam"``, ``"sgd"`` (momentum 0.9), or a callable building an optimizer
            from the model's parameters (then ``lr`` and ``weight_decay`` are its own).
        lr, weight_decay, schedule: The learning rate, L2 weight decay and its schedule
            (``"poly"``, ``"cosine"``, ``"none"``).
        batch_size: Images per optimizer step (training images must share one size).
        normalisation: ``"auto"`` (a pretrained encoder's own normalisation, else as
            ``"dataset"``), ``"dataset"`` (per-channel mean and std of the training images),
            ``"none"``, or ``{"mean": [...], "std": [...]}``; recorded in the checkpoints and
            applied by the model :func:`pixelwise.load_model` returns.
        device, seed, deterministic, val_every, metric, snapshot_minutes, overlays,
        num_workers, grad_clip, amp: As the ``[train]`` table of a run config.
        out_dir: Parent of the new timestamped run folder; ``run_dir`` an explicit, new one.
        callbacks: :class:`~pixelwise.engine.events.Progress` objects or ``(event, info)``
            functions.
        resume: A checkpoint of an earlier run of the same model to continue.

    Returns:
        The :class:`~pixelwise.engine.events.FitResult` (run folder, best and last
        checkpoints, history, ...).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(message("model", "be a torch.nn.Module", type(model).__name__))
    sample = check_data(train_data, val_data)
    k = num_classes if num_classes is not None else infer_num_classes(model, sample["image"])
    criterion, loss_name = _loss(loss, sample, class_weights, ignore_index)
    config = RunConfig(
        loss=LossConfig(name=loss_name if loss_name in LOSS_NAMES else "ce"),
        optim=OptimConfig(
            name=optimizer if isinstance(optimizer, str) else "adam",
            lr=lr,
            weight_decay=weight_decay,
            encoder_lr_scale=encoder_lr_scale,
        ),
        schedule=ScheduleConfig(name=schedule, over="time" if minutes else "iterations"),
        train=TrainConfig(
            epochs=epochs or (_UNBOUNDED_EPOCHS if minutes else TrainConfig.epochs),
            batch_size=batch_size,
            seed=seed,
            deterministic=deterministic,
            device=device,
            amp=amp,
            grad_clip=grad_clip,
            freeze_encoder=freeze_encoder,
            num_workers=num_workers,
            metric=metric,
            out_dir=str(out_dir),
            overlays=overlays,
            time_limit_minutes=float(minutes or 0.0),
            snapshot_minutes=tuple(snapshot_minutes),
            val_every=val_every,
        ),
    )
    parts = RunParts(
        model=model,
        train_set=train_data,
        val_set=val_data,
        loss=criterion,
        class_names=_class_names(class_names, train_data, k),
        ignore_index=ignore_index,
        normalisation=_normalisation(
            normalisation, train_data, int(sample["image"].shape[0]), model
        ),
        class_weights=getattr(getattr(criterion, "loss", None), "weight", None),
        optimizer=None if isinstance(optimizer, str) else optimizer,
    )
    record = {
        "model": {"name": type(model).__name__},
        "loss": {"name": loss_name},
        **{name: config.to_dict()[name] for name in ("optim", "schedule", "train")},
    }
    if isinstance(callbacks, list | tuple):
        callbacks = Callbacks(callbacks)
    trainer = Trainer(config, run_dir, progress=callbacks, parts=parts, record=record)
    return trainer.fit(resume=resume)
