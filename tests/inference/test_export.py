"""ONNX and TorchScript export of every registered model, checked against PyTorch at a size
other than the traced one (free N, H, W), and the ``pixelwise export`` command."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pixelwise.cli import main
from pixelwise.engine.checkpoint import save_checkpoint
from pixelwise.inference.export import (
    ScatterMaxUnpool2d,
    default_example_size,
    export_model,
    export_module,
)
from pixelwise.models import create_model, list_models
from small_models import ENCODED, SMALL

# Each registered model, the valid-padding U-Net (smaller output, sizes checked), and the
# encoder variants.
CASES = {name: (name, options) for name, options in SMALL.items()}
CASES["unet_valid"] = ("unet", {"base_width": 4, "depth": 2, "padding": "valid"})
CASES.update(ENCODED)
K = 3


def test_every_model_is_covered():
    assert sorted(SMALL) == list_models()


def build(case: str) -> nn.Module:
    name, options = CASES[case]
    torch.manual_seed(0)
    return create_model(name, num_classes=K, in_channels=3, **options).eval()


def other_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """A size the export was not traced at (odd, on both axes)."""
    if hasattr(model, "is_valid_input_size") and model.padding == "valid":
        return tuple(model.valid_input_sizes_near(n + 20)[1] for n in size)
    return size[0] - 30, size[1] - 42


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        return torch.jit.load(str(path))


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime", reason="ONNX tests need pixelwise[export]")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_matches_pytorch_at_another_size_and_batch(case, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs pixelwise[export]")
    pytest.importorskip("onnxruntime", reason="ONNX tests need pixelwise[export]")
    model = build(case)
    exported = export_model(model, tmp_path / "m.onnx", format="onnx")
    assert exported.dynamic and exported.opset == 17
    x = torch.rand(2, 3, *other_size(model, exported.example_size))
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(exported.path, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torchscript_matches_pytorch_at_another_size_and_batch(case, tmp_path):
    model = build(case)
    exported = export_model(model, tmp_path / "m.ts", format="torchscript")
    assert exported.dynamic and exported.opset is None
    x = torch.rand(2, 3, *other_size(model, exported.example_size))
    with torch.no_grad():
        expected = model(x)
        got = load_torchscript(exported.path)(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_default_trace_size_is_off_the_size_divisor():
    for case in ("fcn8s", "unet", "patch_classifier"):
        model = build(case)
        height, width = default_example_size(model)
        if model.size_divisor > 1:
            assert height % model.size_divisor and width % model.size_divisor
        assert height != width


def test_scatter_unpooling_equals_max_unpooling_at_odd_sizes():
    pool = nn.MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)
    x = torch.randn(2, 3, 67, 45)
    values, indices = pool(x)  # (2, 3, 34, 23)
    expected = nn.MaxUnpool2d(2, stride=2)(values, indices, output_size=x.shape[-2:])
    got = ScatterMaxUnpool2d(2, stride=2)(values, indices, output_size=x.shape[-2:])
    assert torch.equal(got, expected)
    even = torch.randn(1, 2, 8, 6)
    values, indices = nn.MaxPool2d(2, return_indices=True)(even)
    assert torch.equal(ScatterMaxUnpool2d(2)(values, indices), nn.MaxUnpool2d(2)(values, indices))


@pytest.mark.parametrize("case", ["segnet", "segnet_basic"])
def test_segnet_export_form_is_identical_and_leaves_the_model_alone(case):
    model = build(case)
    form = export_module(model)
    assert any(isinstance(m, ScatterMaxUnpool2d) for m in form.modules())
    assert not any(isinstance(m, ScatterMaxUnpool2d) for m in model.modules())
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(form(x), model(x))


def test_a_size_dependent_trace_is_exported_at_a_fixed_size(tmp_path, caplog):
    model = build("fcn32s")  # traced at a multiple of 32, its padding branch is frozen away
    exported = export_model(model, tmp_path / "m.ts", format="torchscript", example_size=(64, 96))
    assert not exported.dynamic
    assert "fixed to size 64×96" in caplog.text
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(load_torchscript(exported.path)(x), model(x))


def test_the_file_is_only_replaced_with_overwrite(tmp_path, monkeypatch):
    model = build("patch_classifier")
    path = tmp_path / "m.ts"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match=r"m\.ts must not exist already, got an existing"):
        export_model(model, path, format="torchscript")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.jit, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, path, format="torchscript", overwrite=True)
    assert path.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ts"]  # no temporary file left


def test_bad_arguments_raise_one_line(tmp_path):
    model = build("unet_valid")
    with pytest.raises(ValueError, match=r"^format must be one of .*did you mean 'onnx'\?"):
        export_model(model, tmp_path / "m.onx", format="onx")
    with pytest.raises(FileNotFoundError, match=r"^export folder .*missing must exist"):
        export_model(model, tmp_path / "missing" / "m.ts", format="torchscript")
    with pytest.raises(ValueError, match=r"^example height must be an input size the network"):
        export_model(model, tmp_path / "m.ts", format="torchscript", example_size=(65, 92))


def test_missing_onnx_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"install pixelwise\[export\]"):
        export_model(build("patch_classifier"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- the command


NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(
        tmp_path / "tiny.pt",
        model=build("unet_valid"),
        class_names=("sky", "road", "car"),
        ignore_index=255,
        normalisation=NORM,
        config={},
        epoch=3,
        metrics={},
    )


def test_cli_writes_torchscript_next_to_the_checkpoint(checkpoint, capsys):
    assert main(["export", str(checkpoint), "--format", "torchscript"]) == 0
    out = checkpoint.with_suffix(".ts")
    assert f"wrote {out} (torchscript; input 'images' (N, C, H, W): any N, H, W)" in (
        capsys.readouterr().out
    )
    files = {"pixelwise.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(out), _extra_files=files)
    info = json.loads(files["pixelwise.json"])
    assert info["class_names"] == ["sky", "road", "car"] and info["normalisation"] == NORM
    assert info["model_name"] == "unet" and info["model_args"]["padding"] == "valid"
    # A second export refuses to replace it.
    assert main(["export", str(checkpoint), "--format", "torchscript"]) == 2
    assert "tiny.ts must not exist already" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--format", "torchscript", "--overwrite"]) == 0


def test_cli_writes_onnx_with_metadata(checkpoint, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs pixelwise[export]")
    out = tmp_path / "exported" / "model.onnx"
    out.parent.mkdir()
    assert main(["export", str(checkpoint), "--out", str(out), "--size", "92", "108"]) == 0
    assert "(onnx, opset 17; input 'images' (N, C, H, W): any N, H, W)" in capsys.readouterr().out
    graph = onnx.load(str(out))
    info = json.loads({p.key: p.value for p in graph.metadata_props}["pixelwise"])
    assert info["class_names"] == ["sky", "road", "car"] and info["example_size"] == [92, 108]


def test_cli_reports_a_missing_onnx_in_one_line(checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pixelwise: error: ONNX export must have the onnx package installed")
    assert "install pixelwise[export]" in err and err.count("\n") == 1


@pytest.mark.parametrize("out", ["tiny.pt", "tiny.safetensors"])
def test_cli_never_writes_over_the_checkpoint_it_reads(checkpoint, out, capsys):
    target = checkpoint.parent / out
    if not target.exists():
        target.write_bytes(b"the trained weights")
    before = target.read_bytes()
    argv = ["export", str(checkpoint), "--out", str(target), "--format", "torchscript"]
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"pixelwise: error: output {target} must not overwrite an input checkpoint, got an "
        "input file of that name; choose another --out\n"
    )
    assert target.read_bytes() == before
