"""The end of a run: final checkpoints, the real-bitstream evaluation (eval.json), run.json and the summary."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rdkit_ae.checkpoint import load_model
from rdkit_ae.evaluation.evaluator import evaluate
from rdkit_ae.files import write_json
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.callbacks import CallbackList
from rdkit_ae.training.checkpoints import finalize_checkpoint
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.reporting import Reporter
from rdkit_ae.training.results import TrainResult
from rdkit_ae.training.runlog import METRICS, MetricsLog
from rdkit_ae.training.state import BEST, LAST


def finish(ctx: TrainContext, callbacks: CallbackList, reporter: Reporter, stopped: str) -> TrainResult:
    """Close a run that stopped normally; files are written on rank 0, the others return their result."""
    dist.sync_buffers(ctx.model)
    digests = dist.gather_objects(dist.weights_digest(ctx.model))
    out = ctx.out
    result = TrainResult(out, out / BEST, out / LAST, [], None, stopped, ctx.epoch, ctx.step)
    ctx.result = result
    if ctx.info.is_main:
        for name in (LAST, BEST):
            finalize_checkpoint(out / name)
        best_model, _, _ = load_model(out / BEST, map_location="cpu")
        ctx.final_model = best_model
        if ctx.options.evaluate:
            result.eval = final_evaluation(ctx, best_model, reporter)
        result.metrics = MetricsLog(out / METRICS).read()
    callbacks.on_train_end(ctx)
    if ctx.info.is_main:
        write_run_json(ctx, result, digests)
        if len(set(digests)) != 1:
            reporter.say("[red]warning: the processes ended with different weights (see run.json)[/]")
        reporter.summary(ctx, result)
    return result


def final_evaluation(ctx: TrainContext, model: nn.Module, reporter: Reporter) -> dict[str, Any]:
    """Code the validation images at full size with the best model; writes and returns eval.json's content."""
    reporter.say(f"evaluating {BEST} on the {len(ctx.val_images)} validation images with real bitstreams ...")
    res = evaluate(
        model,
        ctx.val_images,
        batch_size=64,
        device=str(ctx.device),
        name=ctx.recipe.name,
        description=ctx.recipe.description,
    )
    data = res.to_compressai()
    data["summary"] = res.summary
    data["checkpoint"] = BEST
    data["data"] = {
        "spec": ctx.config.data,
        "split": "val",
        "images": len(ctx.val_images),
        "val_fraction": ctx.config.val_fraction,
        "seed": int(ctx.recipe.train["seed"]),
    }
    write_json(ctx.out / "eval.json", data)
    return data


def write_run_json(ctx: TrainContext, result: TrainResult, digests: list[str]) -> None:
    write_json(
        ctx.out / "run.json",
        {
            "recipe": ctx.recipe.name,
            "recipe_digest": ctx.recipe.digest(),
            **ctx.config.to_dict(),
            "device": str(ctx.device),
            "torch": torch.__version__,
            "stopped": result.stopped,
            "epochs": result.epochs,
            "steps": result.steps,
            "best_epoch": ctx.position.best_epoch,
            "best_val_loss": ctx.position.best_loss,
            "rank_weight_digests": digests,
            "ranks_in_sync": len(set(digests)) == 1,
        },
    )
