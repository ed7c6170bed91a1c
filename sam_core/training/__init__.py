"""Training and fine-tuning SAM with the paper's simulated interactive prompts."""

from sam_core.training.samples import TrainingImage, prepare_training_image
from sam_core.training.trainer import NotEnoughImagesError, Trainer, TrainSettings, save_weights
from sam_core.training.weight_averaging import average_checkpoints

__all__ = [
    "NotEnoughImagesError",
    "TrainSettings",
    "Trainer",
    "TrainingImage",
    "average_checkpoints",
    "prepare_training_image",
    "save_weights",
]
