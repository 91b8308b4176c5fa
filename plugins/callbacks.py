"""Built-in training callbacks, registered so ``rdkit plugins --kind callback`` lists them.

The trainer always runs these itself (a recipe cannot name them); a recipe's
``[train] callbacks`` name third-party ones, registered with
``rdkit_ae.register_callback("name")``.
"""

from __future__ import annotations

from rdkit_ae.registry import register
from rdkit_ae.training.checkpoints import Checkpointer
from rdkit_ae.training.datainit import DataInit
from rdkit_ae.training.figures import Figures
from rdkit_ae.training.fit_schedule import FitSchedule
from rdkit_ae.training.runlog import MetricsLogger
from rdkit_ae.training.stops import NonFiniteStop, StepLimit, TimeBudget

register("callback", "checkpoint")(Checkpointer)
register("callback", "data-init")(DataInit)
register("callback", "metrics-log")(MetricsLogger)
register("callback", "figures")(Figures)
register("callback", "nonfinite-stop")(NonFiniteStop)
register("callback", "max-steps")(StepLimit)
register("callback", "time-budget")(TimeBudget)
register("callback", "fit-schedule")(FitSchedule)
