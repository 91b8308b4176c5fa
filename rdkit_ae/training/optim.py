"""Optimisation pieces: the main/aux parameter split, optimisers, the learning-rate schedule and one step."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from rdkit_ae.errors import RecipeError
from rdkit_ae.model import Objective, build_model, build_objective
from rdkit_ae.recipe import Recipe
from rdkit_ae.training import distributed as dist

SCHEDULE_INTERVALS = ("epoch", "step")


def aux_loss(model: nn.Module) -> Tensor | None:
    """The model's auxiliary loss (an RDModel asks its quantizer first), or None when it has none."""
    fn = getattr(model, "aux_loss", None)
    if callable(fn):
        value = fn()
    else:  # a bare CompressAI-style module: the EntropyBottlenecks' quantile losses
        losses = [m.loss() for m in model.modules() if isinstance(m, EntropyBottleneck)]
        value = sum(losses) if losses else None
    return value if isinstance(value, Tensor) and value.requires_grad else None


def split_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(main, aux) named parameters: aux = what the aux loss trains, the rest is the main optimiser's.

    As CompressAI's examples/train.py, the EntropyBottleneck quantiles are
    aux; so is every parameter that the model's ``aux_loss()`` reaches (found
    once through autograd), so a third-party entropy model's own auxiliary
    term trains its own parameters. An aux loss must depend only on the
    parameters it trains (the contract in the README).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    reached: set[int] = set()
    value = aux_loss(model)
    if value is not None:
        grads = torch.autograd.grad(value, [p for _, p in named], allow_unused=True)
        reached = {id(p) for (_, p), g in zip(named, grads) if g is not None}
    main: list[tuple[str, nn.Parameter]] = []
    aux: list[tuple[str, nn.Parameter]] = []
    for name, p in named:
        (aux if name.endswith(".quantiles") or id(p) in reached else main).append((name, p))
    return main, aux


def build_optimizers(
    model: nn.Module, train_cfg: Mapping[str, Any], source: str = "recipe"
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """The recipe's main optimiser over the main parameters, and Adam(aux_lr) over the quantiles (or None)."""
    main, aux = split_parameters(model)
    cfg = train_cfg["optimizer"]
    lr, wd, name = float(cfg["lr"]), float(cfg["weight_decay"]), cfg["name"]
    params = [p for _, p in main]
    opt: torch.optim.Optimizer
    if name in ("adam", "adamw"):
        betas = cfg["betas"]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise RecipeError(f"{source}: [train.optimizer] 'betas' must be two numbers in [0, 1), got {betas!r}")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = cls(params, lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=wd)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    aux_opt = torch.optim.Adam([p for _, p in aux], lr=float(train_cfg["aux_lr"])) if aux else None
    return opt, aux_opt


class LRSchedule:
    """Cosine decay (to ``min_factor`` of the base rate at the end of the plan) or a constant learning rate.

    ``interval="epoch"`` advances once per epoch (like ``CosineAnnealingLR``
    with ``T_max=epochs``), ``"step"`` once per optimiser step over
    ``epochs * steps_per_epoch``. ``warmup`` > 0 multiplies the rate by
    ``min(1, (t + 1) / warmup)`` (a linear warm-up over the first ``warmup``
    steps; the cosine runs from the start). Only the main optimiser is scheduled.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        interval: str,
        horizon: int,
        warmup: int = 0,
        min_factor: float = 0.0,
    ):
        self.optimizer = optimizer
        self.kind, self.interval, self.horizon = kind, interval, max(1, int(horizon))
        self.warmup, self.min_factor = max(0, int(warmup)), float(min_factor)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.t = 0
        self._apply()

    def factor(self, t: int) -> float:
        f = 1.0
        if self.kind != "constant":
            cosine = 0.5 * (1.0 + math.cos(math.pi * min(t, self.horizon) / self.horizon))
            f = self.min_factor + (1.0 - self.min_factor) * cosine
        if self.warmup > 0:
            f *= min(1.0, (t + 1) / self.warmup)
        return f

    def _apply(self) -> None:
        f = self.factor(self.t)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.t += 1
        self._apply()

    def set_horizon(self, horizon: int) -> None:
        """A new length for the plan (e.g. sized to a time budget); the current rate follows it at once."""
        self.horizon = max(1, int(horizon))
        self._apply()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "base_lrs": list(self.base_lrs),
            "kind": self.kind,
            "interval": self.interval,
            "horizon": self.horizon,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.t = int(state["t"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


class TrainStep:
    """One optimisation step on a batch: forward, weighted loss, backward, clip, step, then the aux step.

    Returns the detached losses ``[total, *terms, (aux)]`` as one tensor and
    never reads a value back to the host, so GPU steps stay asynchronous.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        aux_optimizer: torch.optim.Optimizer | None = None,
        clip_grad: float = 0.0,
        forward: nn.Module | None = None,
    ):
        self.model, self.objective = model, objective
        self.forward = forward if forward is not None else model
        self.optimizer, self.aux_optimizer = optimizer, aux_optimizer
        self.clip_grad = float(clip_grad)
        main, aux = split_parameters(model)
        self.main_params = [p for _, p in main]
        self.aux_params = [p for _, p in aux]
        self.average_aux = self.forward is not model  # under DDP the aux grads are averaged by hand

    def __call__(self, x: Tensor) -> Tensor:
        out = self.forward(x)
        total, terms = self.objective(x, out)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.main_params, self.clip_grad)
        self.optimizer.step()
        values = [total.detach(), *(t.detach() for t in terms.values())]
        aux = aux_loss(self.model) if self.aux_optimizer is not None else None
        if self.aux_optimizer is not None and aux is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
            aux.backward()
            if self.average_aux:
                dist.average_grads(self.aux_params)
            self.aux_optimizer.step()
            values.append(aux.detach())
        return torch.stack(values)


def build_training(recipe: Recipe, device: torch.device | str = "cpu", steps_per_epoch: int = 1):
    """Model, objective, optimisers and schedule for a recipe: what ``train`` and the speed benchmark use."""
    interval = recipe.train["schedule_interval"]
    if interval not in SCHEDULE_INTERVALS:
        raise RecipeError(
            f"{recipe.source}: [train] schedule_interval '{interval}' is not one of: {', '.join(SCHEDULE_INTERVALS)}"
        )
    model = build_model(recipe).to(device)
    objective = build_objective(recipe).to(device)
    opt, aux_opt = build_optimizers(model, recipe.train, recipe.source)
    warmup = int(recipe.train.get("warmup_steps", 0))  # absent from recipes that leave it at 0
    if warmup and interval != "step":
        raise RecipeError(f'{recipe.source}: [train] warmup_steps needs schedule_interval = "step" (it counts steps)')
    epochs = int(recipe.train["epochs"])
    horizon = epochs if interval == "epoch" else epochs * max(1, steps_per_epoch)
    min_factor = float(recipe.train.get("min_lr_factor", 0.0))
    schedule = LRSchedule(opt, recipe.train["schedule"], interval, horizon, warmup, min_factor)
    return model, objective, opt, aux_opt, schedule
