"""The distance head: its target, its network, its loss, and objects from its map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.datasets import distance_target
from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.models import create_model
from pixelwise.nn.distance import DistanceHead, distance_outputs, has_distance_head

from .test_training import blob_folder, train_run


def two_touching_boxes() -> np.ndarray:
    """Two 7 × 6 objects side by side, touching along a column, in a background frame."""
    labels = np.zeros((9, 14), np.int32)
    labels[1:8, 1:7] = 1
    labels[1:8, 7:13] = 2
    return labels


def test_the_distance_target_is_each_pixels_edge_distance_over_its_objects_largest():
    target = distance_target(two_touching_boxes())
    # Each box: distance 1 on its outer ring (the neighbour counts as outside), 2 on the next,
    # 3 in the middle; divided by its largest, 3.
    one_box = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 2, 2, 2, 2, 1],
            [1, 2, 3, 3, 2, 1],
            [1, 2, 3, 3, 2, 1],
            [1, 2, 3, 3, 2, 1],
            [1, 2, 2, 2, 2, 1],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    np.testing.assert_allclose(target[1:8, 1:7], one_box / 3, rtol=1e-6)
    np.testing.assert_allclose(target[1:8, 7:13], one_box / 3, rtol=1e-6)
    assert (target[0] == 0).all() and (target[:, 0] == 0).all() and target.dtype == np.float32
    # An object of one pixel peaks at 1 too; an empty image is all background.
    single = np.zeros((5, 5), np.int32)
    single[2, 2] = 4
    assert distance_target(single)[2, 2] == 1 and distance_target(single).sum() == 1
    assert not distance_target(np.zeros((4, 4), np.int32)).any()


def test_a_distance_head_shows_k_classes_and_gives_the_distance_channel_on_request():
    model = create_model("unet", num_classes=3, in_channels=1, distance_head=True, depth=2)
    assert isinstance(model, DistanceHead) and has_distance_head(model)
    assert model.pixelwise_args["distance_head"] is True
    assert model.pixelwise_args["num_classes"] == 3
    assert model.size_divisor == 4  # the wrapped network's attributes pass through
    x = torch.rand(2, 1, 16, 16)
    model.eval()
    classes = model(x)
    with distance_outputs(model) as present:
        both = model(x)
    assert present and classes.shape == (2, 3, 16, 16) and both.shape == (2, 4, 16, 16)
    torch.testing.assert_close(both[:, :3], classes)
    assert model(x).shape[1] == 3  # restored after the block
    with pytest.raises(RuntimeError), distance_outputs(model):
        raise RuntimeError("stop")
    assert not model.with_distance  # restored after an exception too
    plain = create_model("unet", num_classes=3, in_channels=1, depth=2)
    assert "distance_head" not in plain.pixelwise_args and not has_distance_head(plain)
    with distance_outputs(plain) as present:
        assert not present and plain(x).shape[1] == 3


def test_flips_and_rotations_move_the_distance_target_with_the_labels():
    from pixelwise.data.transforms import JointTransform, RandomFlip, RandomRot90

    labels = two_touching_boxes()
    labels[3:5, 8:12] = 0  # no symmetry to hide a wrong move
    sample = {
        "image": torch.rand(1, *labels.shape),
        "mask": torch.from_numpy((labels > 0).astype(np.int64)),
        "instances": torch.from_numpy(labels.astype(np.int64)),
        "distance": torch.from_numpy(distance_target(labels)),
    }
    generator = torch.Generator().manual_seed(3)
    transform = JointTransform([RandomRot90(generator), RandomFlip(0.5, 0.5, generator)])
    for _ in range(6):
        out = transform(sample)
        expected = distance_target(out["instances"].numpy())
        np.testing.assert_allclose(out["distance"].numpy(), expected, rtol=1e-6)


def test_the_distance_target_needs_instance_labels():
    from pixelwise.config import DataConfig

    with pytest.raises(ValueError, match=r"data\.distance_target must go with layout 'instances'"):
        DataConfig(layout="synthetic", distance_target=True)


def test_the_distance_loss_falls_as_the_head_trains():
    from pixelwise.engine.task import SegmentationTask
    from pixelwise.losses.build import build_loss

    torch.manual_seed(0)
    labels = two_touching_boxes()
    model = create_model("unet", num_classes=2, in_channels=1, distance_head=True, depth=2)
    task = SegmentationTask(
        model,
        build_loss("ce"),
        {"mean": [0.5], "std": [0.25]},
        class_names=("background", "object"),
        ignore_index=255,
        device=torch.device("cpu"),
    )
    mask = torch.from_numpy((labels > 0).astype(np.int64))
    mask[0, :] = 255  # padding: the distance loss leaves it out as the class loss does
    batch = {
        "image": torch.from_numpy((labels > 0).astype(np.float32))[None, None],
        "mask": mask[None],
        "distance": torch.from_numpy(distance_target(labels))[None],
    }
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def distance_term() -> float:
        with torch.no_grad():
            out = task(batch)
            _, target, _ = task.prepare(batch)
            return float(out["loss"] - task.loss(out["logits"], target, None))

    first = distance_term()
    for _ in range(30):
        optimiser.zero_grad()
        out = task(batch)
        assert out["logits"].shape[1] == 2  # the class logits, without the distance channel
        out["loss"].backward()
        optimiser.step()
    assert distance_term() < 0.8 * first


def test_watershed_on_the_distance_map_parts_touching_objects_components_join():
    from pixelwise.inference.predict import objects_of
    from pixelwise.instances import InstanceParameters

    labels = two_touching_boxes()
    foreground = labels > 0
    logits = torch.from_numpy(np.stack([~foreground, foreground]).astype(np.float32) * 8)
    distance = torch.from_numpy(distance_target(labels))
    watershed = {
        **InstanceParameters(seed_threshold=0.7, min_size=0).to_dict(),
        "interior_class": 2,  # the map after the two classes
    }
    objects = objects_of(logits, watershed, distance)
    assert objects.max() == 2
    np.testing.assert_array_equal(objects, labels)
    joined = objects_of(logits, {**watershed, "method": "components"}, distance)
    assert joined.max() == 1
    with pytest.raises(ValueError, match=r"interior_class must be an index below .* 2 maps"):
        objects_of(logits, watershed)  # the recorded map is missing: one line


def test_a_distance_run_seeds_from_its_map_and_predicts_it_back(tmp_path, capsys):
    from pixelwise.cli.checkpoint import _instances_text
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference import instance_settings, read_image_file
    from pixelwise.inference.optimize import optimize_for_inference
    from pixelwise.inference.predict import objects_of, predict_outputs

    data = blob_folder(tmp_path / "data", count=4)
    keys = (
        'instance_target = "three_class"\nboundary_width = 1\nval_fraction = 0.25\n'
        "distance_target = true"
    )
    run = train_run(tmp_path, data, epochs=2, data_keys=keys)
    checkpoint = load_checkpoint(run / "best.pt")
    assert checkpoint.model_args["distance_head"] is True
    # The search seeds from the map after the three classes (3) or from the interior class.
    assert checkpoint.instances["interior_class"] in (3, 1)
    watershed = {**checkpoint.instances, "method": "watershed", "seeds": "regions"}
    watershed["interior_class"] = 3
    text = _instances_text(watershed, checkpoint.class_names)
    assert "seeds: predicted distance map" in text
    # predict --instances writes what the library computes from the same passes.
    out = tmp_path / "out"
    argv = ["predict", str(run / "best.pt"), str(data / "images" / "0.png"), "--out", str(out)]
    assert main([*argv, "--instances"]) == 0
    written = np.asarray(Image.open(out / "0_instances.png")).astype(np.int64)
    segmenter = load_model(run / "best.pt")
    segmenter = segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))
    image = read_image_file(data / "images" / "0.png", 1)
    settings = instance_settings(segmenter)
    tta = settings.get("tta") or False
    logits, distance = predict_outputs(segmenter, image, tile=512, tta=tta)
    assert logits.shape == (3, 48, 48) and distance.shape == (48, 48)
    assert float(distance.min()) >= 0 and float(distance.max()) <= 1
    np.testing.assert_array_equal(written, objects_of(logits, settings, distance))
    # The class mask is the argmax of the K class logits alone.
    mask = np.asarray(Image.open(out / "0_mask.png"))
    assert mask.max() <= 2
    capsys.readouterr()
    argv = ["evaluate", str(run / "best.pt"), str(data), "--split", "all", "--instances"]
    assert main([*argv, "--json"]) == 0


@pytest.mark.parametrize("better", [3, 1])
def test_the_search_records_the_better_seed_map_of_a_distance_network(
    tmp_path, monkeypatch, better
):
    from pixelwise.engine import instances as chooser
    from pixelwise.instances import InstanceParameters

    assert chooser.seed_maps(("background", "interior", "boundary"), True) == (3, 1)
    assert chooser.seed_maps(("background", "interior", "boundary")) == (1,)
    assert chooser.seed_maps(("background", "object"), True) == (2, None)
    data = blob_folder(tmp_path / "data", count=4)
    keys = 'instance_target = "three_class"\nval_fraction = 0.25\ndistance_target = true'
    run = train_run(tmp_path, data, epochs=1, data_keys=keys)
    searched = []

    def probabilities(segmenter, dataset, tta=()):
        return ["maps"], [None], 3

    def choose(probabilities, targets, interior_class=None, grid=None):
        searched.append((interior_class, tuple(grid["method"])))
        return InstanceParameters(seed_threshold=0.9), 0.6 if interior_class == better else 0.4

    monkeypatch.setattr(chooser, "validation_probabilities", probabilities)
    monkeypatch.setattr(chooser, "choose_parameters", choose)
    fields = chooser.choose_instances(run / "best.pt", dataset=None)
    # No flips or rotations trained: one pass, both maps; the components searched once.
    assert searched == [(3, ("components", "watershed")), (1, ("watershed",))]
    assert fields["interior_class"] == better and fields["score"] == 0.6
    assert fields["seed_threshold"] == 0.9 and fields["tta"] is False
