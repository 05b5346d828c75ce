"""The command line: thin over the library, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

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
    assert capsys.readouterr().err == (
        "pixelwise: error: --size: height 570 is not a valid input size for this network; "
        "nearest valid: 556 or 572\n"
    )


@pytest.mark.parametrize(
    ("size", "line"),
    [
        (["-5", "64"], "--size H must be an integer >= 1, got -5"),
        (["0", "8"], "--size H must be an integer >= 1, got 0"),
        (
            ["100000", "100000"],
            "--size must have at most 178,956,970 pixels (the image size limit), got "
            "100000×100000 = 10,000,000,000; trace a smaller size: the stages' shapes scale "
            "with it",
        ),
    ],
)
def test_shapes_refuses_sizes_it_cannot_trace_in_one_line(capsys, size, line):
    assert main(["shapes", "unet", "--size", *size]) == 2
    assert capsys.readouterr().err == f"pixelwise: error: {line}\n"


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


def test_an_output_that_is_a_folder_or_cannot_be_written_is_one_line(tmp_path, capsys):
    labels = tmp_path / "labels.png"
    Image.fromarray(np.eye(6, dtype=np.uint8)).save(labels)
    folder = tmp_path / "map.png"
    folder.mkdir()
    assert main(["weightmap", str(labels), "--out", str(folder), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"pixelwise: error: output {folder} must be a file, got a folder; name a file (in that "
        "folder or elsewhere)\n"
    )
    assert folder.is_dir()  # left as it was
    blocked = tmp_path / "file"
    blocked.write_text("x")
    out = blocked / "map.png"  # under a file: no folder can be made there
    assert main(["weightmap", str(labels), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"pixelwise: error: output {out} must be writable, got {blocked} is a file, not a folder; "
        "choose a folder you can write to, with space free\n"
    )


def test_running_out_of_memory_is_one_line_not_an_allocator_traceback(capsys, monkeypatch):
    from pixelwise.cli import tools

    def huge(args):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 120000000000 bytes. Error code 12"
        )

    monkeypatch.setattr(tools, "cmd_models", huge)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == (
        "pixelwise: error: pixelwise models must fit in memory, got tried to allocate "
        "120000000000 bytes; use a smaller size: --size, --tile, data.crop_size or "
        "train.batch_size\n"
    )


def test_options_too_large_to_build_are_refused_before_anything_is_allocated(capsys):
    assert main(["shapes", "unet", "--size", "64", "64", "-o", "depth=100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "pixelwise: error: model 'unet' with in_channels=3, depth=100 must be a size torch can "
        "build, got RuntimeError: Storage size calculation overflowed"
    ) and err.endswith("; use smaller options (depth, widths)\n")
