"""Checkpoints: round trip, safe loading, unwrapping, rebuilding, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from torch import nn

from pixelwise.data import MaskEncoding
from pixelwise.data.datasets import CAMVID_ENCODING
from pixelwise.engine.checkpoint import (
    build_model,
    load_checkpoint,
    load_model,
    rebuild_args,
    save_checkpoint,
)
from pixelwise.models import create_model
from pixelwise.nn.normalise import normalise_images

NORM = {"mean": [0.25, 0.5], "std": [0.5, 2.0]}


def tiny_unet() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=2, depth=2, base_width=4)
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    norm.running_mean.add_(0.5)  # a buffer that differs from its initial value
    return model.eval()


def save(path, model, **changes):
    fields = {
        "model": model,
        "class_names": ("a", "b", "c"),
        "ignore_index": 255,
        "normalisation": NORM,
        "config": {"train": {"epochs": 2, "crop": (3, 4)}},
        "epoch": 2,
        "metrics": {"mean_iou": 0.5, "classes": {"a": {"iou": float("nan")}}},
        "training": {
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}},
            "rng": torch.ones(3),
        },
    }
    return save_checkpoint(path, **{**fields, **changes})


def test_round_trip_restores_everything(tmp_path):
    model = tiny_unet()
    path = save(tmp_path / "run.pt", model)
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_name == "unet"
    assert checkpoint.model_args == {
        "num_classes": 3,
        "in_channels": 2,
        "depth": 2,
        "base_width": 4,
    }
    assert (checkpoint.num_classes, checkpoint.in_channels) == (3, 2)
    assert checkpoint.class_names == ("a", "b", "c") and checkpoint.ignore_index == 255
    assert checkpoint.normalisation == NORM and checkpoint.epoch == 2
    assert checkpoint.config == {"train": {"epochs": 2, "crop": (3, 4)}}
    assert checkpoint.metrics["mean_iou"] == 0.5
    # Integer keys survive: an optimizer's state is keyed by parameter index.
    assert torch.equal(checkpoint.training["optimizer"]["state"][0]["step"], torch.tensor(3.0))
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint.state_dict[key], value)
    rebuilt = load_model(path).network
    x = torch.rand(2, 2, 19, 23)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert not rebuilt.training


def test_the_file_loads_with_weights_only(tmp_path):
    path = save(tmp_path / "run.pt", tiny_unet())
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "pixelwise-checkpoint" and "state_dict" in payload


def test_safetensors_beside_it_rebuilds_the_same_model(tmp_path):
    model = tiny_unet()
    save(tmp_path / "run.pt", model)
    weights = tmp_path / "run.safetensors"
    assert weights.is_file()
    segmenter = load_model(weights)
    rebuilt, checkpoint = segmenter.network, segmenter.checkpoint
    assert checkpoint.training is None and checkpoint.class_names == ("a", "b", "c")
    assert checkpoint.normalisation == NORM
    x = torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_wrapped_models_are_saved_unwrapped(tmp_path):
    model = tiny_unet()
    save(tmp_path / "run.pt", nn.DataParallel(model))
    keys = load_checkpoint(tmp_path / "run.pt").state_dict.keys()
    assert keys == model.state_dict().keys()
    assert not any(k.startswith("module.") for k in keys)


def test_saving_replaces_atomically_without_leftovers(tmp_path):
    model = tiny_unet()
    save(tmp_path / "run.pt", model, epoch=1)
    save(tmp_path / "run.pt", model, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.safetensors"]
    assert load_checkpoint(tmp_path / "run.pt").epoch == 2


class UserNet(nn.Module):
    """A model outside the registry: no pixelwise_name, no pixelwise_args."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_model_outside_the_registry_is_saved_with_its_facts(tmp_path):
    torch.manual_seed(0)
    model = UserNet()
    path = save(tmp_path / "user.pt", model)
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_name is None
    assert checkpoint.model_class == f"{__name__}.UserNet"
    assert checkpoint.model_args == {"num_classes": 3}
    assert (checkpoint.num_classes, checkpoint.in_channels) == (3, 2)  # C from normalisation
    assert checkpoint.class_names == ("a", "b", "c") and checkpoint.normalisation == NORM
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint.state_dict[key], value)
    # The safetensors file holds the same header.
    assert load_checkpoint(tmp_path / "user.safetensors").model_class == f"{__name__}.UserNet"


def test_load_model_refuses_an_unregistered_model_in_one_line(tmp_path):
    path = save(tmp_path / "user.pt", UserNet())
    with pytest.raises(ValueError) as info:
        load_model(path)
    assert str(info.value) == (
        f"the checkpoint's model must be registered to be rebuilt, got an unregistered "
        f"{__name__}.UserNet; build the module, then load_model(path, network=module), or "
        f"module.load_state_dict(load_checkpoint(path).state_dict) (checkpoint {path})"
    )


