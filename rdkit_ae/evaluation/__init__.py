"""Evaluation with real bitstreams: the evaluator, metrics, classical codecs, BD-rate and RD plots."""

from rdkit_ae.evaluation.evaluator import EvalResult, evaluate, evaluate_checkpoint, results_curve

__all__ = ["EvalResult", "evaluate", "evaluate_checkpoint", "results_curve"]
