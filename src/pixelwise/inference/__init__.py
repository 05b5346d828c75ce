"""Inference: predict logits and masks for whole images, write prediction files, evaluate a
data set with the confusion-matrix metrics and boundary F1."""

from pixelwise.inference.predict import (
    OUTPUT_KINDS,
    collect_images,
    covering_input_size,
    evaluate_dataset,
    evaluation_dataset,
    output_margin,
    plan_outputs,
    predict_file,
    predict_logits,
    predict_mask,
    prediction_paths,
    read_image_file,
    save_prediction,
    whole_image_logits,
)

__all__ = [
    "OUTPUT_KINDS",
    "collect_images",
    "covering_input_size",
    "evaluate_dataset",
    "evaluation_dataset",
    "output_margin",
    "plan_outputs",
    "predict_file",
    "predict_logits",
    "predict_mask",
    "prediction_paths",
    "read_image_file",
    "save_prediction",
    "whole_image_logits",
]
