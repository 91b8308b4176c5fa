"""Training: options, the loop and its callbacks, state and resume, distributed helpers, run folders."""

from rdkit_ae.training.trainer import TrainingInterrupted, TrainResult, train

__all__ = ["TrainResult", "TrainingInterrupted", "train"]
