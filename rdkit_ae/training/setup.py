"""Everything a run needs before its first step: data, model, optimisers, restored state, the step function."""

from __future__ import annotations

import torch

from rdkit_ae.data.datasets import ImageDataset, train_batches
from rdkit_ae.data.sources import ImageSet, load_images
from rdkit_ae.recipe import Recipe
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.optim import TrainStep, build_training, split_parameters
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.plan import RunPlan
from rdkit_ae.training.state import LAST, Position, RunConfig, restore_training, seed_everything


def load_data(
    recipe: Recipe, cfg: RunConfig, info: dist.DistInfo = dist.DistInfo()
) -> tuple[ImageSet, ImageSet, ImageDataset, ImageDataset]:
    """(train images, val images, train patches, val patches) as the recipe's [train] table asks."""
    seed = int(recipe.train["seed"])
    t = recipe.train
    aug = t["augment"]

    def load() -> tuple[ImageSet, ImageSet]:
        tr = load_images(cfg.data, "train", val_fraction=cfg.val_fraction, seed=seed, limit=cfg.limit_train)
        va = load_images(cfg.data, "val", val_fraction=cfg.val_fraction, seed=seed, limit=cfg.limit_val)
        return tr, va

    # Rank 0 first: a CIFAR-10 download happens once, not once per process.
    train_images, val_images = dist.rank0_first(info, load, "loading the data")
    train_set = ImageDataset(
        train_images,
        int(t["crop_size"]),
        train=True,
        hflip=aug["hflip"],
        color_jitter=aug["color_jitter"],
        seed=seed,
    )
    val_set = ImageDataset(val_images, int(t["crop_size"]), train=False)
    return train_images, val_images, train_set, val_set


def build_context(
    options: TrainOptions, plan: RunPlan, info: dist.DistInfo, device: torch.device
) -> tuple[TrainContext, TrainStep]:
    """The run's context (model, optimisers, data, position: restored when resuming) and its step function."""
    recipe, t = plan.recipe, plan.recipe.train
    seed = int(t["seed"])
    seed_everything(seed)
    train_images, val_images, train_set, val_set = load_data(recipe, plan.config, info)
    steps_per_epoch = len(train_batches(train_set, int(t["batch_size"]), 0, seed, info.rank, info.world_size))
    seed_everything(seed)  # model initialisation does not depend on how the data was loaded
    model, objective, opt, aux_opt, schedule = build_training(recipe, device, steps_per_epoch)
    if t.get("channels_last", False):  # NHWC weights make the convolutions NHWC; coding still gets NCHW inputs
        model.to(memory_format=torch.channels_last)
    pos = Position()
    if plan.payload is not None:
        pos = restore_training(plan.payload, model, opt, aux_opt, schedule, str(plan.out / LAST), info, device)
    elif info.enabled:
        torch.manual_seed(seed + info.rank)  # distinct quantisation noise per rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick the fastest kernels
    _, aux = split_parameters(model)
    forward = dist.wrap_ddp(model, info, device, ignore=[n for n, _ in aux])
    step_fn = TrainStep(model, objective, opt, aux_opt, float(t["clip_grad"]), forward=forward)
    ctx = TrainContext(
        options=options,
        recipe=recipe,
        config=plan.config,
        out=plan.out,
        info=info,
        device=device,
        model=model,
        objective=objective,
        optimizer=opt,
        aux_optimizer=aux_opt,
        schedule=schedule,
        position=pos,
        train_images=train_images,
        val_images=val_images,
        train_set=train_set,
        val_set=val_set,
        plan_epochs=int(t["epochs"]),
        steps_per_epoch=steps_per_epoch,
        term_names=["loss", *objective.names, *(["aux"] if aux_opt is not None else [])],
        resumed=plan.payload is not None,
    )
    return ctx, step_fn