def test_load_model_with_a_network_loads_an_unregistered_model(tmp_path):
    torch.manual_seed(0)
    model = UserNet().eval()
    path = save(tmp_path / "user.pt", model)
    torch.manual_seed(1)
    segmenter = load_model(path, network=UserNet())
    assert segmenter.class_names == ("a", "b", "c") and segmenter.ignore_index == 255
    assert segmenter.normalize.as_dict() == NORM and segmenter.checkpoint.epoch == 2
    assert not segmenter.network.training
    x = torch.rand(1, 2, 8, 9)
    mean, std = torch.tensor(NORM["mean"])[:, None, None], torch.tensor(NORM["std"])[:, None, None]
    with torch.no_grad():
        assert torch.equal(segmenter(x), model((x - mean) / std))
    with pytest.raises(
        ValueError, match=r"^checkpoint .*user.pt weights for model .*UserNet' must match"
    ):
        load_model(path, network=nn.Sequential(nn.Conv2d(2, 3, 1)))


def test_load_model_returns_a_segmenter_with_the_checkpoint_facts(tmp_path):
    model = tiny_unet()
    path = save(tmp_path / "run.pt", model)
    segmenter = load_model(path)
    assert segmenter.class_names == ("a", "b", "c") and segmenter.ignore_index == 255
    assert (segmenter.num_classes, segmenter.in_channels) == (3, 2)
    assert segmenter.normalize.as_dict() == NORM
    assert segmenter.checkpoint.model_name == "unet" and not segmenter.training
    x = torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(segmenter(x), model(normalise_images(x, NORM)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"layout": "folders", "root": "d", "encoding": {"kind": "index", "num_classes": 3}},
            MaskEncoding.index(3),
        ),
        ({"layout": "camvid", "root": "d"}, CAMVID_ENCODING),  # CamVid's own, undeclared
        ({"layout": "synthetic"}, None),  # instance-derived masks: class indices
        (None, None),  # pixelwise.fit on the user's data records no [data]
    ],
    ids=["declared", "camvid", "synthetic", "none"],
)
def test_load_model_carries_the_training_datas_mask_encoding(tmp_path, data, expected):
    config = {"train": {"epochs": 2}} if data is None else {"data": data}
    segmenter = load_model(save(tmp_path / "run.pt", tiny_unet(), config=config))
    assert segmenter.encoding == expected
    assert segmenter.with_network(segmenter.network).encoding == expected


def test_a_segmenter_is_saved_as_its_network(tmp_path):
    model = tiny_unet()
    segmenter = load_model(save(tmp_path / "run.pt", model))
    checkpoint = load_checkpoint(save(tmp_path / "again.pt", segmenter))
    assert checkpoint.model_name == "unet"
    assert checkpoint.state_dict.keys() == model.state_dict().keys()


def test_checkpoints_without_a_model_class_still_load(tmp_path):
    # Checkpoints written before model_class was recorded.
    path = save(tmp_path / "run.pt", tiny_unet())
    payload = torch.load(path, weights_only=True)
    del payload["model_class"]
    torch.save(payload, path)
    segmenter = load_model(path)
    assert segmenter.checkpoint.model_class is None and segmenter.num_classes == 3


def test_local_weight_files_are_dropped_when_rebuilding(tmp_path):
    save(tmp_path / "run.pt", tiny_unet())
    checkpoint = load_checkpoint(tmp_path / "run.pt")
    assert rebuild_args({"encoder_weights": "/gone/vgg.pth", "width": 0.5}) == {
        "encoder_weights": None,
        "width": 0.5,
    }
    torch.manual_seed(0)
    segnet = create_model("segnet", num_classes=2, in_channels=3, width=0.0625)
    save(tmp_path / "segnet.pt", segnet)
    checkpoint = load_checkpoint(tmp_path / "segnet.pt")
    moved = dataclasses.replace(
        checkpoint, model_args={**checkpoint.model_args, "encoder_weights": "/gone/vgg.pth"}
    )
    rebuilt = build_model(moved)  # does not look for /gone/vgg.pth
    assert torch.equal(
        rebuilt.state_dict()[next(iter(segnet.state_dict()))],
        next(iter(segnet.state_dict().values())),
    )


def test_missing_and_foreign_files_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope\.pt must be an existing file"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint .*junk\.pt must be a pixelwise checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt must be a pixelwise checkpoint.*header"):
        load_checkpoint(foreign)
    for error in (FileNotFoundError, ValueError):
        try:
            load_checkpoint(junk if error is ValueError else tmp_path / "nope.pt")
        except error as exc:
            assert "\n" not in str(exc)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "pixelwise-checkpoint", "payload": argparse.Namespace(code="runs on load")}, path
    )
    with pytest.raises(ValueError, match=r"evil\.pt must be a pixelwise checkpoint.*unreadable"):
        load_checkpoint(path)


