"""What a run will do before it starts: a new run folder, or the stored state of the run being resumed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import RdkitError
from rdkit_ae.recipe import Recipe, load_recipe
from rdkit_ae.text import one_line
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.state import LAST, RunConfig, check_training_payload

RUNS_DIR = Path("runs")


@dataclass
class RunPlan:
    recipe: Recipe
    config: RunConfig
    out: Path
    payload: dict[str, Any] | None = None  # the checkpoint resumed from (None for a new run)
    notes: list[str] = field(default_factory=list)  # for the user: what differs from the stored run

    @property
    def resuming(self) -> bool:
        return self.payload is not None


def plan_run(options: TrainOptions, info: dist.DistInfo = dist.DistInfo()) -> RunPlan:
    """The recipe, data settings and run folder of this invocation (collective under torchrun)."""
    if options.resume is not None:
        return plan_resume(options, info)
    if options.recipe is None:
        raise RdkitError("give a recipe (a zoo name or a .toml path), or --resume RUN_DIR")
    recipe = load_recipe(options.recipe, options.overrides)
    plan: dict[str, Any] = {}
    if options.epochs is not None:
        plan["train.epochs"] = int(options.epochs)
    if options.seed is not None:
        plan["train.seed"] = int(options.seed)
    if plan:
        recipe = load_recipe(recipe, plan)
    threads = int(options.threads) if options.threads else torch.get_num_threads()
    cfg = RunConfig(
        options.data, float(options.val_fraction), options.limit_train, options.limit_val, info.world_size, threads
    )
    return RunPlan(recipe, cfg, new_run_dir(recipe, options.out, info))


def new_run_dir(recipe: Recipe, out: Path | None, info: dist.DistInfo = dist.DistInfo()) -> Path:
    """Create the run folder on rank 0 (``runs/<recipe>-<timestamp>`` by default); every rank gets its path."""
    if info.is_main:
        if out is None:
            base = RUNS_DIR / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            path, n = base, 1
            while path.exists():
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        else:
            path = Path(out).expanduser()
            if (path / LAST).exists():
                raise RdkitError(
                    f"{path} already holds a run ({LAST}); continue it with --resume {path} or choose another --out"
                )
            if path.exists() and not path.is_dir():
                raise RdkitError(f"--out {path} exists and is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RdkitError(f"cannot create the run folder {path}: {one_line(exc)}") from None
        path_s = str(path)
    else:
        path_s = ""
    return Path(dist.broadcast_object(path_s))


def read_resume_checkpoint(resume: Path, out: Path | None) -> tuple[Path, Path, dict[str, Any]]:
    """(run folder, checkpoint, payload) of ``--resume`` (a run folder or one of its checkpoints)."""
    given = Path(resume).expanduser()
    run_dir = given.parent if given.is_file() else given
    ckpt_path = given if given.is_file() else given / LAST
    if not ckpt_path.is_file():
        raise RdkitError(f"nothing to resume in {run_dir}: no {LAST} (is it a run folder?)")
    if out is not None and Path(out).expanduser().resolve() != run_dir.resolve():
        raise RdkitError("--out and --resume name different folders; a resumed run continues in its own folder")
    payload = load_checkpoint(ckpt_path)
    check_training_payload(payload, str(ckpt_path))
    return run_dir, ckpt_path, payload


def plan_resume(options: TrainOptions, info: dist.DistInfo = dist.DistInfo()) -> RunPlan:
    assert options.resume is not None

    def read() -> tuple[str, str, dict[str, Any]]:
        run_dir, ckpt, payload = read_resume_checkpoint(options.resume, options.out)  # type: ignore[arg-type]
        return str(run_dir), str(ckpt), payload

    # Only rank 0 needs to see the run folder (other nodes may not share its file system).
    run_dir_s, ckpt_s, payload = dist.from_rank0(info, read)
    run_dir, ckpt_path = Path(run_dir_s), Path(ckpt_s)
    recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", "recipe"), f"{ckpt_path}:recipe")
    recipe, notes = _resumed_recipe(options, recipe, ckpt_path)
    stored = payload["run"]
    data = stored["data"] if options.data in ("cifar10", stored["data"]) else options.data
    if data != stored["data"]:
        notes.append(f"reading the data from {data} (the run used {stored['data']})")
    threads = int(options.threads) if options.threads else int(stored.get("threads") or torch.get_num_threads())
    cfg = RunConfig(
        data,
        float(stored["val_fraction"]),
        options.limit_train if options.limit_train is not None else stored["limit_train"],
        options.limit_val if options.limit_val is not None else stored["limit_val"],
        info.world_size,
        threads,
    )
    if cfg.limit_train != stored["limit_train"]:
        notes.append("--limit-train differs from the run's; epochs will not match an uninterrupted run")
    if info.world_size != int(stored.get("world_size", 1)):
        notes.append(
            f"resuming with {info.world_size} process(es) instead of {stored.get('world_size', 1)}; "
            "data order and results will differ from an uninterrupted run"
        )
    return RunPlan(recipe, cfg, run_dir, payload, notes)


def _resumed_recipe(options: TrainOptions, recipe: Recipe, ckpt_path: Path) -> tuple[Recipe, list[str]]:
    """The stored recipe, checked against what was asked; only the planned epochs may change."""
    notes: list[str] = []
    if options.overrides:
        raise RdkitError("--set cannot change the recipe of a resumed run (it continues the stored one)")
    if options.recipe is not None:
        asked = load_recipe(options.recipe)
        stored_wo_plan = load_recipe(recipe, {"train.epochs": asked.train["epochs"], "train.seed": asked.train["seed"]})
        if asked.digest() != stored_wo_plan.digest():
            raise RdkitError(
                f"--recipe {options.recipe} differs from the recipe stored in {ckpt_path}; drop --recipe to resume"
            )
    if options.seed is not None and int(options.seed) != recipe.train["seed"]:
        raise RdkitError(
            f"--seed {options.seed} differs from the run's seed {recipe.train['seed']}; a resumed run keeps its seed"
        )
    if options.epochs is not None and int(options.epochs) != recipe.train["epochs"]:
        before = recipe.train["epochs"]
        recipe = load_recipe(recipe, {"train.epochs": int(options.epochs)})
        notes.append(
            f"the plan changes from {before} to {options.epochs} epochs; "
            "the learning-rate schedule follows the new length"
        )
    return recipe, notes
