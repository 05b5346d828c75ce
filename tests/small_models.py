"""CPU-sized options for every registered model, shared by the tests that run over all models.

The architectures are the same, only narrower. A newly registered model must be added here;
tests/models/test_contract.py fails until it is.
"""

SMALL: dict[str, dict] = {
    "patch_classifier": {"patch_size": 13, "width": 4},
    "fcn32s": {"width": 0.0625},
    "fcn16s": {"width": 0.0625},
    "fcn8s": {"width": 0.0625},
    "segnet": {"width": 0.125},
    "segnet_basic": {"width": 8},
    "unet": {"base_width": 4, "depth": 3},
    "deeplabv3": {"backbone": "resnet18", "aspp_channels": 16},
    "deeplabv3_small": {"aspp_channels": 16},
}

# The encoder variants (pixelwise.models.encoders) run through the same contract tests:
# label -> (registered model, options).
ENCODED: dict[str, tuple[str, dict]] = {
    "unet+efficientnet_lite0": ("unet", {"encoder": "efficientnet_lite0", "base_width": 4}),
    "fcn8s+efficientnet_lite0": ("fcn8s", {"encoder": "efficientnet_lite0"}),
    "deeplabv3_small+efficientnet_lite0": (
        "deeplabv3_small",
        {"encoder": "efficientnet_lite0", "aspp_channels": 16},
    ),
    "unet+resnet18": ("unet", {"encoder": "resnet18", "base_width": 4}),
}
