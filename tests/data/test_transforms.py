"""Joint augmentation: the mask is moved, never interpolated, and everything moves together."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from pixelwise.data.transforms import (
    ColourJitter,
    ElasticDeformation,
    JointTransform,
    RandomCrop,
    RandomRot90,
    RandomScale,
    build_transforms,
    elastic_field,
)

H, W = 45, 67


def _sample(seed: int = 0) -> dict:
    """Instances in blocks; mask = instances % 3; weight = the image's first channel."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((3, H, W), generator=g)
    blocks = torch.randint(0, 40, (5, 7), generator=g)
    instances = blocks.repeat_interleave(9, 0)[:H].repeat_interleave(10, 1)[:, :W]
    return {
        "image": image,
        "mask": instances % 3,
        "instances": instances,
        "weight": image[0].clone(),
        "path": "x.png",
    }


def _full(seed: int) -> JointTransform:
    return build_transforms(
        crop_size=(40, 50),
        scale=(0.7, 1.3),
        hflip=True,
        vflip=True,
        rot90=True,
        elastic_std=10.0,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_moves_mask_instances_and_weights_with_the_image(seed):
    out = _full(seed)(_sample())
    assert out["image"].shape == (3, 40, 50) and out["mask"].shape == (40, 50)
    assert out["mask"].dtype == torch.int64 and out["path"] == "x.png"
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2, 255}
    assert set(out["instances"].unique().tolist()) <= set(_sample()["instances"].unique().tolist())
    labelled = out["mask"] != 255
    torch.testing.assert_close(out["mask"][labelled], out["instances"][labelled] % 3)
    assert (out["instances"][~labelled] == 0).all()  # padding: background instances
    torch.testing.assert_close(out["weight"], out["image"][0])  # same geometry, same resampling
    assert all(type(out[k]) is torch.Tensor for k in ("image", "mask", "instances", "weight"))


