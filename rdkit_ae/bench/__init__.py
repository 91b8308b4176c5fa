"""``rdkit bench``: sweep specs, cached jobs, and reports (results, curves, rd.png, BD-rate)."""

from rdkit_ae.bench.sweep import SpecError, SweepResult, load_spec, run_sweep

__all__ = ["SpecError", "SweepResult", "load_spec", "run_sweep"]
