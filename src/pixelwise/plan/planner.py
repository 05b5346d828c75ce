"""The plan: a run config chosen from a data fingerprint, measured speeds and a time budget.

:func:`candidates` lists the configurations worth measuring on this machine (one model at a
few widths, at the crop and batch the data and device allow); :func:`choose` is a pure
function of the :class:`~pixelwise.plan.fingerprint.Fingerprint`, the measured
:class:`Speed` of each candidate and the budget, and returns a :class:`Plan`: the run
config's tables, a reason for each choice, and the candidates' table.

The rules, and the measurements behind them, are in ``docs/PLANNING.md``. In short: under a
budget the network that trains enough iterations wins over a wider one that trains few, so
the widest candidate that reaches :data:`MIN_ITERATIONS` in the budget is chosen; the
learning rate decays over the budget (poly over time); class weights only where classes are
many and some rare (they move a binary decision threshold away from the best pixel error);
no elastic deformation at budgets where every iteration counts; flips and rotations unless
the scenes have an up direction; images much larger than the crop train (and predict) at a
reduced input scale under a short budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from pixelwise.plan.fingerprint import Fingerprint

# Iterations a budget should buy: the widest candidate that reaches this is chosen. Measured
# (docs/PLANNING.md): width 16 at 588 iterations beat width 32 at 167 (ISBI 2012), and width 8
# at 750 lost to width 32 at 106 (nuclei): the crossing lies between, and 400 is its middle.
MIN_ITERATIONS = 400
# When no candidate reaches MIN_ITERATIONS: the widest within this share of the most iterations.
NEAR_FASTEST = 0.8
# The share of the budget validation may take, and the most validations worth running.
VALIDATION_SHARE = 0.08
MAX_VALIDATIONS = 20
# Fewer validation images (or pixels) than this is too few to trust the best checkpoint by.
MIN_VAL_IMAGES = 4
MIN_VAL_PIXELS = 512 * 512
# Widths measured for the U-Net, narrowest first, and its crop when images allow.
WIDTHS = (8, 16, 32)
CROP = 256
# Batch sizes: one on the CPU (more images an iteration buy no throughput there); on CUDA each
# width is measured at each of these, and the one with the most pixels per second is trained.
CPU_BATCH, CPU_SMALL_BATCH = 4, 8
CUDA_BATCHES = (8, 16, 32)
# With pixelwise[pretrained] installed and grey or RGB images, a U-Net over this ImageNet
# encoder is measured too, and preferred when it trains enough iterations.
PRETRAINED = {"encoder": "efficientnet_lite0", "encoder_weights": "imagenet"}
# Under this budget (minutes), images whose median shorter side exceeds SCALE_SIDE train at
# the largest of SCALES that brings it within SCALE_SIDE.
SCALE_BUDGET_MINUTES = 60.0
SCALE_SIDE = 4 * CROP
SCALES = (1.0, 0.5, 0.25, 0.125)
# Classes rarer than this share of the labelled pixels (with three classes or more) get
# median-frequency weights.
RARE_CLASS = 0.02
# Instance data whose objects touch at least this often trains background / interior /
# boundary, so that the network learns where touching objects part; the boundary is 2 pixels
# wide for objects of BOUNDARY_AREA pixels or more (median), else 1.
TOUCHING_SHARE = 0.05
BOUNDARY_AREA = 200.0
# Instance targets with a thin class that parts touching objects: they train on cross entropy
# plus soft Dice (docs/PLANNING.md, "loss").
SEPARATING_TARGETS = ("three_class", "core")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration to measure: model, options, training crop and batch size."""

    model: str
    options: Mapping[str, object]
    crop: int | None
    batch: int
    # Several batch sizes of one network are measured (CUDA): the label names the batch.
    batch_in_label: bool = False

    @property
    def label(self) -> str:
        width = self.options.get("base_width")
        encoder = self.options.get("encoder")
        batch = f" b{self.batch}" if self.batch_in_label else ""
        return (
            self.model
            + (f"+{encoder}" if encoder else "")
            + (f" w{width}" if width and not encoder else "")
            + batch
        )


