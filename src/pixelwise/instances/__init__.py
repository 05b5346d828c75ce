"""Instances: from class probabilities to one label per object, touching objects apart."""

from pixelwise.instances.postprocess import (
    GRID,
    METHODS,
    InstanceParameters,
    choose_parameters,
    components,
    instances_from_probabilities,
    watershed_objects,
)

__all__ = [
    "GRID",
    "METHODS",
    "InstanceParameters",
    "choose_parameters",
    "components",
    "instances_from_probabilities",
    "watershed_objects",
]
