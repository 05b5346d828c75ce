"""``pixelwise evaluate``, ``predict`` and ``info`` on a tiny saved checkpoint and tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import count_parameters, main
from pixelwise.data import FolderDataset, MaskEncoding
from pixelwise.engine.checkpoint import load_model, save_checkpoint
from pixelwise.inference import predict_logits, predict_mask
from pixelwise.metrics import ConfusionMatrix
from pixelwise.models import create_model
from pixelwise.report.palette import class_palette

HEIGHT, WIDTH = 45, 67
CLASSES = ("sky", "road", "car")
ENCODING = {"kind": "index", "num_classes": 3, "ignore_values": [255]}
NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


def write_folder(root: Path, stems=("a", "b", "c", "d")) -> Path:
    rng = np.random.default_rng(1)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
        mask = rng.choice(np.array([0, 1, 2, 255], np.uint8), (HEIGHT, WIDTH))
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model(
        "unet", num_classes=3, in_channels=3, depth=2, base_width=4, padding="valid"
    )
    data = {
        "layout": "folders",
        "root": "where/it/was/trained",
        "encoding": ENCODING,
        "val_fraction": 0.5,
        "shuffle_split": False,
        "crop_size": 32,
    }
    return save_checkpoint(
        tmp_path / "tiny.pt",
        model=model,
        class_names=CLASSES,
        ignore_index=255,
        normalisation=NORM,
        config={"data": data, "train": {"epochs": 7}},
        epoch=7,
        metrics={"mean_iou": 0.25, "pixel_accuracy": 0.5},
    )


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("pixelwise: error: ")
    return err[len("pixelwise: error: ") : -1]


def expected_metrics(checkpoint: Path, root: Path, stems) -> dict:
    """The oracle: ConfusionMatrix over the model's own predictions of the samples."""
    model = load_model(checkpoint)
    dataset = FolderDataset(root, MaskEncoding.from_config(ENCODING))
    index = {dataset.sample_id(i): i for i in range(len(dataset))}
    matrix = ConfusionMatrix(3)
    for stem in stems:
        sample = dataset[index[stem]]
        pred = predict_mask(model, sample["image"])
        matrix.update(pred[None], sample["mask"][None])
    return matrix.summary(CLASSES)


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_json_is_the_confusion_matrix_of_the_predictions(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    code, out, _ = run(capsys, "evaluate", checkpoint, root, "--split", "all", "--json")
    assert code == 0
    result = json.loads(out)
    expected = expected_metrics(checkpoint, root, "abcd")
    assert result["num_images"] == 4
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert result[key] == pytest.approx(expected[key])
    for name in CLASSES:
        assert result["classes"][name]["iou"] == pytest.approx(expected["classes"][name]["iou"])
        assert (
            result["classes"][name]["target_pixels"] == expected["classes"][name]["target_pixels"]
        )
    assert 0 <= result["boundary_f1"] <= 1


def test_evaluate_table_uses_the_checkpoints_split(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    code, out, _ = run(capsys, "evaluate", checkpoint, root)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"unet (epoch 7) on {root}, split val: 2 images"
    assert lines[1].split() == ["class", "IoU", "acc", "Dice", "BF", "pixels"]
    expected = expected_metrics(checkpoint, root, "cd")  # val_fraction 0.5, in order
    road = lines[3].split()
    assert road[0] == "road" and float(road[1]) == pytest.approx(
        expected["classes"]["road"]["iou"], abs=5e-5
    )
    assert f"mean IoU                {expected['mean_iou']:.4f}" in lines
    assert any(line.startswith("boundary F1") for line in lines)


def test_evaluate_encoding_flag_overrides_the_stored_one(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    two = json.dumps({"kind": "index", "num_classes": 2, "ignore_values": [2, 255]})
    code, _, err = run(capsys, "evaluate", checkpoint, root, "--encoding", two)
    assert one_line_error(code, err) == (
        f"the classes of {root} must be the checkpoint's 3, got 2 from the mask encoding; "
        "pass the --encoding the model was trained with"
    )


def test_evaluate_encoding_flag_takes_a_toml_inline_table(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    two = '{ kind = "index", num_classes = 2, ignore_values = [2, 255] }'
    code, _, err = run(capsys, "evaluate", checkpoint, root, "--encoding", two)
    assert one_line_error(code, err).startswith(
        f"the classes of {root} must be the checkpoint's 3, got 2 from the mask encoding"
    )


def test_evaluate_refuses_an_encoding_that_is_neither_toml_nor_json(checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", checkpoint, tmp_path, "--encoding", "{kind: index}")
    assert one_line_error(code, err) == (
        "--encoding must be a table (a TOML inline table or JSON), got '{kind: index}'; "
        'e.g. --encoding \'{ kind = "values", value_map = { "0" = 0, "255" = 1 } }\''
    )


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", tmp_path / "none.pt", tmp_path)
    assert one_line_error(code, err) == (
        f"checkpoint {tmp_path / 'none.pt'} must be an existing file, got a missing file; "
        "e.g. runs/<run>/best.pt"
    )


def test_evaluate_undeclared_mask_value_names_the_file(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    Image.fromarray(np.full((HEIGHT, WIDTH), 9, np.uint8)).save(root / "masks" / "c.png")
    code, _, err = run(capsys, "evaluate", checkpoint, root)
    message = one_line_error(code, err)
    assert message.startswith(f"mask {root / 'masks' / 'c.png'} must hold classes 0..2")
    assert "got values [9]" in message


def test_evaluate_refuses_images_with_other_channels(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    grey = root / "images" / "d.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(grey)
    code, _, err = run(capsys, "evaluate", checkpoint, root)
    assert one_line_error(code, err).startswith(
        f"image {grey} must have 3 channels (channels=3), got 1 (mode L)"
    )


def test_evaluate_names_every_bad_file_before_scoring_any(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set")
    (root / "images" / "a.png").write_bytes(b"")
    Image.fromarray(np.full((HEIGHT, WIDTH), 9, np.uint8)).save(root / "masks" / "c.png")
    code, out, err = run(capsys, "evaluate", checkpoint, root, "--split", "all")
    lines = err.splitlines()
    assert code == 2 and out == "" and lines[0] == "pixelwise: error: 2 problems in the data:"
    assert lines[1].startswith(f"image {root / 'images' / 'a.png'} must be a readable")
    assert lines[2].startswith(f"mask {root / 'masks' / 'c.png'} must hold classes 0..2")


def test_evaluate_refuses_synthetic_layout_for_a_folder(tmp_path, capsys):
    model = create_model("unet", num_classes=2, in_channels=1, depth=2, base_width=4)
    path = save_checkpoint(
        tmp_path / "synthetic.pt",
        model=model,
        class_names=("background", "object"),
        ignore_index=255,
        normalisation=None,
        config={"data": {"layout": "synthetic"}},
        epoch=1,
        metrics={},
    )
    code, _, err = run(capsys, "evaluate", path, tmp_path)
    assert one_line_error(code, err) == (
        f"the layout of {tmp_path} must be one of ['folders', 'camvid', 'instances', 'tiff'], "
        "got 'synthetic' (the checkpoint's built-in training data); pass --layout"
    )


# --- predict ----------------------------------------------------------------------------------


def test_predict_round_trip_writes_three_pngs_per_image(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set", stems=("a", "b"))
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "predict", checkpoint, root / "images", "--out", out_dir)
    assert code == 0
    assert out.startswith(f"wrote 2 image(s) × 3 files to {out_dir}")
    assert sorted(p.name for p in out_dir.iterdir()) == [
        f"{s}_{k}.png" for s in "ab" for k in ("color", "mask", "overlay")
    ]
    model = load_model(checkpoint)
    pixels = np.array(Image.open(root / "images" / "a.png"))
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    mask = predict_mask(model, image).numpy()
    written = np.asarray(Image.open(out_dir / "a_mask.png"))
    assert written.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(written, mask)
    color = np.asarray(Image.open(out_dir / "a_color.png"))
    np.testing.assert_array_equal(color, class_palette(CLASSES)[mask])
    assert np.asarray(Image.open(out_dir / "a_overlay.png")).shape == (HEIGHT, WIDTH, 3)


def test_predict_tiles_images_larger_than_the_tile(checkpoint, tmp_path, capsys, monkeypatch):
    # A valid U-Net: overlap-tile output tiles abut exactly, so 16-pixel tiles must give the
    # whole-image prediction; the spy proves the command went through the tiles.
    from pixelwise.inference import tiling

    tiles_seen = []
    real_plan = tiling.plan_tiles

    def spy(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        tiles_seen.append(len(list(plan.tiles())))
        return plan

    monkeypatch.setattr(tiling, "plan_tiles", spy)
    root = write_folder(tmp_path / "set", stems=("a",))
    out_dir = tmp_path / "out"
    code, _, _ = run(capsys, "predict", checkpoint, root / "images", "--out", out_dir, "--tile", 16)
    assert code == 0
    assert tiles_seen and tiles_seen[0] > 1
    model = load_model(checkpoint)
    pixels = np.array(Image.open(root / "images" / "a.png"))
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    whole = predict_mask(model, image).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(out_dir / "a_mask.png")), whole)


def test_predict_with_onnxruntime_writes_the_same_masks(checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs pixelwise[export]")
    root = write_folder(tmp_path / "set", stems=("a", "b"))
    masks = {}
    for backend in ("torch", "onnxruntime"):
        out_dir = tmp_path / backend
        argv = ("predict", checkpoint, root / "images", "--out", out_dir, "--tile", 32)
        code, _, _ = run(capsys, *argv, "--backend", backend)
        assert code == 0
        masks[backend] = [np.asarray(Image.open(out_dir / f"{s}_mask.png")) for s in "ab"]
    model = load_model(checkpoint)
    for stem, torch_mask, ort_mask in zip("ab", masks["torch"], masks["onnxruntime"], strict=True):
        image = torch.from_numpy(np.array(Image.open(root / "images" / f"{stem}.png")))
        logits = predict_logits(model, image.permute(2, 0, 1).float() / 255)
        top2 = logits.topk(2, dim=0).values
        clear = (top2[0] - top2[1] > 1e-3).numpy()  # pixels no float rounding can flip
        assert clear.mean() > 0.9 and ort_mask.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(ort_mask[clear], torch_mask[clear])


def test_predict_onnxruntime_refuses_cuda(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set", stems=("a",))
    argv = ("predict", checkpoint, root / "images", "--out", tmp_path / "out")
    code, _, err = run(capsys, *argv, "--backend", "onnxruntime", "--device", "cuda")
    assert one_line_error(code, err).startswith("--backend onnxruntime runs on the CPU")
    assert not (tmp_path / "out").exists()


def test_predict_never_overwrites_unless_asked(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set", stems=("a",))
    image, out_dir = root / "images" / "a.png", tmp_path / "out"
    assert run(capsys, "predict", checkpoint, image, "--out", out_dir)[0] == 0
    before = (out_dir / "a_mask.png").stat().st_mtime_ns
    code, _, err = run(capsys, "predict", checkpoint, image, "--out", out_dir)
    assert one_line_error(code, err) == (
        f"output {out_dir / 'a_mask.png'} (and 2 more) must not exist already, got an "
        "existing file; pass --overwrite to replace it, --skip-existing to predict only the "
        "images without outputs, or choose another output folder"
    )
    assert (out_dir / "a_mask.png").stat().st_mtime_ns == before
    assert run(capsys, "predict", checkpoint, image, "--out", out_dir, "--overwrite")[0] == 0


def test_predict_goes_on_past_bad_images_names_each_and_fails_at_the_end(
    checkpoint, tmp_path, capsys
):
    root = write_folder(tmp_path / "set", stems=("a", "b", "c", "d"))
    images, out_dir = root / "images", tmp_path / "out"
    good_b = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(images / "d.png")  # 1 channel
    code, out, err = run(capsys, "predict", checkpoint, images, "--out", out_dir)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("pixelwise: error:")]
    assert len(errors) == 3
    assert errors[0].startswith(f"pixelwise: error: image {images / 'b.png'} must be a readable")
    assert errors[1].startswith(f"pixelwise: error: image {images / 'd.png'} must have 3 chan")
    assert errors[2] == (
        "pixelwise: error: 2 of 4 image(s) not predicted (each named above); fix them and rerun "
        "with --skip-existing"
    )
    assert "wrote 2 image(s)" in out
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(f"{s}_{k}.png" for s in "ac" for k in ("mask", "color", "overlay"))
    # Fixed, the rerun predicts only what is missing and leaves the earlier outputs untouched.
    (images / "b.png").write_bytes(good_b)
    (images / "d.png").unlink()
    before = (out_dir / "a_mask.png").stat().st_mtime_ns
    code, out, _ = run(capsys, "predict", checkpoint, images, "--out", out_dir, "--skip-existing")
    assert code == 0 and "wrote 1 image(s)" in out
    assert (out_dir / "b_mask.png").is_file()
    assert (out_dir / "a_mask.png").stat().st_mtime_ns == before


def test_predict_refuses_to_overwrite_inputs_in_their_folder(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set", stems=("a",))
    folder = root / "images"
    assert run(capsys, "predict", checkpoint, folder, "--out", folder)[0] == 0  # no clash yet
    code, _, err = run(capsys, "predict", checkpoint, folder, "--out", folder, "--overwrite")
    assert one_line_error(code, err) == (
        f"output {folder / 'a_mask.png'} must not overwrite an input image, got an input file "
        "of that name; choose an output folder other than the images' folder"
    )


def test_predict_unreadable_image(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = run(capsys, "predict", checkpoint, bad, "--out", tmp_path / "out")
    message = one_line_error(code, err)
    assert message.startswith(f"image {bad} must be a readable, complete image file, got ")
    assert message.endswith("; re-export the file or remove it from the data set")


def test_predict_wrong_channels(checkpoint, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(grey)
    code, _, err = run(capsys, "predict", checkpoint, grey, "--out", tmp_path / "out")
    assert one_line_error(code, err) == (
        f"image {grey} must have 3 channel(s), the model's in_channels, got 1; "
        "convert the image (e.g. to RGB or greyscale) to match the model"
    )
    assert not (tmp_path / "out").exists()


def test_predict_empty_folder(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", checkpoint, tmp_path / "empty", "--out", tmp_path)
    assert one_line_error(code, err) == (
        f"image folder {tmp_path / 'empty'} must contain images "
        "['.png', '.tif', '.tiff', '.jpg', '.jpeg', '.bmp', '.gif'], got none"
    )


def test_predict_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "fake.pt"
    fake.write_text("hello")
    code, _, err = run(capsys, "predict", fake, tmp_path, "--out", tmp_path / "out")
    assert one_line_error(code, err).startswith(
        f"checkpoint {fake} must be a pixelwise checkpoint (a .pt or .safetensors written by "
        "pixelwise train), got an unreadable file ("
    )


def test_predict_missing_checkpoint(tmp_path, capsys):
    code, _, err = run(capsys, "predict", tmp_path / "x.pt", tmp_path, "--out", tmp_path)
    assert one_line_error(code, err) == (
        f"checkpoint {tmp_path / 'x.pt'} must be an existing file, got a missing file; "
        "e.g. runs/<run>/best.pt"
    )


def test_predict_missing_image(checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "predict", checkpoint, tmp_path / "no.png", "--out", tmp_path)
    assert one_line_error(code, err) == (
        f"input {tmp_path / 'no.png'} must be an image file or a folder of images, "
        "got a missing path"
    )


# --- predict: masks in the data set's own encoding ---------------------------------------------


def encoded_checkpoint(path: Path, encoding: dict | None, num_classes: int, seed: int) -> Path:
    """A tiny U-Net checkpoint whose training config declares ``encoding`` (None: no [data])."""
    torch.manual_seed(seed)
    model = create_model("unet", num_classes=num_classes, in_channels=3, depth=2, base_width=4)
    data = {"layout": "folders", "root": "elsewhere", "encoding": encoding}
    return save_checkpoint(
        path,
        model=model,
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        ignore_index=255,
        normalisation=None,
        config={"data": data} if encoding is not None else {},
        epoch=1,
        metrics={},
    )


def predict_both_formats(capsys, checkpoint: Path, images: Path, out: Path) -> dict:
    """``<stem>_mask.png`` of ``a`` written with the default format and with ``index``."""
    masks = {}
    for fmt in ("data", "index"):
        argv = ["predict", checkpoint, images, "--out", out / fmt]
        code, printed, _ = run(capsys, *argv, *(["--mask-format", fmt] if fmt == "index" else []))
        assert code == 0
        masks[fmt] = (np.asarray(Image.open(out / fmt / "a_mask.png")), printed)
    return masks


def test_predict_writes_a_binary_data_sets_masks_as_0_and_255(tmp_path, capsys):
    from pixelwise.data._io import read_mask

    binary = {"kind": "values", "value_map": {"0": 0, "255": 1}}
    checkpoint = encoded_checkpoint(tmp_path / "binary.pt", binary, 2, seed=0)
    root = write_folder(tmp_path / "set", stems=("a",))
    masks = predict_both_formats(capsys, checkpoint, root / "images", tmp_path / "out")
    data, printed = masks["data"]
    index, _ = masks["index"]
    assert np.unique(index).tolist() == [0, 1]  # the model predicts both classes here
    assert data.dtype == np.uint8 and np.unique(data).tolist() == [0, 255]
    np.testing.assert_array_equal(data, index * 255)
    # Read back as the data set reads its masks/: the same classes.
    classes = read_mask(tmp_path / "out" / "data" / "a_mask.png", MaskEncoding.from_config(binary))
    np.testing.assert_array_equal(classes, index)
    assert "masks: mask values of the training data (values encoding)" in printed.splitlines()


def test_predict_mask_format_index_writes_class_indices(tmp_path, capsys):
    binary = {"kind": "values", "value_map": {"0": 0, "255": 1}}
    checkpoint = encoded_checkpoint(tmp_path / "binary.pt", binary, 2, seed=0)
    root = write_folder(tmp_path / "set", stems=("a",))
    masks = predict_both_formats(capsys, checkpoint, root / "images", tmp_path / "out")
    index, printed = masks["index"]
    model = load_model(checkpoint)
    image = torch.from_numpy(np.array(Image.open(root / "images" / "a.png"))).permute(2, 0, 1)
    np.testing.assert_array_equal(index, predict_mask(model, image.float() / 255).numpy())
    assert "masks: class indices" in printed.splitlines()


def test_predict_writes_a_palette_data_sets_masks_in_its_colours(tmp_path, capsys):
    colours = [[128, 64, 128], [70, 70, 70], [0, 0, 142], [0, 0, 0]]  # the last one ignored
    palette = {"kind": "palette", "palette": colours, "num_classes": 3}
    checkpoint = encoded_checkpoint(tmp_path / "palette.pt", palette, 3, seed=2)
    root = write_folder(tmp_path / "set", stems=("a",))
    masks = predict_both_formats(capsys, checkpoint, root / "images", tmp_path / "out")
    data, _ = masks["data"]
    index, _ = masks["index"]
    assert np.unique(index).tolist() == [0, 1, 2]
    assert data.shape == (HEIGHT, WIDTH, 3) and data.dtype == np.uint8
    np.testing.assert_array_equal(data, np.asarray(colours, np.uint8)[index])
    np.testing.assert_array_equal(MaskEncoding.from_config(palette).decode(data), index)


def test_predict_without_a_declared_encoding_writes_class_indices(tmp_path, capsys):
    checkpoint = encoded_checkpoint(tmp_path / "fit.pt", None, 2, seed=0)  # as pixelwise.fit
    root = write_folder(tmp_path / "set", stems=("a",))
    masks = predict_both_formats(capsys, checkpoint, root / "images", tmp_path / "out")
    np.testing.assert_array_equal(masks["data"][0], masks["index"][0])
    assert "masks: class indices" in masks["data"][1].splitlines()


def test_the_mask_format_flag_offers_the_librarys_formats():
    from pixelwise.cli import build_parser
    from pixelwise.inference import MASK_FORMATS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    flag = next(a for a in sub.choices["predict"]._actions if a.dest == "mask_format")
    assert tuple(flag.choices) == MASK_FORMATS and flag.default == "data"


def test_predict_refuses_an_encoding_without_a_value_for_a_class_before_writing(tmp_path, capsys):
    gap = {"kind": "values", "value_map": {"0": 0, "255": 2}}  # no value is class 1
    checkpoint = encoded_checkpoint(tmp_path / "gap.pt", gap, 3, seed=0)
    root = write_folder(tmp_path / "set", stems=("a",))
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", checkpoint, root / "images", "--out", out)
    assert one_line_error(code, err) == (
        'the encoding { kind = "values", value_map = { "0" = 0, "255" = 2 } } must have a mask '
        "value for every class it writes, got none for [1]; add one to the value map (or the "
        "palette), or write class indices (pixelwise predict --mask-format index)"
    )
    assert not out.exists()
    argv = ("predict", checkpoint, root / "images", "--out", out, "--mask-format", "index")
    assert run(capsys, *argv)[0] == 0


def test_predict_with_the_palette_file_gone_says_how_to_write_indices(tmp_path, capsys):
    gone = tmp_path / "palette.png"
    checkpoint = encoded_checkpoint(
        tmp_path / "p.pt", {"kind": "palette", "palette": str(gone)}, 2, seed=0
    )
    root = write_folder(tmp_path / "set", stems=("a",))
    code, _, err = run(capsys, "predict", checkpoint, root / "images", "--out", tmp_path / "o")
    assert one_line_error(code, err) == (
        "the mask encoding of the training data must be usable to write masks in, got "
        f"palette image {gone} must be an existing file, got a missing file; "
        "write class indices instead (mask_format='index', --mask-format index)"
    )


# --- info -------------------------------------------------------------------------------------


def test_info_describes_the_checkpoint(checkpoint, capsys):
    code, out, _ = run(capsys, "info", checkpoint)
    assert code == 0
    model = load_model(checkpoint)
    lines = out.splitlines()
    assert lines[0] == f"checkpoint     {checkpoint}"
    assert "model          unet" in lines
    assert (
        "model args     num_classes=3, in_channels=3, depth=2, base_width=4, padding='valid'"
        in lines
    )
    assert f"parameters     {count_parameters(model):,}" in lines
    assert "objects        none recorded (not trained on instance labels)" in lines
    assert "classes        3: sky, road, car" in lines
    assert "normalisation  mean [0.5, 0.4, 0.3], std [0.25, 0.2, 0.3]" in lines
    assert "epoch          7" in lines
    assert "  mean_iou        0.2500" in lines
    assert "  pixel_accuracy  0.5000" in lines
    config = out[out.index("config\n") + len("config\n") :]
    assert config.startswith('[data]\nlayout = "folders"\n') and "[train]\nepochs = 7" in config


def test_info_not_a_checkpoint(tmp_path, capsys):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    code, _, err = run(capsys, "info", tmp_path / "other.pt")
    assert one_line_error(code, err) == (
        f"checkpoint {tmp_path / 'other.pt'} must be a pixelwise checkpoint (a .pt or "
        ".safetensors written by pixelwise train), got a file without the pixelwise header "
        "(['weights'])"
    )


def test_predict_refuses_alpha_outside_0_1_before_writing(checkpoint, tmp_path, capsys):
    root = write_folder(tmp_path / "set", stems=("a",))
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "predict", checkpoint, root / "images", "--out", out_dir, "--alpha", 2
    )
    assert one_line_error(code, err) == "alpha must lie in [0, 1], got 2.0"
    assert not out_dir.exists() or not any(out_dir.iterdir())
