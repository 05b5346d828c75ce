"""The classic line of segmentation networks, each registered by name behind one contract."""

from pixelwise.models.registry import (
    check_model,
    create_model,
    get_entry,
    list_models,
    model_options,
    register_model,
)

# Imported after the registry, for their @register_model decorators: the registry stays a leaf
# and every model is registered once anything of this package is imported.
from pixelwise.models import deeplab, fcn, patch, segnet, unet  # noqa: F401  isort: skip

__all__ = [
    "check_model",
    "create_model",
    "get_entry",
    "list_models",
    "model_options",
    "register_model",
]
