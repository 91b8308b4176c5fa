"""Validation during training: loss terms, PSNR/SSIM of 8-bit reconstructions and likelihood bpp."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from pytorch_msssim import ssim
from torch import Tensor, nn

from rdkit_ae.data.datasets import ImageDataset, loader, val_batches
from rdkit_ae.model import Objective
from rdkit_ae.training import distributed as dist

SSIM_MIN_SIDE = 11  # pytorch_msssim's default window


@torch.no_grad()
def validate(
    model: nn.Module,
    objective: Objective,
    val_set: ImageDataset,
    batch_size: int,
    device: torch.device,
    info: dist.DistInfo = dist.DistInfo(),
    workers: int = 0,
) -> dict[str, Any]:
    """``val_<term>`` for the total loss and each term, ``val_psnr``, ``val_ssim`` and ``val_bpp`` (estimated).

    Each rank validates its share of the patches; the sums meet in one all-reduce.
    """
    model.eval()
    objective.eval()  # losses that behave differently in training see validation as such
    n_terms = len(objective.names) + 1
    # sums: weighted loss terms, psnr, ssim, bpp, images
    sums = torch.zeros(n_terms + 4, dtype=torch.float64, device=device)
    batches = val_batches(len(val_set), batch_size, info.rank, info.world_size)
    for x in loader(val_set, batches, workers=workers, pin_memory=device.type == "cuda"):
        x = x.to(device)
        out = model(x)
        total, terms = objective(x, out)
        B, _, H, W = x.shape
        sums[:n_terms] += torch.stack([total, *terms.values()]).double() * B
        x8 = out["x_hat"].clamp(0, 1).mul(255).round().div(255)
        mse = (x8 - x).pow(2).flatten(1).mean(1).double()
        sums[n_terms] += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).sum()
        if min(H, W) >= SSIM_MIN_SIDE:
            sums[n_terms + 1] += ssim(x8, x, data_range=1.0, size_average=False).double().sum()
        bits = torch.zeros(B, device=device)
        for i, lk in enumerate(likelihoods(out)):  # summed in the likelihoods' precision, as before
            b = torch.log2(lk).flatten(1).sum(1)
            bits = b if i == 0 else bits + b
        sums[n_terms + 2] += (-bits.double() / (H * W)).sum()
        sums[n_terms + 3] += B
    model.train()
    objective.train()
    totals = dist.all_reduce(sums).tolist()
    n = max(1.0, totals[-1])
    res: dict[str, Any] = {f"val_{name}": totals[i] / n for i, name in enumerate(["loss", *objective.names])}
    res["val_psnr"] = totals[n_terms] / n
    res["val_ssim"] = totals[n_terms + 1] / n if min(val_set.patch) >= SSIM_MIN_SIDE else None
    res["val_bpp"] = totals[n_terms + 2] / n
    return res


def likelihoods(out: Mapping[str, Any]) -> Iterable[Tensor]:
    """Every likelihood tensor in a forward output, however nested."""
    stack = [out.get("likelihoods", {})]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
