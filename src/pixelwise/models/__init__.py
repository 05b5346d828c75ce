"""The classic line of segmentation networks, each registered by name behind one contract."""

from pixelwise.models.registry import (
    create_model,
    get_entry,
    list_models,
    model_options,
    register_model,
)

__all__ = ["create_model", "get_entry", "list_models", "model_options", "register_model"]