def test_crop_larger_than_the_image_pads_the_mask_with_ignore_index():
    sample = _sample()
    out = JointTransform([RandomCrop((50, 70), ignore_index=255)])(sample)
    assert out["image"].shape == (3, 50, 70)
    padded = out["mask"] == 255
    assert int(padded.sum()) == 50 * 70 - H * W
    rows, cols = torch.nonzero(~padded, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    torch.testing.assert_close(out["image"][:, top : top + H, left : left + W], sample["image"])
    torch.testing.assert_close(out["mask"][top : top + H, left : left + W], sample["mask"])
    assert (out["image"][:, padded] == 0).all() and (out["weight"][padded] == 0).all()


def test_crop_smaller_than_the_image_is_a_window_of_it():
    sample = _sample()
    out = JointTransform([RandomCrop(21, generator=torch.Generator().manual_seed(4))])(sample)
    windows = [
        (t, l)
        for t in range(H - 20)
        for l in range(W - 20)
        if torch.equal(sample["image"][:, t : t + 21, l : l + 21], out["image"])
    ]
    assert len(windows) == 1
    t, l = windows[0]
    assert torch.equal(sample["mask"][t : t + 21, l : l + 21], out["mask"])


def test_zero_std_elastic_deformation_is_the_identity():
    sample = _sample()
    out = JointTransform([ElasticDeformation(std=0.0)])(sample)
    torch.testing.assert_close(out["image"], sample["image"], atol=1e-5, rtol=0)
    assert torch.equal(out["mask"], sample["mask"])
    assert torch.equal(out["instances"], sample["instances"])


def test_field_at_the_control_points_equals_the_displacements():
    displacements = torch.randn((2, 3, 3), generator=torch.Generator().manual_seed(0)) * 10
    field = elastic_field(displacements, (H, W))
    assert field.shape == (2, H, W)
    at_points = field[:, [0, (H - 1) // 2, H - 1]][:, :, [0, (W - 1) // 2, W - 1]]
    torch.testing.assert_close(at_points, displacements, atol=1e-5, rtol=0)
    between = field[:, 1:22, 1:33]
    assert between.abs().max() > 0 and not torch.allclose(between, between[:, :1, :1])


def test_each_pixel_samples_the_input_at_its_displaced_position():
    # Oracle: a linear ramp is reproduced exactly by bilinear sampling, so the output at p is
    # the ramp at p + d(p) wherever that point lies inside the image.
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    ramp = (0.01 * xs + 0.003 * ys)[None]  # (1, H, W)
    deform = ElasticDeformation(std=4.0, generator=torch.Generator().manual_seed(2))
    image = tv_tensors.Image(ramp)
    params = deform.make_params([image])
    out = deform.transform(image, params)[0]
    field = elastic_field(params["displacements"], (H, W))
    sy, sx = ys + field[0], xs + field[1]
    inside = (sy >= 0) & (sy <= H - 1) & (sx >= 0) & (sx <= W - 1)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[inside], (0.01 * sx + 0.003 * sy)[inside], atol=1e-5, rtol=0)
    assert params["displacements"].std() > 1.0


def test_same_generator_seed_same_augmentation_other_seed_other():
    sample = _sample()
    first, again, other = _full(3)(sample), _full(3)(sample), _full(4)(sample)
    for key in ("image", "mask", "weight"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["image"], other["image"])


def test_global_seed_makes_the_default_generator_reproducible():
    transform = build_transforms(crop_size=30, hflip=True, rot90=True, elastic_std=10.0)
    torch.manual_seed(11)
    first = transform(_sample())
    torch.manual_seed(11)
    assert torch.equal(first["image"], transform(_sample())["image"])


def test_rot90_is_exact_and_draws_every_quarter_turn():
    image = _sample()["image"]
    rotate = JointTransform([RandomRot90(torch.Generator().manual_seed(0))])
    turns = set()
    for _ in range(20):
        out = rotate({"image": image})["image"]
        k = next(k for k in range(4) if torch.equal(out, torch.rot90(image, k, dims=(-2, -1))))
        turns.add(k)
    assert turns == {0, 1, 2, 3}


def test_scale_resizes_by_a_factor_in_range_with_nearest_masks():
    sample = _sample()
    scale = JointTransform([RandomScale((0.5, 0.8), torch.Generator().manual_seed(1))])
    out = scale(sample)
    height, width = out["mask"].shape
    # One factor f in [0.5, 0.8] gives both sides: the intervals of f that round to them meet.
    low = max((height - 0.5) / H, (width - 0.5) / W, 0.5)
    high = min((height + 0.5) / H, (width + 0.5) / W, 0.8)
    assert low <= high and out["image"].shape == (3, height, width)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2}


class _Same(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return self.transform(_sample())


def _epoch(seed: int) -> list[torch.Tensor]:
    transform = build_transforms(crop_size=24, generator=torch.Generator().manual_seed(5))
    loader = DataLoader(
        _Same(transform), batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed)
    )
    return [batch["image"][0] for batch in loader]


def test_dataloader_workers_do_not_repeat_each_other_and_are_reproducible():
    first = _epoch(0)
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1 draw differently
    again = _epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_cropped_samples_collate_into_a_batch(make_folder):
    from pixelwise.data import FolderDataset, MaskEncoding

    dataset = FolderDataset(
        make_folder(),
        MaskEncoding.index(3),
        transform=build_transforms(crop_size=(32, 40), hflip=True),
    )
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 40) and batch["mask"].shape == (3, 32, 40)
    assert batch["mask"].dtype == torch.int64 and len(batch["path"]) == 3


def test_elastic_deformation_never_invents_mask_values():
    # Values far apart: any interpolation between 0, 7 and 255 would create new ones.
    sample = _sample()
    sample["mask"] = torch.tensor([0, 7, 255])[sample["instances"] % 3]
    for seed in range(3):
        deform = ElasticDeformation(std=10.0, generator=torch.Generator().manual_seed(seed))
        out = JointTransform([deform])(sample)
        assert set(out["mask"].unique().tolist()) <= {0, 7, 255}
        assert not torch.equal(out["mask"], sample["mask"])


def _params(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, invert=False) -> dict:
    return {
        "brightness": brightness,
        "contrast": contrast,
        "saturation": saturation,
        "hue": hue,
        "invert": invert,
    }


def _grey(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, torchvision's grey image."""
    return 0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def test_colour_steps_follow_their_formulas():
    image = tv_tensors.Image(torch.rand((3, 9, 11), generator=torch.Generator().manual_seed(0)))
    jitter = ColourJitter(0.5)
    plain = image.as_subclass(torch.Tensor)
    out = jitter.transform(image, _params(brightness=1.3))
    torch.testing.assert_close(out.as_subclass(torch.Tensor), (1.3 * plain).clamp(0, 1))
    out = jitter.transform(image, _params(contrast=0.6))
    expected = (0.6 * plain + 0.4 * _grey(plain).mean()).clamp(0, 1)
    torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, atol=1e-4, rtol=0)
    out = jitter.transform(image, _params(saturation=0.0))  # grey, in each channel
    torch.testing.assert_close(
        out.as_subclass(torch.Tensor), _grey(plain).expand(3, -1, -1), atol=1e-4, rtol=0
    )
    out = jitter.transform(image, _params(invert=True))
    torch.testing.assert_close(out.as_subclass(torch.Tensor), 1 - plain)
    torch.testing.assert_close(jitter.transform(image, _params()), image)


