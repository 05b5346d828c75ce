"""The registry: names, did-you-mean, option checking, builder rules."""

from __future__ import annotations

import pytest
from torch import nn

from pixelwise.models import create_model, list_models, model_options, register_model


def test_lists_the_classic_line():
    names = list_models()
    for expected in ("patch_classifier", "fcn32s", "fcn16s", "fcn8s", "segnet", "segnet_basic"):
        assert expected in names
    for expected in ("unet", "deeplabv3", "deeplabv3_small"):
        assert expected in names
    assert names == sorted(names)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        ValueError,
        match=r"model name must be a registered model, got 'unte'; did you mean 'unet'\?",
    ):
        create_model("unte", num_classes=2)


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ValueError, match=r"got 'paddng'; did you mean 'padding'\?"):
        create_model("unet", num_classes=2, paddng="valid")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_num_classes_is_checked(bad):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        create_model("unet", num_classes=bad)


def test_options_are_listed_with_defaults():
    options = model_options("unet")
    assert "num_classes" not in options and "in_channels" not in options
    assert options["padding"] == "same"


def test_builders_must_be_keyword_only_and_not_swallow_kwargs():
    with pytest.raises(TypeError, match="keyword-only 'num_classes'"):

        @register_model("bad_positional", summary="", paper="")
        def build(num_classes: int, *, in_channels: int = 3) -> nn.Module:
            return nn.Identity()

    with pytest.raises(TypeError, match="must not swallow"):

        @register_model("bad_kwargs", summary="", paper="")
        def build2(*, num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
            return nn.Identity()

    assert "bad_positional" not in list_models() and "bad_kwargs" not in list_models()