@dataclasses.dataclass(frozen=True)
class Speed:
    """A candidate measured on this machine: seconds per training iteration, and validation
    throughput in pixels per second (forward only); ``fits`` is False when it ran out of
    memory."""

    step_seconds: float
    eval_pixels_per_second: float
    fits: bool = True


@dataclasses.dataclass(frozen=True)
class Plan:
    """A chosen run config and why.

    Attributes:
        tables: The run config, section → keys (what ``pixelwise train`` reads).
        reasons: ``"section.key"`` → why it was chosen (the TOML's comments).
        rows: One per candidate: label, parameters or None, seconds per iteration,
            iterations in the budget, chosen.
        warnings: Lines to print (a validation split too small to trust, ...).
    """

    tables: Mapping[str, Mapping[str, object]]
    reasons: Mapping[str, str]
    rows: Sequence[tuple[str, float, int, bool]]
    warnings: Sequence[str] = ()


def input_scale_for(fp: Fingerprint, minutes: float) -> float:
    """The scale the run trains and predicts at: under :data:`SCALE_BUDGET_MINUTES`, the
    largest of :data:`SCALES` that brings the median image's shorter side within
    :data:`SCALE_SIDE` (the smallest scale when none does); 1 otherwise."""
    side = min(fp.median_size)
    if minutes >= SCALE_BUDGET_MINUTES or side <= SCALE_SIDE:
        return 1.0
    return next((s for s in SCALES if side * s <= SCALE_SIDE), SCALES[-1])


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) as the network sees it at ``scale`` (``round(s·H)``, as the resize does)."""
    return tuple(max(1, round(n * scale)) for n in size)


def crop_for(fp: Fingerprint, divisor: int = 16, scale: float = 1.0) -> int | None:
    """The training crop, of the images at ``scale``: :data:`CROP` when every image holds it,
    else the largest multiple of ``divisor`` inside the smallest image; None when all images
    share one small size (the whole image trains)."""
    sizes = {scaled_size(size, scale) for size in fp.sizes}
    smallest = min(min(h, w) for h, w in sizes)
    if smallest >= CROP:
        return CROP
    if len(sizes) == 1:
        return None
    return max(divisor, smallest // divisor * divisor)


def candidates(
    fp: Fingerprint,
    device: str = "cpu",
    model: str = "unet",
    *,
    scale: float = 1.0,
    pretrained: bool = False,
) -> list[Candidate]:
    """The configurations worth measuring for ``fp`` on ``device`` with the images at
    ``scale`` (:func:`input_scale_for`): ``model`` at each width of :data:`WIDTHS` (other
    models at their defaults), depth 4 (3 for crops under 128), and, when ``pretrained``
    encoders are installed and the images are grey or RGB, a U-Net over :data:`PRETRAINED`
    last; on the CPU at one batch size (:data:`CPU_BATCH`, :data:`CPU_SMALL_BATCH` under 128
    pixels), on CUDA at each of :data:`CUDA_BATCHES`."""
    crop = crop_for(fp, scale=scale)
    side = crop or min(scaled_size(fp.median_size, scale))
    cuda = device == "cuda"
    batches = CUDA_BATCHES if cuda else ((CPU_BATCH if side >= 128 else CPU_SMALL_BATCH),)
    if model == "unet":
        depth = 4 if side >= 128 else 3
        common = {"depth": depth, "padding": "same", "batch_norm": True}
        networks = [{**common, "base_width": w} for w in WIDTHS]
        if pretrained and fp.channels in (1, 3):
            networks.append(dict(PRETRAINED))
    else:
        networks = [{}]
    return [
        Candidate(model, options, crop, batch, batch_in_label=cuda)
        for options in networks
        for batch in batches
    ]


def _iterations(speed: Speed, seconds: float) -> int:
    usable = seconds * (1 - VALIDATION_SHARE)
    return int(usable / speed.step_seconds) if speed.fits and speed.step_seconds > 0 else 0


def _pixels_per_second(candidate: Candidate, speed: Speed) -> float:
    side = candidate.crop or 1  # whole images: the same size for every batch of one network
    return candidate.batch * side * side / speed.step_seconds


def best_batches(options: Sequence[Candidate], speeds: Mapping[str, Speed]) -> list[Candidate]:
    """Of each network (model and options) in ``options``, the batch size that fits and
    trains the most pixels per second (the larger on a tie), in the order of ``options``."""
    best: dict[str, Candidate] = {}
    for c in options:
        if not speeds[c.label].fits:
            continue
        key = repr((c.model, sorted(c.options.items())))
        held = best.get(key)
        if held is None or _pixels_per_second(c, speeds[c.label]) >= _pixels_per_second(
            held, speeds[held.label]
        ):
            best[key] = c
    return list(best.values())


def pick(options: Sequence[Candidate], speeds: Mapping[str, Speed], seconds: float) -> Candidate:
    """The widest candidate (the last of ``options``) that trains :data:`MIN_ITERATIONS` in
    ``seconds``; when none does, the widest that trains at least :data:`NEAR_FASTEST` of the
    fastest one's iterations (a narrower network that is hardly faster is no gain). Where a
    network was measured at several batch sizes, only its best (:func:`best_batches`)
    takes part."""
    fitting = best_batches(options, speeds)
    if not fitting:
        raise ValueError("no candidate configuration fits in this device's memory")
    counts = {c.label: _iterations(speeds[c.label], seconds) for c in fitting}
    enough = [c for c in fitting if counts[c.label] >= MIN_ITERATIONS]
    if enough:
        return enough[-1]
    most = max(counts.values())
    return [c for c in fitting if counts[c.label] >= NEAR_FASTEST * most][-1]


def _split(fp: Fingerprint) -> tuple[dict[str, object], str, list[str]]:
    """The validation split keys, the reason, and a warning when it is too small."""
    if fp.layout.layout == "camvid":
        n_val, keys, reason = fp.num_val, {}, "the layout's own val/ split"
    else:
        fraction = 0.2
        n_val = max(1, round(fp.num_images * fraction))
        keys = {"val_fraction": fraction, "shuffle_split": True, "seed": 0}
        reason = f"a random fifth of the {fp.num_images} samples ({n_val}), seeded"
        manifest = fp.manifest
        if manifest:
            keys["manifest"] = manifest
            reason += f", stratified by the group column of {manifest}"
    height, width = fp.median_size
    warnings = []
    if n_val < MIN_VAL_IMAGES or n_val * height * width < MIN_VAL_PIXELS:
        warnings.append(
            f"the validation split has {n_val} of {fp.num_images + fp.num_val} images "
            f"({height}×{width}): too few to trust the best checkpoint by; add images or "
            "judge the run by last.pt"
        )
    return keys, reason, warnings


def _loss(fp: Fingerprint, target: dict[str, object]) -> tuple[dict[str, object], str]:
    """The loss table and its reason; ``target`` is :func:`_instance_target`'s table."""
    k = fp.num_classes
    if target.get("instance_target") in SEPARATING_TARGETS:
        return (
            {"name": "ce_dice", "class_weights": "none"},
            "cross entropy plus soft Dice: Dice scores each class's overlap as a whole, so the "
            "thin boundary class that parts touching objects counts without class weights, "
            "which move the decision threshold",
        )
    rare = [f for f in fp.class_fractions if f < RARE_CLASS]
    if k >= 3 and rare:
        return (
            {"name": "ce", "class_weights": "median_frequency"},
            f"{len(rare)} of {k} classes under {RARE_CLASS:.0%} of the pixels: median-frequency "
            "class weights (SegNet) keep them from being ignored",
        )
    return (
        {"name": "ce", "class_weights": "none"},
        "plain cross entropy: class weights would move the decision threshold away from the "
        "best pixel accuracy",
    )


