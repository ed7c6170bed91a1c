"""Training and fine-tuning SAM with the paper's simulated interactive prompts."""

from sam_core.training.samples import TrainingImage, prepare_training_image
from sam_core.training.trainer import Trainer, TrainSettings, save_weights

__all__ = ["TrainSettings", "Trainer", "TrainingImage", "prepare_training_image", "save_weights"]