def test_hue_turns_red_to_green_by_a_third_of_the_wheel():
    red = tv_tensors.Image(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2).clone())
    out = ColourJitter(0.5).transform(red, _params(hue=1 / 3))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)


def test_colour_jitter_draws_factors_in_range_and_inverts_at_its_rate():
    jitter = ColourJitter(0.4, invert=0.25, generator=torch.Generator().manual_seed(1))
    drawn = [jitter.make_params([]) for _ in range(2000)]
    for key in ("brightness", "contrast", "saturation"):
        values = torch.tensor([d[key] for d in drawn])
        assert 0.6 <= values.min() < 0.62 and 1.38 < values.max() <= 1.4, key
    hues = torch.tensor([d["hue"] for d in drawn])
    assert -0.1 <= hues.min() < -0.09 and 0.09 < hues.max() <= 0.1
    assert 0.22 < sum(d["invert"] for d in drawn) / len(drawn) < 0.28


def test_colour_jitter_changes_the_image_only_and_keeps_it_in_range():
    sample = _sample(3)
    sample["image"] = sample["image"] * 0.9 + 0.05
    out = build_transforms(
        colour_jitter=1.0, invert=0.5, generator=torch.Generator().manual_seed(0)
    )(sample)
    for key in ("mask", "instances", "weight"):
        assert torch.equal(out[key], sample[key]), key
    assert not torch.equal(out["image"], sample["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_colour_jitter_on_other_channel_counts(channels):
    """Brightness and contrast for any channel count (saturation and hue need RGB)."""
    image = torch.zeros((channels, 4, 4))
    image[:, :2] = 0.2
    image[:, 2:] = 0.4
    out = ColourJitter(0.5).transform(
        tv_tensors.Image(image), _params(brightness=2.0, contrast=0.5)
    )
    expected = torch.where(image == 0.2, 0.5, 0.7)  # 2 × (0.2, 0.4), then halfway to the mean 0.6
    torch.testing.assert_close(out.as_subclass(torch.Tensor), expected)


def test_no_colour_step_unless_asked():
    assert not any(isinstance(t, ColourJitter) for t in build_transforms(hflip=True).transforms)
    (step,) = build_transforms(invert=1.0).transforms
    assert isinstance(step, ColourJitter) and step.strength == 0.0


@pytest.mark.parametrize(("strength", "invert"), [(-0.1, 0.0), (1.5, 0.0), (0.2, 2.0)])
def test_colour_jitter_refuses_out_of_range(strength, invert):
    with pytest.raises(ValueError, match="be in \\[0, 1\\]"):
        ColourJitter(strength, invert)


def test_colour_jitter_keeps_the_range_of_float_images_outside_unit():
    """A float TIFF in [-1, 3]: inverted within its own range, brightened without clipping
    at 1."""
    image = torch.tensor([[-1.0, 0.0], [1.0, 3.0]])[None]
    jitter = ColourJitter(0.5)
    inverted = jitter.transform(tv_tensors.Image(image), _params(invert=True))
    torch.testing.assert_close(inverted.as_subclass(torch.Tensor), 2.0 - image)  # -1 + 3 - x
    brighter = jitter.transform(tv_tensors.Image(image), _params(brightness=1.25))
    # mapped to [0, 1] by (x + 1) / 4, times 1.25 (clipped at 1), mapped back
    expected = ((image + 1) / 4 * 1.25).clamp(0, 1) * 4 - 1
    torch.testing.assert_close(brighter.as_subclass(torch.Tensor), expected)
    assert float(brighter.max()) == 3.0 and float(brighter.min()) == -1.0


def test_colour_jitter_refuses_integer_images():
    image = tv_tensors.Image(torch.full((3, 4, 4), 200, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^colour augmentation must get float images"):
        ColourJitter(0.5).transform(image, _params())


def test_colour_jitter_comes_before_the_crop():
    steps = build_transforms(crop_size=8, hflip=True, colour_jitter=0.2).transforms
    assert [type(t).__name__ for t in steps] == ["RandomFlip", "ColourJitter", "RandomCrop"]