def _instance_target(fp: Fingerprint) -> tuple[dict[str, object], str]:
    """For instance labels: the target the network trains (``data.instance_target``)."""
    if fp.layout.layout != "instances":
        return {}, ""
    if fp.touching >= TOUCHING_SHARE:
        width = 2 if fp.object_area >= BOUNDARY_AREA else 1
        return (
            {"instance_target": "three_class", "boundary_width": width},
            f"{fp.touching:.0%} of the objects touch another: background / interior / boundary "
            f"(boundary {width} px for objects of {fp.object_area:.0f} px, median), so that the "
            "network learns where touching objects part; watershed seeds from the interior",
        )
    return (
        {"instance_target": "semantic"},
        f"{fp.touching:.0%} of the objects touch another: background / object, and connected "
        "components or watershed on distance peaks make the objects",
    )


def _augmentation(fp: Fingerprint) -> tuple[dict[str, object], str]:
    if fp.upright:
        return (
            {"hflip": True, "vflip": False, "rot90": False, "elastic_std": 0.0},
            "the scenes have an up direction (top and bottom differ): left-right flips only",
        )
    return (
        {"hflip": True, "vflip": True, "rot90": True, "elastic_std": 0.0},
        "no up direction: flips and 90° rotations; no elastic deformation, which costs "
        "iterations a budget cannot spare",
    )


