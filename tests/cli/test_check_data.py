"""``pixelwise check-data`` on tiny folders and run files, and the shipped run configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.inference import evaluation_dataset

HEIGHT, WIDTH = 45, 67
PROJECT = Path(__file__).resolve().parents[2]
REAL_DATA = PROJECT.parent / "shared" / "data"
BINARY = json.dumps({"kind": "values", "value_map": {"0": 0, "255": 1}})


def write_folder(root: Path, stems=("a", "b", "c", "d"), channels: int = 1) -> list[np.ndarray]:
    """Grey images and 0/255 masks under ``root``; returns the masks."""
    rng = np.random.default_rng(2)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    masks = []
    for stem in stems:
        shape = (HEIGHT, WIDTH) if channels == 1 else (HEIGHT, WIDTH, channels)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        mask = rng.choice(np.array([0, 255], np.uint8), (HEIGHT, WIDTH), p=(0.3, 0.7))
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        masks.append(mask)
    return masks


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("pixelwise: error: ")
    return err[len("pixelwise: error: ") : -1]


def test_folder_prints_counts_sizes_and_class_frequencies(tmp_path, capsys):
    masks = write_folder(tmp_path / "set")
    code, out, _ = run(capsys, "check-data", tmp_path / "set", "--encoding", BINARY)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"checked {tmp_path / 'set'} (layout folders): all 4 samples; no problems found"
    )
    assert lines[1] == "images: 1 channel(s), size 45×67 (H×W)"
    assert lines[2].split() == ["class", "all", "pixels", "%"]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]) // 255, minlength=2)
    for line, name, count in zip(lines[3:5], ("class_0", "class_1"), counts, strict=True):
        assert line.split() == [name, f"{count:,}", f"{100 * count / counts.sum():.2f}%"]
    assert lines[5].split() == ["ignored", "0"]


def test_run_config_checks_its_train_and_val_split(tmp_path, capsys):
    write_folder(tmp_path / "set")
    config = tmp_path / "run.toml"
    config.write_text(
        "[data]\n"
        'layout = "folders"\n'
        f'root = "{(tmp_path / "set").as_posix()}"\n'
        'encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }\n'
        "val_fraction = 0.25\n"
        "crop_size = 16\n"
    )
    code, out, _ = run(capsys, "check-data", config)
    assert code == 0
    assert out.splitlines()[0] == (
        f"checked {config} (layout folders): train 3 samples, val 1 samples; no problems found"
    )
    assert "size 45×67" in out  # read as stored, not cropped


def test_camvid_folder_checks_train_and_val(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for sub in (split, f"{split}annot"):
            (tmp_path / sub).mkdir()
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(
            tmp_path / split / "x.png"
        )
        mask = np.arange(48, dtype=np.uint8).reshape(6, 8) % 12  # 11 = void
        Image.fromarray(mask).save(tmp_path / f"{split}annot" / "x.png")
    code, out, _ = run(capsys, "check-data", tmp_path, "--layout", "camvid")
    assert code == 0
    assert "train 1 samples, val 1 samples" in out
    assert out.splitlines()[-1].split() == ["ignored", "4", "4"]


def test_run_config_without_encoding_shows_the_run_file_line(tmp_path, capsys):
    write_folder(tmp_path / "set")
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nlayout = "folders"\nroot = "{(tmp_path / "set").as_posix()}"\n')
    code, _, err = run(capsys, "check-data", config)
    assert one_line_error(code, err) == (
        "the mask encoding of layout 'folders' must be declared, got nothing; "
        'e.g. encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )


def test_binary_masks_read_as_classes_get_the_value_map_to_declare(tmp_path, capsys):
    write_folder(tmp_path / "set", stems=("a",))
    index = '{ kind = "index", num_classes = 2 }'
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", index)
    assert one_line_error(code, err) == (
        f"mask {tmp_path / 'set' / 'masks' / 'a.png'} must hold classes 0..1, got values [255]; "
        'the mask looks binary: declare encoding = { kind = "values", value_map = { "0" = 0, '
        '"255" = 1 } }'
    )
    # The suggestion, pasted into --encoding as it is, reads the folder.
    suggested = err.split("declare encoding = ")[1].strip()
    code, out, _ = run(capsys, "check-data", tmp_path / "set", "--encoding", suggested)
    assert code == 0 and "no problems found" in out


@pytest.mark.parametrize(
    "text",
    [
        '{ kind = "values", value_map = { "0" = 0, "255" = 1 } }',
        '{"kind": "values", "value_map": {"0": 0, "255": 1}}',
    ],
    ids=["toml", "json"],
)
def test_encoding_flag_takes_a_toml_inline_table_or_json(tmp_path, capsys, text):
    masks = write_folder(tmp_path / "set")
    code, out, _ = run(capsys, "check-data", tmp_path / "set", "--encoding", text)
    assert code == 0
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]) // 255, minlength=2)
    assert out.splitlines()[4].split()[:2] == ["class_1", f"{counts[1]:,}"]


def test_encoding_flag_that_is_no_table(tmp_path, capsys):
    write_folder(tmp_path / "set")
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", "values")
    assert one_line_error(code, err) == (
        "--encoding must be a table (a TOML inline table or JSON), got 'values'; "
        'e.g. --encoding \'{ kind = "values", value_map = { "0" = 0, "255" = 1 } }\''
    )


def test_encoding_help_shows_the_one_spelling(capsys):
    from pixelwise.data.encoding import EXAMPLE

    with pytest.raises(SystemExit):
        main(["check-data", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert f"'{EXAMPLE.to_toml()}'" in out


def test_bad_encoding_table(tmp_path, capsys):
    write_folder(tmp_path / "set")
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", '{"kind": "colours"}')
    assert one_line_error(code, err) == (
        "encoding kind must be one of ['index', 'values', 'palette'], got 'colours'; "
        "choose one of: index, palette, values"
    )


def test_undeclared_mask_value_names_the_file(tmp_path, capsys):
    write_folder(tmp_path / "set")
    bad = tmp_path / "set" / "masks" / "c.png"
    Image.fromarray(np.full((HEIGHT, WIDTH), 128, np.uint8)).save(bad)
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", BINARY)
    assert one_line_error(code, err) == (
        f"mask {bad} must hold only the declared values [0, 255], got values [128]; "
        "add them to the value map, e.g. "
        'encoding = { kind = "values", value_map = { "0" = 0, "128" = 255, "255" = 1 } } '
        "to ignore them"
    )


def test_mask_of_another_size_names_both_files(tmp_path, capsys):
    write_folder(tmp_path / "set")
    bad = tmp_path / "set" / "masks" / "b.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH + 1), np.uint8)).save(bad)
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", BINARY)
    assert one_line_error(code, err).startswith(
        f"mask {bad} must have the size of its image {tmp_path / 'set' / 'images' / 'b.png'}"
    )


def test_images_with_different_channels(tmp_path, capsys):
    write_folder(tmp_path / "set")
    rgb = tmp_path / "set" / "images" / "d.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(rgb)
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", BINARY)
    assert one_line_error(code, err).startswith(f"image {rgb} must have the 1 channel(s)")


def test_missing_source(tmp_path, capsys):
    code, _, err = run(capsys, "check-data", tmp_path / "nothing")
    assert one_line_error(code, err) == (
        f"{tmp_path / 'nothing'} must be a run config (.toml) or a data folder, got a missing path"
    )


def test_empty_image_folder(tmp_path, capsys):
    (tmp_path / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "masks").mkdir()
    code, _, err = run(capsys, "check-data", tmp_path / "set", "--encoding", BINARY)
    assert one_line_error(code, err).startswith(
        f"image folder {tmp_path / 'set' / 'images'} must contain images"
    )


def test_unknown_key_in_run_config(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[data]\nlayuot = "folders"\n')
    code, _, err = run(capsys, "check-data", config)
    assert one_line_error(code, err) == (
        f"key of [data] in {config} must be known, got 'layuot'; did you mean 'layout'?"
    )


# --- the shipped run configs ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["isbi2012", "camvid"])
def test_shipped_configs_load(name):
    config = load_config(PROJECT / "configs" / f"{name}.toml")
    # configs/ is one level down: its ../../shared/data is the data folder beside the project.
    assert config.data.root == str((REAL_DATA / name).resolve())
    if name == "isbi2012":
        assert (config.model.name, config.data.layout, config.data.shuffle_split) == (
            "unet",
            "folders",
            False,
        )
        assert config.data.elastic_std > 0 and config.data.crop_size == 256
    else:
        assert (config.model.name, config.data.layout) == ("segnet_basic", "camvid")
        assert config.loss.class_weights == "median_frequency"


def _real(name: str) -> dict:
    if not (REAL_DATA / name).is_dir():
        pytest.skip(f"real data {REAL_DATA / name} is absent")
    data = load_config(PROJECT / "configs" / f"{name}.toml").to_dict()["data"]
    return {**data, "root": str(REAL_DATA / name)}


def test_isbi_config_trains_on_00_to_19_and_validates_on_20_to_24():
    table = _real("isbi2012")
    train, val = evaluation_dataset(table, "train"), evaluation_dataset(table, "val")
    assert [train.sample_id(i) for i in range(len(train))] == [f"{i:02d}" for i in range(20)]
    assert [val.sample_id(i) for i in range(len(val))] == [f"{i:02d}" for i in range(20, 25)]
    assert val.num_classes == 2 and val.ignore_index == 255


def test_camvid_config_has_the_segnet_split():
    table = _real("camvid")
    train, val = evaluation_dataset(table, "train"), evaluation_dataset(table, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.num_classes == 11 and train.class_names[-1] == "Bicyclist"


def test_check_data_reads_every_isbi_slice(capsys, monkeypatch):
    _real("isbi2012")
    monkeypatch.chdir(PROJECT.parent)  # the config's paths are relative to its own folder
    code, out, _ = run(capsys, "check-data", f"{PROJECT.name}/configs/isbi2012.toml")
    assert code == 0
    assert "train 20 samples, val 5 samples" in out and "size 512×512" in out


def test_a_folder_without_a_declared_encoding_gets_the_values_found_and_a_proposal(
    tmp_path, capsys
):
    write_folder(tmp_path / "set")
    assert main(["check-data", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "masks hold [0, 255] (2 values): mask values {0, 255}: binary"
    assert out[1] == (
        'proposed: --encoding \'{ kind = "values", value_map = { "0" = 0, "255" = 1 } }\' '
        "(check it, then declare it in a run config or pass it)"
    )
    assert out[2].startswith(f"checked {tmp_path / 'set'} (layout folders): all 4 samples")


def test_a_folder_whose_mask_values_imply_no_encoding_is_one_line_with_the_values(tmp_path, capsys):
    write_folder(tmp_path / "set")
    noisy = np.arange(HEIGHT * WIDTH, dtype=np.uint32).reshape(HEIGHT, WIDTH) % 200
    Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "set" / "masks" / "a.png")
    assert main(["check-data", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"pixelwise: error: the mask encoding of {tmp_path / 'set'} must be declared, got mask "
        "values [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...] (more than 64 values) are too many"
    )
