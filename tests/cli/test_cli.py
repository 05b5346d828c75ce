"""The command line: thin over the library, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pixelwise.cli import main, parse_option
from pixelwise.models import list_models


def test_models_lists_every_model_with_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    assert "size_divisor" in out and "M" in out


def test_shapes_prints_the_paper_unet_arithmetic(capsys):
    assert (
        main(
            ["shapes", "unet", "--size", "572", "572", "-o", "padding=valid", "-o", "base_width=4"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "(1, 2, 388, 388)" in out
    assert "output 388×388 for input 572×572" in out


def test_shapes_names_nearest_valid_sizes(capsys):
    code = main(
        ["shapes", "unet", "--size", "570", "572", "-o", "padding=valid", "-o", "base_width=4"]
    )
    assert code == 2
    out = capsys.readouterr().out
    assert "height 570 is not a valid input size" in out and "556 or 572" in out


def test_unknown_model_is_one_line_with_suggestion(capsys):
    assert main(["shapes", "segnte", "--size", "64", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        err.startswith("pixelwise: error: model name must be a registered model")
        and "segnet" in err
    )


def test_bad_option_syntax(capsys):
    assert main(["shapes", "unet", "--size", "64", "64", "-o", "padding"]) == 2
    assert "option must look like key=value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("padding=valid", ("padding", "valid")),
        ("depth=3", ("depth", 3)),
        ("width=0.5", ("width", 0.5)),
        ("x=True", ("x", True)),
    ],
)
def test_option_values_are_literals_or_strings(text, expected):
    assert parse_option(text) == expected


@pytest.mark.parametrize("module", ["pixelwise", "pixelwise.cli"])
def test_console_script_runs_as_module(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("pixelwise ")


def _write_instances(path):
    import numpy as np
    from PIL import Image

    labels = np.zeros((31, 23), dtype=np.uint16)
    labels[5:15, 3:10] = 1
    labels[5:15, 10:18] = 2  # touching object 1
    Image.fromarray(labels).save(path)


def test_weightmap_writes_a_colour_png(tmp_path, capsys):
    from PIL import Image

    mask = tmp_path / "instances.png"
    _write_instances(mask)
    out = tmp_path / "w.png"
    assert main(["weightmap", str(mask), "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.mode == "RGB" and image.size == (23, 31)
    assert f"wrote {out}" in capsys.readouterr().out


def test_weightmap_never_overwrites_without_asking(tmp_path, capsys):
    mask = tmp_path / "instances.png"
    _write_instances(mask)
    out = tmp_path / "w.png"
    out.write_bytes(b"keep me")
    assert main(["weightmap", str(mask), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["weightmap", str(mask), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"


def test_weightmap_refuses_a_missing_mask_in_one_line(tmp_path, capsys):
    assert main(["weightmap", str(tmp_path / "nope.png"), "--out", str(tmp_path / "w.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.png" in err


def test_shapes_says_a_valid_size_is_valid(capsys):
    argv = ["shapes", "unet", "--size", "572", "572", "-o", "padding=valid", "-o", "base_width=4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "height 572 is a valid input size; the valid heights next to it are 556 and 588" in out
    assert "width 572 is a valid input size; the valid widths next to it are 556 and 588" in out


def test_weightmap_says_how_it_read_the_mask(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    mask = np.zeros((20, 30), np.uint8)
    mask[2:8, 2:8] = 255
    mask[10:16, 12:20] = 255
    Image.fromarray(mask).save(tmp_path / "binary.png")
    out = tmp_path / "w.png"
    assert main(["weightmap", str(tmp_path / "binary.png"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "read as instance labels: 1 object (values 0, 255); a semantic mask (e.g. 0/255) needs "
        "--semantic to separate its objects"
    )
    argv = ["weightmap", str(tmp_path / "binary.png"), "--out", str(out), "--overwrite"]
    assert main([*argv, "--semantic"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "read as a semantic mask (values 0, 255; background 0)"
    )
