"""Training: options, the loop and its callbacks, state and resume, distributed helpers, run folders."""

from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.results import TrainingInterrupted, TrainResult
from rdkit_ae.training.run import train

__all__ = ["Callback", "TrainContext", "TrainOptions", "TrainResult", "TrainingInterrupted", "train"]
