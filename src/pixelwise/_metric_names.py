"""The scalar scores of a confusion matrix summary, in one tuple, in a module that imports
nothing (the config and the command line read it without loading torch)."""

SUMMARY_KEYS = (
    "pixel_accuracy",
    "mean_accuracy",
    "mean_iou",
    "frequency_weighted_iou",
    "mean_dice",
)
