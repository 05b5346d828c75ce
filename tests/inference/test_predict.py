"""Whole-image prediction, prediction files and data-set evaluation, on tiny models and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data import FolderDataset, MaskEncoding
from pixelwise.inference import (
    collect_images,
    covering_input_size,
    evaluate_dataset,
    evaluation_dataset,
    mask_encoding,
    output_margin,
    plan_outputs,
    predict_file,
    predict_logits,
    predict_mask,
    prediction_paths,
    read_image_file,
)
from pixelwise.inference.segmenter import Segmenter
from pixelwise.metrics import ConfusionMatrix, boundary_f1
from pixelwise.models import create_model
from pixelwise.report.palette import class_palette

HEIGHT, WIDTH = 45, 67
ENCODING = {"kind": "index", "num_classes": 3, "ignore_values": [255]}


def tiny_unet(padding: str = "same", in_channels: int = 3, num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "unet",
        num_classes=num_classes,
        in_channels=in_channels,
        depth=2,
        base_width=4,
        padding=padding,
    )
    return model.eval()


def write_folder(
    root: Path, stems=("a", "b", "c", "d"), images: str = "images", masks: str = "masks"
) -> Path:
    """RGB images and index masks (0, 1, 2 and 255 = ignore) paired by stem under ``root``."""
    rng = np.random.default_rng(1)
    for sub in (images, masks):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / images / f"{stem}.png")
        mask = rng.choice(np.array([0, 1, 2, 255], np.uint8), (HEIGHT, WIDTH))
        Image.fromarray(mask).save(root / masks / f"{stem}.png")
    return root


# --- logits at the image size ---------------------------------------------------------------


def test_same_size_model_is_run_as_is_for_one_image_and_a_batch():
    model = tiny_unet()
    x = torch.rand(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(predict_logits(model, x), expected)
    torch.testing.assert_close(predict_logits(model, x[1]), expected[1])
    assert output_margin(model) == 0 and covering_input_size(model, 45) == 45


def test_model_mode_is_eval_during_prediction_and_restored_after():
    model = tiny_unet().train()
    x = torch.rand(1, 3, HEIGHT, WIDTH)
    logits = predict_logits(model, x)
    assert model.training
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(x))


def test_valid_unet_margin_is_its_size_arithmetic():
    model = tiny_unet("valid")
    # depth 2: input 4k + 28 gives output 4k − 12, so 20 pixels of context on each side.
    assert output_margin(model) == 20
    assert covering_input_size(model, 48) == 88 and model.output_size(88) == 48
    assert covering_input_size(model, 45) == 88


@pytest.mark.parametrize(("height", "width"), [(48, 48), (HEIGHT, WIDTH), (7, 5)])
def test_valid_unet_sees_the_image_mirrored_by_its_margin(height, width):
    # Oracle: numpy's reflect padding, by the margin before and up to a valid size after.
    model = tiny_unet("valid")
    image = torch.rand(3, height, width)
    in_h, in_w = covering_input_size(model, height), covering_input_size(model, width)
    padding = ((0, 0), (20, in_h - height - 20), (20, in_w - width - 20))
    padded = torch.from_numpy(np.pad(image.numpy(), padding, mode="reflect"))
    with torch.no_grad():
        expected = model(padded[None])[0, :, :height, :width]
    logits = predict_logits(model, image)
    assert logits.shape == (3, height, width)
    torch.testing.assert_close(logits, expected)


def test_normalisation_is_applied_per_channel():
    model = tiny_unet()
    image = torch.rand(3, HEIGHT, WIDTH)
    norm = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}
    mean, std = torch.tensor(norm["mean"])[:, None, None], torch.tensor(norm["std"])[:, None, None]
    with torch.no_grad():
        expected = model(((image - mean) / std)[None])[0]
    torch.testing.assert_close(predict_logits(Segmenter(model, norm), image), expected)


def test_predict_mask_is_the_argmax_as_int64_on_cpu():
    model = tiny_unet("valid")
    image = torch.rand(3, HEIGHT, WIDTH)
    mask = predict_mask(model, image)
    assert mask.dtype == torch.int64 and mask.shape == (HEIGHT, WIDTH)
    assert torch.equal(mask, predict_logits(model, image).argmax(0))


def test_wrong_channel_count_is_one_line():
    with pytest.raises(ValueError) as info:
        predict_logits(tiny_unet(), torch.rand(1, HEIGHT, WIDTH))
    assert str(info.value) == (
        "images must have 3 channels (the model's in_channels), got 1 channels in shape "
        "(1, 1, 45, 67); build the model with a matching in_channels or convert the images"
    )


# --- evaluation -------------------------------------------------------------------------------


def test_evaluate_dataset_matches_confusion_matrix_and_boundary_f1(tmp_path):
    root = write_folder(tmp_path / "set")
    dataset = FolderDataset(root, MaskEncoding.from_config(ENCODING))
    model = tiny_unet("valid")
    calls = []
    result = evaluate_dataset(
        Segmenter(model, class_names=("sky", "road", "car"), ignore_index=255),
        dataset,
        progress=lambda done, total: calls.append((done, total)),
    )
    preds = torch.stack([predict_mask(model, dataset[i]["image"]) for i in range(4)])
    targets = torch.stack([dataset[i]["mask"] for i in range(4)])
    expected = ConfusionMatrix(3).update(preds, targets).summary(("sky", "road", "car"))
    assert result["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert result["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    for name in ("sky", "road", "car"):
        for key in ("iou", "accuracy", "dice", "target_pixels"):
            assert result["classes"][name][key] == pytest.approx(expected["classes"][name][key])
    assert result["boundary_f1"] == pytest.approx(boundary_f1(preds, targets, 3))
    assert result["num_images"] == 4 and calls == [(i, 4) for i in range(1, 5)]


def test_evaluate_refuses_a_model_with_other_classes(tmp_path):
    dataset = FolderDataset(write_folder(tmp_path / "set"), MaskEncoding.from_config(ENCODING))
    with pytest.raises(ValueError) as info:
        evaluate_dataset(tiny_unet(num_classes=2), dataset)
    assert str(info.value) == (
        "the model's output must have one channel per class (3), got 2 channels; "
        "evaluate with the data encoding the model was trained on"
    )


def test_evaluate_refuses_an_empty_data_set():
    with pytest.raises(ValueError, match=r"^the data set must hold at least one sample, got none$"):
        evaluate_dataset(tiny_unet(), [])


def test_evaluation_splits_follow_the_config_without_augmentation(tmp_path):
    root = write_folder(tmp_path / "set")
    table = {
        "layout": "folders",
        "root": str(root),
        "encoding": ENCODING,
        "val_fraction": 0.25,
        "shuffle_split": False,
        "crop_size": 16,
        "hflip": True,
    }
    val, train, every = (evaluation_dataset(table, s) for s in ("val", "train", "all"))
    assert [val.sample_id(i) for i in range(len(val))] == ["d"]
    assert [train.sample_id(i) for i in range(len(train))] == ["a", "b", "c"]
    assert len(every) == 4
    assert train[0]["image"].shape == (3, HEIGHT, WIDTH)  # no crop
    with pytest.raises(ValueError) as info:
        evaluation_dataset(table, "test")
    assert str(info.value) == (
        "split must be one of ['val', 'train', 'all'], got 'test'; choose one of: all, train, val"
    )


def test_camvid_splits_are_its_folders(tmp_path):
    for split in ("train", "test"):
        write_folder(tmp_path, stems=(split,), images=split, masks=f"{split}annot")
    table = {"layout": "camvid", "root": str(tmp_path), "encoding": ENCODING}
    assert evaluation_dataset(table, "test").sample_id(0) == "test"
    assert evaluation_dataset(table, "train").sample_id(0) == "train"


# --- files ------------------------------------------------------------------------------------


def test_collect_images_from_files_and_folders(tmp_path):
    root = write_folder(tmp_path / "set")
    extra = tmp_path / "e.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(extra)
    found = collect_images([root / "images", extra, root / "images" / "a.png"])
    assert [p.name for p in found] == ["a.png", "b.png", "c.png", "d.png", "e.png"]


def test_collect_images_refuses_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        collect_images([tmp_path / "nope.png"])
    assert str(info.value) == (
        f"input {tmp_path / 'nope.png'} must be an image file or a folder of images, "
        "got a missing path"
    )


def test_collect_images_refuses_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        collect_images([tmp_path / "empty"])
    assert str(info.value).startswith(f"image folder {tmp_path / 'empty'} must contain images")
    assert str(info.value).endswith("got none")


def test_collect_images_refuses_repeated_stems(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / folder / "a.png")
    with pytest.raises(ValueError) as info:
        collect_images([tmp_path / "one", tmp_path / "two"])
    assert str(info.value) == (
        "input image stems must be unique (outputs are named after them), got "
        f"{tmp_path / 'one' / 'a.png'} and {tmp_path / 'two' / 'a.png'}; "
        "predict them into separate output folders"
    )


def test_plan_refuses_to_overwrite_an_input_even_with_overwrite(tmp_path):
    images = [tmp_path / "a.png", tmp_path / "a_mask.png"]
    with pytest.raises(ValueError) as info:
        plan_outputs(images, tmp_path, overwrite=True)
    assert str(info.value) == (
        f"output {tmp_path / 'a_mask.png'} must not overwrite an input image, got an input file "
        "of that name; choose an output folder other than the images' folder"
    )


def test_plan_refuses_existing_outputs_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_color.png").write_bytes(b"")
    with pytest.raises(FileExistsError) as info:
        plan_outputs([tmp_path / "a.png"], tmp_path / "out")
    assert str(info.value) == (
        f"output {tmp_path / 'out' / 'a_color.png'} must not exist already, got an existing "
        "file; pass --overwrite to replace it, --skip-existing to predict only the images "
        "without outputs, or choose another output folder"
    )
    plan = plan_outputs([tmp_path / "a.png"], tmp_path / "out", overwrite=True)
    assert plan == [(tmp_path / "a.png", prediction_paths(tmp_path / "a.png", tmp_path / "out"))]
    # Skipping: an image with only some outputs is predicted again; one with all is left out.
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    assert [i for i, _ in plan_outputs(images, tmp_path / "out", skip_existing=True)] == images
    for path in prediction_paths(tmp_path / "a.png", tmp_path / "out").values():
        path.write_bytes(b"")
    assert [i for i, _ in plan_outputs(images, tmp_path / "out", skip_existing=True)] == [
        tmp_path / "b.png"
    ]


def test_plan_refuses_an_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(FileExistsError) as info:
        plan_outputs([tmp_path / "a.png"], tmp_path / "out")
    assert str(info.value) == f"output folder {tmp_path / 'out'} must be a folder, got a file"


def test_read_image_file_checks_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(path)
    assert read_image_file(path, 1).shape == (1, 5, 6)
    with pytest.raises(ValueError) as info:
        read_image_file(path, 3)
    assert str(info.value) == (
        f"image {path} must have 3 channel(s), the model's in_channels, got 1; "
        "convert the image (e.g. to RGB or greyscale) to match the model"
    )


def test_predict_file_writes_the_segmenters_encoding_or_class_indices(tmp_path):
    path = tmp_path / "scene.png"
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    torch.manual_seed(0)
    network = create_model("unet", num_classes=2, in_channels=3, depth=2, base_width=4).eval()
    binary = MaskEncoding.values({0: 0, 255: 1})
    segmenter = Segmenter(network, encoding=binary)
    written = {}
    for fmt in ("data", "index"):
        paths = prediction_paths(path, tmp_path / fmt)
        mask = predict_file(segmenter, path, paths, mask_format=fmt).numpy()
        written[fmt] = np.asarray(Image.open(paths["mask"]))
    assert np.unique(mask).tolist() == [0, 1]
    np.testing.assert_array_equal(written["index"], mask)
    np.testing.assert_array_equal(written["data"], mask * 255)
    np.testing.assert_array_equal(binary.decode(written["data"]), mask)
    assert mask_encoding(segmenter) is binary and mask_encoding(segmenter, "index") is None
    assert mask_encoding(network) is None  # a bare network: class indices
    with pytest.raises(ValueError, match=r"mask format must be one of \['data', 'index'\]"):
        mask_encoding(segmenter, "raw")


def test_a_segmenter_builds_its_encoding_table_when_first_used(tmp_path):
    network = tiny_unet()  # 3 classes
    missing = tmp_path / "palette.png"
    segmenter = Segmenter(network, encoding={"kind": "palette", "palette": str(missing)})
    with pytest.raises(FileNotFoundError, match=f"palette image {missing} must be an existing"):
        segmenter.encoding  # noqa: B018 - the property reads the file
    segmenter.encoding = {"kind": "index", "num_classes": 3}
    assert segmenter.encoding == MaskEncoding.index(3)
    wrong = Segmenter(network, encoding={"kind": "values", "value_map": {"0": 0, "255": 1}})
    with pytest.raises(ValueError) as info:
        wrong.encoding  # noqa: B018
    assert str(info.value) == (
        "the mask encoding of the training data must have the network's 3 classes, got 2 in "
        '{ kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )


def test_read_image_file_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError) as info:
        read_image_file(path, 3)
    text = str(info.value)
    assert text.startswith(f"image {path} must be a readable, complete image file, got ")
    assert "\n" not in text


def test_predict_file_writes_mask_colour_and_overlay(tmp_path):
    path = tmp_path / "scene.png"
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    model, palette = tiny_unet("valid"), class_palette(3)
    paths = prediction_paths(path, tmp_path / "out")
    mask = predict_file(model, path, paths, palette, alpha=1.0)
    assert torch.equal(mask, predict_mask(model, torch.from_numpy(pixels).permute(2, 0, 1) / 255))
    written = {kind: np.asarray(Image.open(p)) for kind, p in paths.items()}
    assert written["mask"].dtype == np.uint8 and written["mask"].shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(written["mask"], mask.numpy())
    np.testing.assert_array_equal(written["color"], palette[mask.numpy()])
    np.testing.assert_array_equal(written["overlay"], palette[mask.numpy()])  # alpha 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scene_color.png",
        "scene_mask.png",
        "scene_overlay.png",
    ]