def _validation(
    fp: Fingerprint, speed: Speed, chosen: Candidate, seconds: float, scale: float
) -> int:
    """``train.val_every`` (epochs) so that validation takes about :data:`VALIDATION_SHARE`
    of the budget, and happens at most :data:`MAX_VALIDATIONS` times (the network validates
    the images at ``scale``)."""
    height, width = scaled_size(fp.median_size, scale)
    n_val = fp.num_val or max(1, round(fp.num_images * 0.2))
    n_train = max(1, fp.num_images - (0 if fp.num_val else n_val))
    once = n_val * height * width / max(speed.eval_pixels_per_second, 1e-9)
    allowed = max(1, min(MAX_VALIDATIONS, int(VALIDATION_SHARE * seconds / max(once, 1e-9))))
    epoch = math.ceil(n_train / chosen.batch) * speed.step_seconds
    epochs = max(1, int(seconds / max(epoch, 1e-9)))
    return max(1, math.ceil(epochs / allowed))


def choose(
    fp: Fingerprint,
    speeds: Mapping[str, Speed],
    minutes: float,
    *,
    device: str = "cpu",
    options: Sequence[Candidate] | None = None,
    pretrained: bool = False,
) -> Plan:
    """The run config for ``fp`` in ``minutes`` on ``device``, from the measured ``speeds``
    (by candidate label); a pure function (tested with fixed figures)."""
    if fp.proposal.encoding is None:
        raise ValueError(f"no mask encoding for {fp.root}: {fp.proposal.reason}")
    seconds = minutes * 60.0
    scale = input_scale_for(fp, minutes)
    if options is None:
        options = candidates(fp, device, scale=scale, pretrained=pretrained)
    options = list(options)
    chosen = pick(options, speeds, seconds)
    speed = speeds[chosen.label]
    iterations = _iterations(speed, seconds)
    split, split_reason, warnings = _split(fp)
    augmentation, augmentation_reason = _augmentation(fp)
    target, target_reason = _instance_target(fp)
    loss, loss_reason = _loss(fp, target)
    data = _data_table(fp, {**split, **augmentation, **target}, chosen.crop, scale)
    n_train = max(1, fp.num_images - (0 if fp.num_val else max(1, round(fp.num_images * 0.2))))
    per_epoch = math.ceil(n_train / chosen.batch)
    train = {
        "epochs": max(1, math.ceil(3 * iterations / per_epoch)),  # the clock stops it first
        "time_limit_minutes": float(minutes),
        "batch_size": chosen.batch,
        "val_every": _validation(fp, speed, chosen, seconds, scale),
        "normalisation": "auto",
        "metric": "mean_iou",
        "amp": device == "cuda",
        "seed": 0,
    }
    tables = {
        "data": data,
        "model": {"name": chosen.model, "options": dict(chosen.options)},
        "loss": loss,
        "optim": {"name": "adam", "lr": 1e-3},
        "schedule": {"name": "poly", "power": 0.9, "over": "time"},
        "train": train,
    }
    reasons = {
        "data.layout": f"found {fp.layout.layout}",
        "data.encoding": fp.proposal.reason,
        "data.val_fraction": split_reason,
        "data.hflip": augmentation_reason,
        "data.crop_size": _crop_reason(fp, chosen.crop, scale),
        "model.name": _model_reason(chosen, iterations, minutes, len(options)),
        "loss.name": loss_reason,
        "optim.name": "Adam at 1e-3",
        "schedule.name": "poly decay over the time budget: the rate reaches 0 as time runs out",
        "train.batch_size": _batch_reason(chosen, device),
        "train.val_every": "validation takes about "
        f"{VALIDATION_SHARE:.0%} of the budget, {MAX_VALIDATIONS} times at most",
        "train.amp": "mixed precision on CUDA" if device == "cuda" else "float32 on the CPU",
    }
    if scale != 1:
        reasons["data.input_scale"] = _scale_reason(fp, scale, minutes)
    if target:
        reasons["data.instance_target"] = target_reason
    rows = [
        (c.label, speeds[c.label].step_seconds, _iterations(speeds[c.label], seconds), c == chosen)
        for c in options
    ]
    return Plan(tables, reasons, rows, tuple(warnings))