def test_normalise_images_per_channel():
    images = torch.rand(2, 2, 5, 7)
    out = normalise_images(images, NORM)
    assert torch.allclose(out[:, 0], (images[:, 0] - 0.25) / 0.5)
    assert torch.allclose(out[:, 1], (images[:, 1] - 0.5) / 2.0)
    assert torch.equal(normalise_images(images[0], NORM), out[0])  # (C, H, W)
    assert normalise_images(images, None) is images
    with pytest.raises(ValueError, match="C = 2"):
        normalise_images(torch.rand(1, 3, 4, 4), NORM)


def test_a_save_that_fails_midway_leaves_the_old_pair_of_files(tmp_path, monkeypatch):
    path = save(tmp_path / "last.pt", tiny_unet(), epoch=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"last.pt", "last.safetensors"}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process stopped while the .pt was being written

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save(path, tiny_unet(), epoch=2)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # the new .safetensors was not moved in; no temporary is left
    assert load_checkpoint(tmp_path / "last.safetensors").epoch == 1


def _rewrite_safetensors(path, header_text: str) -> None:
    """The safetensors file at ``path`` with its pixelwise metadata replaced."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        weights = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    save_file(weights, str(path), {"format": "pixelwise-checkpoint", "pixelwise": header_text})


def test_a_damaged_header_is_one_line_naming_the_file_and_every_bad_field(tmp_path):
    pt = save(tmp_path / "m.pt", tiny_unet())
    payload = torch.load(pt, weights_only=True)
    torch.save({**payload, "class_names": 3, "epoch": "two", "ignore_index": True}, pt)
    with pytest.raises(ValueError) as info:
        load_checkpoint(pt)
    assert str(info.value) == (
        f"checkpoint {pt} must be a pixelwise checkpoint (a .pt or .safetensors written by "
        "pixelwise train), got a damaged header: class_names 3 (must be a list of class names); "
        "ignore_index True (must be an integer); epoch 'two' (must be an integer >= 0)"
    )
    safetensors = tmp_path / "m.safetensors"
    _rewrite_safetensors(safetensors, "{not json")
    with pytest.raises(ValueError) as info:
        load_checkpoint(safetensors)
    assert str(info.value).startswith(
        f"checkpoint {safetensors} must be a pixelwise checkpoint (a .pt or .safetensors written"
        " by pixelwise train), got pixelwise metadata that is not JSON ("
    )
    _rewrite_safetensors(safetensors, "[1, 2]")
    with pytest.raises(ValueError, match=r"got pixelwise metadata that is a list$"):
        load_checkpoint(safetensors)
    _rewrite_safetensors(safetensors, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="metadata that is not JSON"):
        load_checkpoint(safetensors)


def test_a_small_file_declaring_a_huge_model_is_refused_before_it_is_built(tmp_path, monkeypatch):
    pt = save(tmp_path / "m.pt", tiny_unet())
    payload = torch.load(pt, weights_only=True)
    args = {**payload["model_args"], "base_width": 512}  # 119M parameters declared
    torch.save({**payload, "model_args": args}, pt)
    built = []
    real = torch.nn.Conv2d.__init__

    def record(self, *a, **k):  # every convolution built off the meta device is recorded
        real(self, *a, **k)
        built.append(self.weight.device.type)

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", record)
    with pytest.raises(ValueError) as info:
        load_model(pt)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"checkpoint {pt} weights for model 'unet' must match its architecture")
    stored = sum(t.numel() for t in payload["state_dict"].values())
    with torch.device("meta"):
        declared = sum(t.numel() for t in create_model("unet", **args).state_dict().values())
    assert f"got {stored:,} stored values for {declared:,}; other shapes " in text
    assert set(built) == {"meta"}  # nothing was allocated for real
    torch.save({**payload, "model_args": {**args, "base_width": 4096}}, pt)  # 7.6 billion
    with pytest.raises(ValueError) as info:
        load_model(pt)
    assert str(info.value).startswith(
        "model 'unet' with in_channels=2, depth=2, base_width=4096 must have at most "
        "2,147,483,648 parameters, got 7,617,118,2"
    ) and str(info.value).endswith(f"; use smaller options (depth, widths) (checkpoint {pt})")
    assert set(built) == {"meta"}
    # A stored tensor of another shape under the right name is named too.
    payload["state_dict"] = dict(payload["state_dict"])
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key] = torch.zeros(1)
    torch.save(payload, pt)
    with pytest.raises(ValueError, match=rf"; other shapes {key} \(1,\) for \("):
        load_model(pt)
