"""Evaluation with real bitstreams: the evaluator, metrics, classical codecs, BD-rate and RD plots."""

from rdkit_ae.evaluation.evaluator import evaluate, evaluate_checkpoint, evaluate_operating_points
from rdkit_ae.evaluation.results import EvalResult, results_curve

__all__ = ["EvalResult", "evaluate", "evaluate_checkpoint", "evaluate_operating_points", "results_curve"]