def _data_table(
    fp: Fingerprint, chosen: Mapping[str, object], crop: int | None, scale: float
) -> dict[str, object]:
    """The ``[data]`` table: the folder's layout and encoding, the ``chosen`` split and
    augmentation keys, the crop and (below 1) the input scale."""
    data = {**fp.layout.table(fp.root), "channels": fp.channels, **chosen}
    if fp.layout.layout != "instances":
        data["encoding"] = fp.proposal.encoding.to_config()
    if crop is not None:
        data["crop_size"] = crop
    if scale != 1:
        data["input_scale"] = scale
    return data


def _batch_reason(chosen: Candidate, device: str) -> str:
    if device == "cuda":
        sizes = ", ".join(str(b) for b in CUDA_BATCHES)
        return (
            f"{chosen.batch}: of the batch sizes measured ({sizes}), the one that fits in "
            "memory and trains the most pixels per second"
        )
    return f"{chosen.batch} on the CPU, where a larger batch buys no throughput"


def _crop_reason(fp: Fingerprint, crop: int | None, scale: float) -> str:
    height, width = scaled_size(fp.median_size, scale)
    at = "" if scale == 1 else f" at scale {scale:g}"
    if crop is None:
        return f"every image is {height}×{width}{at}: whole images train"
    return f"random {crop}×{crop} crops of {height}×{width} images (median){at}"


def _scale_reason(fp: Fingerprint, scale: float, minutes: float) -> str:
    side = min(fp.median_size)
    return (
        f"median shorter side {side} > {SCALE_SIDE} (4× the crop) under a {minutes:g}-minute "
        f"budget: trained and predicted at {scale:g} ({round(side * scale)} pixels), so "
        "that a crop sees more of the image; the checkpoint resizes images in and logits back"
    )


def _model_reason(chosen: Candidate, iterations: int, minutes: float, measured: int = 2) -> str:
    if measured == 1:  # e.g. a bake-off entry: nothing was chosen between widths
        return (
            f"{chosen.label}: the one configuration measured; it trains ≈{iterations:,} "
            f"iterations in {minutes:g} min here"
        )
    if "encoder" in chosen.options:
        return (
            f"{chosen.label} with ImageNet weights (pixelwise[pretrained]): a pretrained "
            f"encoder is the largest gain on small data, and it trains ≈{iterations:,} "
            f"iterations in {minutes:g} min here"
        )
    if iterations >= MIN_ITERATIONS:
        return (
            f"{chosen.label}: the widest measured that trains {MIN_ITERATIONS}+ iterations in "
            f"{minutes:g} min (≈{iterations:,} here)"
        )
    return (
        f"{chosen.label}: none measured trains {MIN_ITERATIONS} iterations in {minutes:g} min; "
        f"the widest within {NEAR_FASTEST:.0%} of the fastest (≈{iterations:,} here)"
    )


def tile_for(fp: Fingerprint) -> int:
    """The prediction tile: 512, or the largest image side when images are smaller."""
    return min(512, max(max(size) for size in fp.sizes))
