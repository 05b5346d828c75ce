"""Neural style transfer (Gatys et al. 2016): losses, feature networks, the optimisation loop."""

from pixelwise.style.features import (
    IMAGENET_NORMALISATION,
    VGG19_CONTENT_LAYER,
    VGG19_LAYERS,
    VGG19_STYLE_LAYERS,
    FeatureNetwork,
    ModelFeatures,
    VGG19Features,
)
from pixelwise.style.losses import (
    CONVENTIONS,
    content_loss,
    content_weight_factor,
    gram_matrix,
    style_loss,
    style_target,
    style_weight_factor,
)
from pixelwise.style.transfer import (
    StyleLayers,
    StyleObjective,
    StyleProgress,
    StyleResult,
    resolve_layers,
    stylize,
)

__all__ = [
    "CONVENTIONS",
    "IMAGENET_NORMALISATION",
    "VGG19_CONTENT_LAYER",
    "VGG19_LAYERS",
    "VGG19_STYLE_LAYERS",
    "FeatureNetwork",
    "ModelFeatures",
    "StyleLayers",
    "StyleObjective",
    "StyleProgress",
    "StyleResult",
    "VGG19Features",
    "content_loss",
    "content_weight_factor",
    "gram_matrix",
    "resolve_layers",
    "style_loss",
    "style_target",
    "style_weight_factor",
    "stylize",
]
