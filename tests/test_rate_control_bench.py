"""rdkit bench targets = { bpp = [...] }: a variable-rate model evaluated at exactly the bpp values listed."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import smooth_images
from test_variable_rate import recipe

from rdkit_ae.bench import run_sweep
from rdkit_ae.bench.spec import SpecError, load_spec
from rdkit_ae.codec import Codec

SPEC = """
name = "targets"
anchor = "WebP"
[data]
train = {{ path = "d.npz", stop = 12 }}
eval = {{ path = "d.npz", start = 12 }}
[budget]
max_steps = 2
limit_val = 2
[[model]]
recipe = "vr.toml"
name = "vr"
{points}
[classical]
webp = [10, 90]
"""


def _spec(tmp_path, points: str):
    if not (tmp_path / "d.npz").exists():
        np.savez(tmp_path / "d.npz", x=smooth_images(15, 32, 32, seed=9))
        (tmp_path / "vr.toml").write_text(recipe(N=8, M=12).to_toml())
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(points=points))
    return path


def _stream_bpp_range(ckpt, images) -> tuple[float, float]:
    """The bpp (streams) every image reaches: (the highest rate-0 bpp, the lowest top-rate bpp)."""
    codec = Codec.load(ckpt)
    ends = []
    for t in (0, 5):
        codec.set_rate(rate=t)
        ends.append([sum(len(s[0]) for s in codec.model.compress(_tensor(im))["strings"]) * 8 / 1024 for im in images])
    return max(ends[0]), min(ends[1])


def _tensor(image):
    import torch

    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def test_targets_give_points_at_the_requested_bpp(tmp_path):
    first = run_sweep(_spec(tmp_path, "rates = [0, 5]"), tmp_path / "out")
    ckpt = first.curves["vr"]["points"][0].checkpoint
    low, high = _stream_bpp_range(ckpt, np.load(tmp_path / "d.npz")["x"][12:])
    assert high > low * 1.2
    targets = [round(low + f * (high - low), 3) for f in (0.25, 0.75)]
    res = run_sweep(_spec(tmp_path, f"targets = {{ bpp = {targets} }}"), tmp_path / "out")
    assert res.trained == 0 and not res.failures  # the same training as the rates above
    points = res.curves["vr"]["points"]
    assert [p.label for p in points] == [f"bpp={t:g}" for t in targets]
    for p, t in zip(points, targets):
        # each image lands at the size nearest the target its coder can write (whole 4-byte words: 1/32 bpp)
        assert abs(p.summary["bpp"] - t) <= 0.02 * t, (p.summary["bpp"], t)
        assert p.summary["target_bpp"] == t and 2 <= p.summary["passes"] <= 12
        assert p.summary["psnr"] > 0 and p.summary["container_bpp"] > p.summary["bpp"]
    assert res.bd["curves"]["vr"]["points"] == 2


@pytest.mark.parametrize(
    "points, message",
    [
        ("targets = { bpp = [] }", r"\.targets must be \{ bpp = \[\.\.\.\] \}"),
        ("targets = { bpp = [1, -2] }", "distinct positive numbers"),
        ("targets = { psnr = [30] }", r"\.targets must be \{ bpp"),
        ("targets = { bpp = [1] }\nrates = [1]", "give either rates or targets, not both"),
    ],
)
def test_target_errors_before_any_work(tmp_path, points, message):
    with pytest.raises(SpecError, match=message) as err:
        load_spec(_spec(tmp_path, points))
    assert "\n" not in str(err.value)


def test_targets_need_a_variable_rate_model(tmp_path):
    path = _spec(tmp_path, "targets = { bpp = [1.0] }")
    path.write_text(path.read_text().replace('recipe = "vr.toml"', 'recipe = "factorized"'))
    with pytest.raises(SpecError, match="targets need a variable-rate model .* single rate"):
        load_spec(path)
