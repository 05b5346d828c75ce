"""pixelwise: semantic segmentation from the first patch classifier to DeepLab.

The public API is re-exported here; see the README for a tour.
"""

from pixelwise.models import create_model, list_models

__all__ = ["create_model", "list_models"]
__version__ = "0.1.0"
