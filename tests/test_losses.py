"""Built-in losses: mse, rate, ssim, ms-ssim, vgg-perceptual (and the VGG weights loader)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
from plugin_helpers import cifar_images, random_vgg_state, save_vgg_weights, shared_file

from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.plugins import vgg
from rdkit_ae.registry import create

REAL_VGG = "models/vgg16-caffe-features-conv1_1-conv4_3.pth"


def images(B=2, H=32, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g)


def smooth_images(B=2, H=32, W=32, seed=0):
    """Low-frequency images (closer to natural images than white noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(B, 3, max(H // 8, 1), max(W // 8, 1), generator=g)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


# -- mse -------------------------------------------------------------------------
def test_mse_matches_functional_with_gradient():
    x, x_hat = images(seed=1), images(seed=2).requires_grad_()
    loss = create("loss", "mse")(x, {"x_hat": x_hat, "likelihoods": {}})
    assert torch.equal(loss, F.mse_loss(x_hat, x))
    loss.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


# -- rate --------------------------------------------------------------------------
def test_rate_uniform_8bit_is_two_bpp():
    x = images(B=3)
    lik = torch.full((3, 16, 4, 4), 2.0**-8)
    bpp = create("loss", "rate")(x, {"x_hat": x, "likelihoods": {"y": lik}})
    assert bpp.dim() == 0 and bpp.item() == pytest.approx(2.0, abs=1e-6)


def test_rate_sums_all_and_nested_likelihoods():
    x = images(B=2, H=16, W=24)
    y = torch.full((2, 4, 2, 3), 0.5)  # 1 bit each: 48 bits
    z = torch.full((2, 2, 1, 1), 0.25)  # 2 bits each: 8 bits
    w = torch.full((2, 1, 1, 1), 0.125)  # 3 bits each: 6 bits (nested)
    out = {"x_hat": x, "likelihoods": {"y": y, "z": z, "extra": {"w": w}}}
    expected = (48 + 8 + 6) / (2 * 16 * 24)
    assert create("loss", "rate")(x, out).item() == pytest.approx(expected, rel=1e-6)


def test_rate_gradient_and_real_quantizer():
    x = images(B=2)
    q = create("quantizer", "factorized-entropy", channels=4).train()
    y = torch.randn(2, 4, 4, 4, requires_grad=True)
    bpp = create("loss", "rate")(x, {"x_hat": x, **q(y)})
    assert bpp.item() > 0
    bpp.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_rate_without_likelihoods_is_clear_error():
    x = images()
    with pytest.raises(RdkitError, match="no likelihoods"):
        create("loss", "rate")(x, {"x_hat": x, "likelihoods": {}})


# -- ssim / ms-ssim ------------------------------------------------------------------
def test_ssim_identical_is_zero_and_has_gradient():
    x = smooth_images()
    loss = create("loss", "ssim")
    assert loss(x, {"x_hat": x.clone()}).item() == pytest.approx(0.0, abs=1e-6)
    x_hat = (x + 0.1 * images(seed=3)).requires_grad_()
    value = loss(x, {"x_hat": x_hat})
    assert 0 < value.item() < 2
    value.backward()
    assert x_hat.grad.abs().sum() > 0


def test_ssim_clamps_reconstruction():
    x = smooth_images()
    loss = create("loss", "ssim")
    assert loss(x, {"x_hat": x * 3 - 1}).item() == pytest.approx(loss(x, {"x_hat": (x * 3 - 1).clamp(0, 1)}).item())


def test_ssim_small_image_is_clear_error():
    x = images(H=8, W=8)
    with pytest.raises(RdkitError, match="smaller than the SSIM window"):
        create("loss", "ssim")(x, {"x_hat": x})
    assert create("loss", "ssim", win_size=7)(x, {"x_hat": x}).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("name", ["ssim", "ms-ssim"])
@pytest.mark.parametrize("win_size", [4, 1, "11"])
def test_ssim_bad_win_size(name, win_size):
    with pytest.raises(PluginError, match="win_size"):
        create("loss", name, win_size=win_size)


def test_ms_ssim_on_cifar_size_is_clear_error():
    x = images()
    with pytest.raises(RdkitError) as err:
        create("loss", "ms-ssim")(x, {"x_hat": x})
    msg = str(err.value)
    assert "161x161" in msg and "'ssim'" in msg and "32x32" in msg and "\n" not in msg


def test_ms_ssim_works_on_192():
    x = smooth_images(B=1, H=192, W=192)
    loss = create("loss", "ms-ssim")
    assert loss(x, {"x_hat": x.clone()}).item() == pytest.approx(0.0, abs=1e-5)
    x_hat = (x + 0.05 * images(B=1, H=192, W=192, seed=4)).requires_grad_()
    value = loss(x, {"x_hat": x_hat})
    assert 0 < value.item() < 1
    value.backward()
    assert x_hat.grad.abs().sum() > 0
    with pytest.raises(RdkitError, match="at least 65x65"):
        create("loss", "ms-ssim", win_size=5)(images(H=64, W=96), {"x_hat": images(H=64, W=96)})


# -- vgg-perceptual ------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated_vgg(monkeypatch, tmp_path):
    """No VGG settings from the environment, no cached networks, no network access."""
    monkeypatch.delenv(vgg.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv(vgg.ENV_PREPROCESSING, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    vgg.clear_cache()
    yield
    vgg.clear_cache()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random VGG-16 weights up to relu3_3 (features[:16]) in torchvision's layout."""
    return save_vgg_weights(tmp_path_factory.mktemp("vgg") / "vgg16-random.pth", depth=15)


def vgg_loss(weights, **params):
    return create("loss", "vgg-perceptual", weights=str(weights), **params)


@pytest.mark.parametrize("preprocessing", ["torchvision", "caffe"])
def test_vgg_identical_is_zero_blur_positive(vgg_file, preprocessing):
    loss = vgg_loss(vgg_file, preprocessing=preprocessing)
    assert loss.preprocessing == preprocessing
    x = images()
    assert loss(x, {"x_hat": x.clone()}).item() == pytest.approx(0.0, abs=1e-10)
    value = loss(x, {"x_hat": images(seed=5)})
    assert value.dim() == 0 and value.item() > 0


def test_vgg_gradient_reaches_x_hat_not_vgg(vgg_file):
    loss = vgg_loss(vgg_file)
    x = images()
    x_hat = images(seed=6).requires_grad_()
    loss(x, {"x_hat": x_hat}).backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    net = loss._nets["cpu"]
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    assert list(loss.parameters()) == [] and loss.state_dict() == {}


def test_vgg_always_eval_and_truncated(vgg_file):
    loss = vgg_loss(vgg_file, layers=["relu2_2"]).train()
    assert loss.training and not loss._nets["cpu"].training
    assert len(loss._nets["cpu"]) == 9  # features[:9]: nothing deeper than relu2_2
    assert len(vgg_loss(vgg_file)._nets["cpu"]) == 16


def test_vgg_network_matches_torchvision_features(vgg_file):
    """Same layer indices as torchvision's vgg16().features, with the file's weights."""
    from torchvision.models.vgg import cfgs, make_layers

    ref = make_layers(cfgs["D"])[:16]
    ref.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(vgg_file).items()})
    net = vgg.load_features(15, str(vgg_file))
    x = images()
    assert torch.allclose(net(x), ref(x), atol=1e-5)


def test_vgg_preprocessing_conventions():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    caffe = vgg.preprocess(x, "caffe").flatten().tolist()
    assert caffe == pytest.approx([0.6 * 255 - 103.939, 0.4 * 255 - 116.779, 0.2 * 255 - 123.68], abs=1e-4)
    tv = vgg.preprocess(x, "torchvision").flatten().tolist()
    assert tv == pytest.approx([(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.6 - 0.406) / 0.225], abs=1e-5)


def test_vgg_normalize_target_vs_none(vgg_file):
    x, x_hat = images(), images(seed=7)
    raw = {
        p: vgg_loss(vgg_file, preprocessing=p, normalize="none")(x, {"x_hat": x_hat}).item()
        for p in ("caffe", "torchvision")
    }
    norm = {p: vgg_loss(vgg_file, preprocessing=p)(x, {"x_hat": x_hat}).item() for p in ("caffe", "torchvision")}
    assert raw["caffe"] > 50 * raw["torchvision"]  # caffe's 0..255 scale
    assert norm["caffe"] < 10 * norm["torchvision"] and norm["torchvision"] < 10 * norm["caffe"]


def test_vgg_layer_weights(vgg_file):
    x, x_hat = images(), images(seed=8)
    out = {"x_hat": x_hat}
    terms = [vgg_loss(vgg_file, layers=[n])(x, out).item() for n in ("relu1_2", "relu3_3")]
    both = vgg_loss(vgg_file, layers=["relu1_2", "relu3_3"], layer_weights=[2.0, 0.5])(x, out).item()
    assert both == pytest.approx(2.0 * terms[0] + 0.5 * terms[1], rel=1e-5)
    by_name = vgg_loss(vgg_file, layers=["relu1_2", "relu3_3"], layer_weights={"relu3_3": 0.5})(x, out).item()
    assert by_name == pytest.approx(terms[0] + 0.5 * terms[1], rel=1e-5)
    with pytest.raises(PluginError, match="2 values for 3 layers"):
        vgg_loss(vgg_file, layer_weights=[1.0, 2.0])


@pytest.mark.parametrize("prefix,classifier", [("", False), ("features.", True)])
def test_vgg_accepts_other_key_layouts(tmp_path, prefix, classifier):
    path = save_vgg_weights(tmp_path / "w.pth", depth=15, prefix=prefix, classifier=classifier)
    x = images()
    assert vgg_loss(path)(x, {"x_hat": images(seed=9)}).item() > 0


def test_vgg_bad_layer_name_lists_layers(vgg_file):
    with pytest.raises(PluginError) as err:
        vgg_loss(vgg_file, layers=["relu3_4"])
    assert "relu3_4" in str(err.value) and "relu5_3" in str(err.value) and "relu1_1" in str(err.value)


def test_vgg_bad_preprocessing(vgg_file, monkeypatch):
    with pytest.raises(PluginError, match="'torchvision' or 'caffe'"):
        vgg_loss(vgg_file, preprocessing="keras")
    monkeypatch.setenv(vgg.ENV_PREPROCESSING, "bgr")
    with pytest.raises(PluginError, match="RDKIT_VGG_PREPROCESSING"):
        vgg_loss(vgg_file)


def test_vgg_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(RdkitError, match="not found") as err:
        vgg_loss(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", ["garbage", "list", "nontensor", "empty"])
def test_vgg_unreadable_file_names_path(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "garbage":
        path.write_bytes(b"this is not a torch file")
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "nontensor":
        torch.save({"features.0.weight": [1, 2, 3]}, path)
    else:
        torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(RdkitError) as err:
        vgg_loss(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_vgg_file_missing_layers(tmp_path):
    path = save_vgg_weights(tmp_path / "short.pth", depth=8)  # stops at conv2_2
    assert vgg_loss(path, layers=["relu2_2"]).depth == 8
    with pytest.raises(RdkitError) as err:
        vgg_loss(path)  # relu3_3 needs conv3_1..conv3_3
    msg = str(err.value)
    assert "conv3_1" in msg and "relu3_3" in msg and str(path) in msg


def test_vgg_wrong_shapes(tmp_path):
    state = random_vgg_state(depth=15)
    state["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(RdkitError, match="shape"):
        vgg_loss(tmp_path / "odd.pth")


def test_vgg_env_vars_honoured(vgg_file, monkeypatch):
    monkeypatch.setenv(vgg.ENV_WEIGHTS, str(vgg_file))
    monkeypatch.setenv(vgg.ENV_PREPROCESSING, "caffe")
    loss = create("loss", "vgg-perceptual")
    assert loss.weights_path == str(vgg_file.resolve()) and loss.preprocessing == "caffe"
    assert "RDKIT_VGG_WEIGHTS" in loss.weights_source
    x = images()
    assert loss(x, {"x_hat": x}).item() == pytest.approx(0, abs=1e-10)
    # recipe parameters win over the environment
    assert create("loss", "vgg-perceptual", preprocessing="torchvision").preprocessing == "torchvision"
    monkeypatch.setenv(vgg.ENV_WEIGHTS, str(vgg_file.parent / "missing.pth"))
    with pytest.raises(RdkitError, match="missing.pth"):
        create("loss", "vgg-perceptual")
    assert create("loss", "vgg-perceptual", weights=str(vgg_file)).weights_path == str(vgg_file.resolve())


def test_vgg_offline_default_names_the_fixes():
    with pytest.raises(RdkitError) as err:
        create("loss", "vgg-perceptual")
    msg = str(err.value)
    assert "RDKIT_VGG_WEIGHTS" in msg and "RDKIT_VGG_PREPROCESSING" in msg
    assert "`weights`" in msg and "internet" in msg and "\n" not in msg


def test_vgg_default_uses_torchvision_weights(monkeypatch):
    state = random_vgg_state(depth=15)
    state["classifier.6.bias"] = torch.zeros(1000)
    calls = []

    def fake_download(url, *args, **kwargs):
        calls.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    loss = create("loss", "vgg-perceptual")
    assert loss.preprocessing == "torchvision" and loss.weights_path is None
    assert len(calls) == 1 and "vgg16" in calls[0]
    create("loss", "vgg-perceptual", layers=["relu3_3"])  # cached: no second download
    assert len(calls) == 1


def test_vgg_network_is_cached(vgg_file):
    a = vgg_loss(vgg_file)
    b = vgg_loss(vgg_file, layers=["relu3_3", "relu1_2"])
    assert a._nets["cpu"] is b._nets["cpu"]


def test_vgg_real_weights_penalise_blur(monkeypatch):
    """With the real shared weights: 0 << blur loss << loss between unrelated images."""
    path = shared_file(REAL_VGG)
    x = cifar_images(16)
    if path is None or x is None:
        pytest.skip("shared VGG-16 weights or CIFAR-10 dev images not present")
    from torchvision.transforms.functional import gaussian_blur

    loss = vgg_loss(path, preprocessing="caffe")
    other = cifar_images(16, start=16)
    blurred = gaussian_blur(x, [5, 5], [0.7, 0.7])
    with torch.no_grad():
        same = loss(x, {"x_hat": x}).item()
        blur = loss(x, {"x_hat": blurred}).item()
        unrelated = loss(x, {"x_hat": other}).item()
    assert same == pytest.approx(0, abs=1e-8)
    assert blur > 0.02  # about 0.18 with the default layers
    assert blur < 0.2 * unrelated  # about 5% of the unrelated-image distance
    with pytest.raises(RdkitError, match="conv5_1"):
        vgg_loss(path, layers=["relu5_1"], preprocessing="caffe")
