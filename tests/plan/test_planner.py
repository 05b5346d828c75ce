"""The planner's choices on synthetic fingerprints with fixed speed figures."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib

import pytest

from pixelwise.config import RunConfig
from pixelwise.data import MaskEncoding
from pixelwise.plan import plan_toml
from pixelwise.plan.fingerprint import Fingerprint, Layout, Proposal
from pixelwise.plan.planner import (
    MIN_ITERATIONS,
    VALIDATION_SHARE,
    Speed,
    best_batches,
    candidates,
    choose,
    crop_for,
    input_scale_for,
    pick,
)

BINARY = Proposal(MaskEncoding.values({0: 0, 255: 1}), "mask values {0, 255}: binary")


def fp(**changes) -> Fingerprint:
    """A grey binary folder of 25 images of 512×512, no up direction."""
    fields = {
        "root": "/data/em",
        "layout": Layout("folders", "images", "masks"),
        "num_images": 25,
        "num_val": 0,
        "sizes": ((512, 512),) * 25,
        "channels": 1,
        "mean": (0.5,),
        "std": (0.2,),
        "proposal": BINARY,
        "class_fractions": (0.22, 0.78),
    }
    return Fingerprint(**{**fields, **changes})


def speeds(step8: float, step16: float, step32: float, fits32: bool = True) -> dict[str, Speed]:
    return {
        "unet w8": Speed(step8, 4e5),
        "unet w16": Speed(step16, 2e5),
        "unet w32": Speed(step32, 1e5, fits=fits32),
    }


def test_candidates_are_one_unet_at_three_widths_at_the_crop_the_images_allow():
    options = candidates(fp())
    assert [c.label for c in options] == ["unet w8", "unet w16", "unet w32"]
    assert {(c.crop, c.batch, c.options["depth"]) for c in options} == {(256, 4, 4)}
    small = fp(sizes=((64, 64),) * 25)
    assert crop_for(small) is None  # one small size: whole images
    assert {(c.crop, c.batch, c.options["depth"]) for c in candidates(small)} == {(None, 8, 3)}
    mixed = fp(sizes=((100, 90), (120, 200)))
    assert crop_for(mixed) == 80  # the largest multiple of 16 inside the smallest image
    on_cuda = candidates(fp(), "cuda")
    assert [c.label for c in on_cuda[:4]] == [
        "unet w8 b8",
        "unet w8 b16",
        "unet w8 b32",
        "unet w16 b8",
    ]
    assert [c.batch for c in on_cuda] == [8, 16, 32] * 3


def test_on_cuda_each_width_trains_at_the_batch_with_the_most_pixels_per_second():
    on_cuda = candidates(fp(), "cuda")
    figures = {
        # w8: throughput grows with the batch (0.02 s for 8, 0.03 for 16, 0.05 for 32).
        "unet w8 b8": Speed(0.02, 1e7),
        "unet w8 b16": Speed(0.03, 1e7),
        "unet w8 b32": Speed(0.05, 1e7),
        # w16: b32 no faster per pixel than b16 (0.16 s = 2 × 0.08): the larger on a tie.
        "unet w16 b8": Speed(0.05, 1e7),
        "unet w16 b16": Speed(0.08, 1e7),
        "unet w16 b32": Speed(0.16, 1e7),
        # w32: b32 runs out of memory; b16 is slower per pixel than b8.
        "unet w32 b8": Speed(0.10, 1e7),
        "unet w32 b16": Speed(0.25, 1e7),
        "unet w32 b32": Speed(float("inf"), 0.0, fits=False),
    }
    best = best_batches(on_cuda, figures)
    assert [c.label for c in best] == ["unet w8 b32", "unet w16 b32", "unet w32 b8"]
    plan = choose(fp(), figures, 15, device="cuda")
    # 828 s / 0.10 s = 8,280 iterations of w32 at batch 8: the widest, and it trains enough.
    assert plan.tables["model"]["options"]["base_width"] == 32
    assert plan.tables["train"]["batch_size"] == 8 and plan.tables["train"]["amp"]
    assert plan.reasons["train.batch_size"].startswith("8: of the batch sizes measured (8, 16, 32)")
    assert [row[0] for row in plan.rows if row[3]] == ["unet w32 b8"]
    # With no batch of w32 fitting, w16 at its best batch.
    figures["unet w32 b8"] = figures["unet w32 b16"] = Speed(float("inf"), 0.0, fits=False)
    plan = choose(fp(), figures, 15, device="cuda")
    assert (plan.tables["model"]["options"]["base_width"], plan.tables["train"]["batch_size"]) == (
        16,
        32,
    )


def test_the_widest_candidate_that_trains_enough_iterations_wins():
    minutes = 15
    seconds = minutes * 60 * (1 - VALIDATION_SHARE)
    # w16 just reaches MIN_ITERATIONS, w32 does not: w16.
    step16 = seconds / MIN_ITERATIONS
    chosen = pick(candidates(fp()), speeds(step16 / 2, step16, step16 * 2), minutes * 60)
    assert chosen.label == "unet w16"
    # An hour: w32 reaches it too.
    assert pick(candidates(fp()), speeds(0.5, 1.0, 4.0), 3600).label == "unet w32"
    # Out of memory is never chosen.
    assert pick(candidates(fp()), speeds(0.5, 1.0, 0.1, fits32=False), 3600).label == "unet w16"


def test_when_none_trains_enough_a_hardly_faster_narrow_network_is_no_gain():
    # 10 s an iteration for every width but w32: none reaches MIN_ITERATIONS in 15 minutes.
    assert pick(candidates(fp()), speeds(4.0, 4.5, 8.0), 900).label == "unet w16"  # 0.89 of w8
    assert pick(candidates(fp()), speeds(3.0, 4.5, 8.0), 900).label == "unet w8"  # 0.67 of w8
    with pytest.raises(ValueError, match="no candidate configuration fits"):
        pick(candidates(fp()), {k: Speed(1.0, 1.0, fits=False) for k in speeds(1, 1, 1)}, 60)


def test_a_binary_folder_plan():
    plan = choose(fp(), speeds(0.5, 1.0, 4.0), 15)
    data, train = plan.tables["data"], plan.tables["train"]
    assert plan.tables["model"] == {
        "name": "unet",
        "options": {"depth": 4, "padding": "same", "batch_norm": True, "base_width": 16},
    }
    assert MaskEncoding.from_config(data["encoding"]) == BINARY.encoding
    assert (data["hflip"], data["vflip"], data["rot90"], data["elastic_std"]) == (
        True,
        True,
        True,
        0.0,
    )
    assert data["crop_size"] == 256 and data["val_fraction"] == 0.2 and data["shuffle_split"]
    assert plan.tables["loss"] == {"name": "ce", "class_weights": "none"}
    assert plan.tables["schedule"] == {"name": "poly", "power": 0.9, "over": "time"}
    assert train["time_limit_minutes"] == 15.0 and train["batch_size"] == 4 and not train["amp"]
    iterations = int(900 * (1 - VALIDATION_SHARE) / 1.0)
    assert plan.rows[1] == ("unet w16", 1.0, iterations, True)
    # 20 training images at batch 4: 5 iterations an epoch; 5 validation images of 512²
    # at 2e5 pixels/s take 6.55 s, so 0.08 · 900 s allows 10 validations in 180 epochs.
    once = 5 * 512 * 512 / 2e5
    allowed = int(VALIDATION_SHARE * 900 / once)
    assert train["val_every"] == math.ceil(int(900 / 5.0) / allowed) == 18
    assert plan.warnings == ()
    assert "input_scale" not in data and "data.input_scale" not in plan.reasons


@pytest.mark.parametrize(
    ("side", "minutes", "scale"),
    [
        (512, 15, 1.0),
        (1024, 15, 1.0),  # exactly 4 × the crop: native scale
        (1025, 15, 0.5),
        (2048, 15, 0.5),
        (4096, 15, 0.25),
        (8192, 59, 0.125),
        (20000, 15, 0.125),  # the smallest scale when none brings it within 1024
        (4096, 60, 1.0),  # a budget of an hour or more trains at full scale
    ],
)
def test_large_images_under_a_short_budget_train_at_a_reduced_scale(side, minutes, scale):
    assert input_scale_for(fp(sizes=((side, side + 300),) * 10), minutes) == scale


def test_a_plan_for_large_images_records_the_scale_and_crops_the_scaled_images():
    large = fp(sizes=((4096, 4096),) * 10, num_images=10)
    plan = choose(large, speeds(0.5, 1.0, 4.0), 15)
    data = plan.tables["data"]
    assert data["input_scale"] == 0.25 and data["crop_size"] == 256
    assert plan.reasons["data.input_scale"].startswith(
        "median shorter side 4096 > 1024 (4× the crop) under a 15-minute budget: trained and "
        "predicted at 0.25 (1024 pixels)"
    )
    assert plan.reasons["data.crop_size"] == (
        "random 256×256 crops of 1024×1024 images (median) at scale 0.25"
    )
    assert RunConfig.from_dict(plan.tables).data.input_scale == 0.25
    assert choose(large, speeds(0.5, 1.0, 4.0), 90).tables["data"].get("input_scale") is None
    # The crop rule reads the scaled sizes: 3000 and 400 at 0.5 are 1500 and 200.
    mixed = fp(sizes=((3000, 3000),) * 9 + ((400, 400),), num_images=10)
    assert crop_for(mixed) == 256 and crop_for(mixed, scale=0.5) == 192
    planned = choose(mixed, speeds(0.5, 1.0, 4.0), 15).tables["data"]  # median 3000: 0.25
    assert (planned["input_scale"], planned["crop_size"]) == (0.25, 96)  # 400 at 0.25 is 100
    assert {c.crop for c in candidates(mixed, scale=0.5)} == {192}


def test_rare_classes_get_weights_and_upright_scenes_no_vertical_flips():
    many = fp(
        proposal=Proposal(MaskEncoding.index(11, ignore_values=(11,)), "index"),
        class_fractions=(0.3, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.005, 0.003, 0.001, 0.001),
        upright=True,
        channels=3,
        sizes=((360, 480),) * 25,
    )
    plan = choose(many, speeds(0.5, 1.0, 4.0), 60)
    assert plan.tables["loss"] == {"name": "ce", "class_weights": "median_frequency"}
    assert plan.reasons["loss.name"].startswith("5 of 11 classes under 2% of the pixels")
    data = plan.tables["data"]
    assert (data["hflip"], data["vflip"], data["rot90"]) == (True, False, False)
    # Few classes, none rare: no weights, whatever the imbalance of a binary problem.
    assert (
        choose(fp(class_fractions=(0.01, 0.99)), speeds(1, 1, 1), 15).tables["loss"][
            "class_weights"
        ]
        == "none"
    )


def test_a_small_validation_split_is_a_warning_and_a_manifest_stratifies():
    tiny = fp(num_images=12, sizes=((256, 256),) * 12)
    plan = choose(tiny, speeds(0.5, 1.0, 4.0), 15)
    assert plan.warnings == (
        "the validation split has 2 of 12 images (256×256): too few to trust the best checkpoint "
        "by; add images or judge the run by last.pt",
    )
    grouped = choose(fp(manifest="manifest.csv"), speeds(0.5, 1.0, 4.0), 15)
    assert grouped.tables["data"]["manifest"] == "manifest.csv"
    assert "stratified by the group column" in grouped.reasons["data.val_fraction"]
    camvid = fp(layout=Layout("camvid", "train", "val"), num_images=367, num_val=101)
    plan = choose(camvid, speeds(0.5, 1.0, 4.0), 15)
    assert "val_fraction" not in plan.tables["data"] and plan.warnings == ()


def test_no_encoding_no_plan():
    unknown = fp(proposal=Proposal(None, "mask values [...] are too many"))
    with pytest.raises(ValueError, match=r"no mask encoding for /data/em: mask values \[\.\.\.\]"):
        choose(unknown, speeds(1, 1, 1), 15)


def test_the_plan_toml_reads_back_to_its_tables_and_comments_each_choice(tmp_path):
    found = fp(root=str(tmp_path / "data"))
    plan = choose(found, speeds(0.5, 1.0, 4.0), 15)
    text = plan_toml(plan, found, 15, folder=tmp_path)
    table = tomllib.loads(text)
    assert table["data"]["root"] == "data"  # relative to the file's folder
    expected = {s: dict(v) for s, v in plan.tables.items()}
    expected["data"]["root"] = "data"
    assert RunConfig.from_dict(table).to_dict() == RunConfig.from_dict(expected).to_dict()
    assert 'name = "unet"  # unet w16: the widest measured that trains 400+' in text
    assert "# Predict with: pixelwise predict RUN/best.pt IMAGES --out DIR --tile 512" in text
    outside = dataclasses.replace(found, root="/else/where")  # not under the file's folder
    text = plan_toml(choose(outside, speeds(0.5, 1.0, 4.0), 15), outside, 15, folder=tmp_path)
    assert tomllib.loads(text)["data"]["root"] == "/else/where"


def test_a_pretrained_encoder_is_measured_and_preferred_when_it_trains_enough():
    with_encoder = candidates(fp(), pretrained=True)
    assert [c.label for c in with_encoder] == [
        "unet w8",
        "unet w16",
        "unet w32",
        "unet+efficientnet_lite0",
    ]
    assert with_encoder[-1].options == {
        "encoder": "efficientnet_lite0",
        "encoder_weights": "imagenet",
    }
    # Only grey or RGB images: the ImageNet filters are for those.
    four = fp(channels=4, mean=(0.5,) * 4, std=(0.2,) * 4)
    assert "unet+efficientnet_lite0" not in [c.label for c in candidates(four, pretrained=True)]
    figures = {**speeds(0.5, 1.0, 4.0), "unet+efficientnet_lite0": Speed(1.5, 3e5)}
    plan = choose(fp(), figures, 15, pretrained=True)
    assert plan.tables["model"] == {
        "name": "unet",
        "options": {"encoder": "efficientnet_lite0", "encoder_weights": "imagenet"},
    }
    assert plan.tables["train"]["normalisation"] == "auto"  # the encoder's own
    assert plan.reasons["model.name"].startswith("unet+efficientnet_lite0 with ImageNet weights")
    # Too slow for the budget (207 iterations): the width rule as before.
    figures["unet+efficientnet_lite0"] = Speed(4.0, 3e5)
    plan = choose(fp(), figures, 15, pretrained=True)
    assert plan.tables["model"]["options"]["base_width"] == 16
    # Not installed: not a candidate.
    assert choose(fp(), figures, 15).rows[-1][0] == "unet w32"


def test_instance_data_whose_objects_touch_trains_a_boundary_class():
    nuclei = fp(
        layout=Layout("instances", "images", "instances"),
        objects_per_image=20.0,
        object_area=300.0,
        touching=0.2,
        channels=3,
        mean=(0.5,) * 3,
        std=(0.2,) * 3,
    )
    plan = choose(nuclei, speeds(0.5, 1.0, 4.0), 15)
    data = plan.tables["data"]
    assert (data["instance_target"], data["boundary_width"]) == ("three_class", 2)
    assert plan.reasons["data.instance_target"].startswith("20% of the objects touch another")
    # The thin boundary class counts through soft Dice, not through class weights.
    assert plan.tables["loss"] == {"name": "ce_dice", "class_weights": "none"}
    assert plan.reasons["loss.name"].startswith("cross entropy plus soft Dice")
    RunConfig.from_dict({k: dict(v) for k, v in plan.tables.items()})  # a valid run config
    small = dataclasses.replace(nuclei, object_area=80.0)
    assert choose(small, speeds(0.5, 1.0, 4.0), 15).tables["data"]["boundary_width"] == 1
    apart = choose(dataclasses.replace(nuclei, touching=0.01), speeds(0.5, 1.0, 4.0), 15)
    assert apart.tables["data"]["instance_target"] == "semantic"
    assert apart.tables["loss"] == {"name": "ce", "class_weights": "none"}
    # Not instance data: no such key.
    assert "instance_target" not in choose(fp(), speeds(0.5, 1.0, 4.0), 15).tables["data"]


def test_a_single_measured_candidate_is_named_as_such_not_as_the_widest():
    (only,) = [c for c in candidates(fp()) if c.label == "unet w16"]
    plan = choose(fp(), speeds(0.5, 1.0, 4.0), 15, options=[only])
    reason = plan.reasons["model.name"]
    expected = (
        r"unet w16: the one configuration measured; it trains ≈[\d,]+ iterations in 15 min here"
    )
    assert re.fullmatch(expected, reason), reason
