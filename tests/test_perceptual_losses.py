"""Loss plugins haarpsi, ms-gmsd and lpips (plugins/perceptual_losses.py): values equal piq / the lpips
package, gradients reach the reconstruction, a recipe trains on them, and missing weights are one line."""

from __future__ import annotations

import piq
import pytest
import torch
from conftest import REPO

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation import learned_metrics
from rdkit_ae.registry import create, get_plugin


def _pair(seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g)
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0.02, 0.98).requires_grad_(True)
    return x, x_hat


@pytest.mark.parametrize(
    "name, reference",
    [
        ("haarpsi", lambda a, b: 1.0 - piq.haarpsi(a, b, data_range=1.0)),
        ("ms-gmsd", lambda a, b: piq.multi_scale_gmsd(a, b, data_range=1.0)),
    ],
)
def test_weight_free_losses_value_and_gradient(name, reference):
    assert get_plugin("loss", name).name == name
    loss = create("loss", name)
    x, x_hat = _pair()
    value = loss(x, {"x_hat": x_hat})
    assert value.item() == pytest.approx(reference(x_hat.detach(), x).item(), rel=1e-6)
    value.backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    # a gradient step lowers the loss
    with torch.no_grad():
        stepped = (x_hat - 1e-2 * x_hat.grad / x_hat.grad.abs().max()).clamp(0, 1)
    assert loss(x, {"x_hat": stepped}).item() < value.item()
    assert loss(x, {"x_hat": x.clone()}).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(RdkitError, match=f"loss '{name}': needs images of at least"):
        loss(x[..., :12, :12], {"x_hat": x_hat[..., :12, :12]})


def test_recipe_trains_on_haarpsi(tmp_path):
    from rdkit_ae.model import build_model, build_objective

    text = (REPO / "zoo" / "conv-mse.toml").read_text()
    (tmp_path / "conv-haarpsi.toml").write_text(text + '\n[[loss]]\nname = "haarpsi"\nweight = 0.1\n')
    model = build_model(
        str(tmp_path / "conv-haarpsi.toml"), ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4"]
    )
    objective = build_objective(model.recipe)
    x, _ = _pair(1)
    model.train()
    loss, parts = objective(x, model(x))
    loss.backward()
    assert "haarpsi" in str(parts) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_lpips_loss_needs_weights_and_then_matches_lpips(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(learned_metrics.ENV, raising=False)
    monkeypatch.setattr(learned_metrics, "_CACHE", {})
    with pytest.raises(RdkitError, match="LPIPS needs torchvision's ImageNet AlexNet") as err:
        create("loss", "lpips")
    assert "\n" not in str(err.value)
    torch.manual_seed(0)
    torch.save(alexnet().state_dict(), tmp_path / "alex.pth")
    loss = create("loss", "lpips", weights=str(tmp_path / "alex.pth"))
    assert not list(loss.parameters())  # the frozen network is no part of a model's weights
    x, x_hat = _pair(2)
    value = loss(x, {"x_hat": x_hat})
    net = learned_metrics.load_lpips(tmp_path / "alex.pth")
    assert value.item() == pytest.approx(net(x_hat.detach(), x, normalize=True).mean().item(), rel=1e-6)
    value.backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
