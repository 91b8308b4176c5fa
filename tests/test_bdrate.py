"""Bjontegaard deltas against cases worked out by hand."""

import math

import numpy as np
import pytest

from rdkit_ae.evaluation.bdrate import bd_psnr, bd_rate, bjontegaard, clean_curve

# An anchor whose log-rate is exactly linear in PSNR: R = e^((q - 30) / 10).
PSNR = np.array([30.0, 32.5, 35.0, 37.0, 40.0])
RATE = np.exp((PSNR - 30.0) / 10.0)


@pytest.mark.parametrize("method", ["cubic", "linear"])
def test_identical_curves_give_zero(method):
    res = bjontegaard(RATE, PSNR, RATE, PSNR, method)
    assert res.bd_rate == 0.0 and res.bd_psnr == 0.0
    assert res.notes == []


@pytest.mark.parametrize("r", [0.5, 0.8, 1.25, 2.0])
@pytest.mark.parametrize("method", ["cubic", "linear"])
def test_scaled_rates_give_r_minus_one(method, r):
    assert bd_rate(RATE, PSNR, RATE * r, PSNR, method) == pytest.approx((r - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", ["cubic", "linear"])
def test_psnr_shift_gives_bd_psnr(method):
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 1.0, method) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR - 0.25, method) == pytest.approx(-0.25, abs=1e-9)


def test_cubic_matches_a_hand_integral():
    # test log-rate = anchor log-rate + ln2 * ((q - 30) / 10)^2: its mean over
    # [30, 40] is ln2 / 3, so BD-rate = (2^(1/3) - 1) * 100 = 25.992...%
    u = (PSNR - 30.0) / 10.0
    test_rate = np.exp(u + math.log(2) * u**2)
    res = bjontegaard(RATE, PSNR, test_rate, PSNR)
    assert res.method == "cubic"
    assert res.bd_rate == pytest.approx((2 ** (1 / 3) - 1) * 100, rel=1e-9)
    assert res.quality_overlap == (30.0, 40.0)


def test_linear_fallback_hand_case():
    # Two points per curve: anchor from (1 bpp, 30 dB) to (e bpp, 40 dB); the test
    # needs twice the bits at 30 dB and the same at 40 dB: log-rate difference
    # falls linearly from ln2 to 0, mean ln2 / 2 -> (sqrt(2) - 1) * 100 %.
    res = bjontegaard([1.0, math.e], [30.0, 40.0], [2.0, math.e], [30.0, 40.0])
    assert res.method == "linear"
    assert res.bd_rate == pytest.approx((math.sqrt(2) - 1) * 100, rel=1e-12)
    assert any("piecewise-linear" in n for n in res.notes)


def test_three_points_use_linear_and_partial_overlap_is_noted():
    res = bjontegaard(RATE, PSNR, RATE[2:] * 1.1, PSNR[2:])
    assert res.method == "linear"
    assert res.bd_rate == pytest.approx(10.0, abs=1e-9)
    assert res.quality_overlap == (35.0, 40.0)
    assert any("overlap 35.00-40.00 dB only" in n for n in res.notes)


def test_non_overlapping_curves_are_reported_not_extrapolated():
    res = bjontegaard(RATE, PSNR, RATE * 50, PSNR + 20)
    assert res.bd_rate is None and res.quality_overlap is None
    assert res.bd_psnr is None and res.rate_overlap is None
    assert any("no PSNR overlap" in n and "no extrapolation" in n for n in res.notes)
    assert any("no rate overlap" in n for n in res.notes)


def test_non_monotonic_points_are_dropped_and_noted():
    # A dominated point (more bits, lower PSNR) must not bend the fit.
    rate = np.append(RATE, 1.5)
    psnr = np.append(PSNR, 31.0)  # 1.5 bpp is more than RATE at 32.5 dB (~1.28)
    curve = clean_curve(rate, psnr)
    assert curve.dropped == 1 and np.all(np.diff(curve.quality) > 0) and np.all(np.diff(curve.rate) > 0)
    res = bjontegaard(RATE, PSNR, rate, psnr)
    assert res.bd_rate == pytest.approx(0.0, abs=1e-9)
    assert any("dropped" in n for n in res.notes)


def test_too_few_points():
    res = bjontegaard(RATE, PSNR, [1.0], [30.0])
    assert res.bd_rate is None and res.method == "none"
    with pytest.raises(ValueError):
        bjontegaard(RATE, PSNR, RATE[:3], PSNR[:3], method="cubic")


def test_sign_convention_better_test_is_negative():
    # The test reaches each PSNR with 20% fewer bits: -20%, and more dB at equal rate.
    res = bjontegaard(RATE, PSNR, RATE * 0.8, PSNR)
    assert res.bd_rate == pytest.approx(-20.0) and res.bd_psnr > 0
