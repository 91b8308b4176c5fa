"""``rdkit bench``: sweep specs (spec), cached jobs (jobs, cache), the runner, and reports."""

from rdkit_ae.bench.runner import SweepResult, run_sweep
from rdkit_ae.bench.spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepResult", "SweepSpec", "load_spec", "run_sweep"]
