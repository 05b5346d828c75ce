"""Inference: the Segmenter (a trained network with its normalisation, classes and palette),
whole-image and tiled prediction (overlap-tile for valid U-Net, blended tiles
otherwise, optional test-time augmentation), prediction files, evaluation of a data set with
the confusion-matrix metrics and boundary F1, and export to ONNX / TorchScript."""

from pixelwise.data.build import evaluation_dataset
from pixelwise.inference._model import output_margin
from pixelwise.inference.evaluate import evaluate, evaluate_dataset
from pixelwise.inference.predict import (
    INSTANCE_KINDS,
    MASK_FORMATS,
    OUTPUT_KINDS,
    collect_images,
    covering_input_size,
    instance_plan,
    instance_settings,
    mask_encoding,
    parse_shard,
    plan_outputs,
    predict_file,
    predict_logits,
    predict_mask,
    prediction_paths,
    read_image_file,
    save_prediction,
    shard_images,
    shard_of,
    whole_image_logits,
)
from pixelwise.inference.segmenter import Segmenter, as_segmenter
from pixelwise.inference.tiling import plan_tiles, predict
from pixelwise.inference.tta import augmented_logits

__all__ = [
    "INSTANCE_KINDS",
    "MASK_FORMATS",
    "OUTPUT_KINDS",
    "Segmenter",
    "as_segmenter",
    "augmented_logits",
    "collect_images",
    "covering_input_size",
    "evaluate",
    "evaluate_dataset",
    "evaluation_dataset",
    "instance_plan",
    "instance_settings",
    "mask_encoding",
    "output_margin",
    "parse_shard",
    "plan_outputs",
    "plan_tiles",
    "predict",
    "predict_file",
    "predict_logits",
    "predict_mask",
    "prediction_paths",
    "read_image_file",
    "save_prediction",
    "shard_images",
    "shard_of",
    "whole_image_logits",
]
