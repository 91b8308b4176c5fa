"""Bjontegaard deltas (the ``bjontegaard`` package behind rdkit_ae's wrappers) against independent computations."""

import math

import numpy as np
import pytest

from rdkit_ae.evaluation.bdrate import bd_psnr, bd_rate, bjontegaard, clean_curve, psnr_at, rate_window

# An anchor whose log-rate is exactly linear in PSNR: R = e^((q - 30) / 10).
PSNR = np.array([30.0, 32.5, 35.0, 37.0, 40.0])
RATE = np.exp((PSNR - 30.0) / 10.0)
METHODS = ["cubic", "pchip", "akima"]


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method):
    res = bjontegaard(RATE, PSNR, RATE, PSNR, method)
    assert res.bd_rate == 0.0 and res.bd_psnr == 0.0
    assert res.notes == [] and res.method == method


@pytest.mark.parametrize("r", [0.5, 0.8, 1.25, 2.0])
@pytest.mark.parametrize("method", METHODS)
def test_scaled_rates_give_r_minus_one(method, r):
    assert bd_rate(RATE, PSNR, RATE * r, PSNR, method) == pytest.approx((r - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_psnr_shift_gives_bd_psnr(method):
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 1.0, method) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR - 0.25, method) == pytest.approx(-0.25, abs=1e-9)


def _polyfit_mean(x_a, y_a, x_t, y_t):
    """VCEG-M33 by hand: cubic fits, integrated over the shared x range, mean difference."""
    lo, hi = max(min(x_a), min(x_t)), min(max(x_a), max(x_t))
    ia, it = np.polyint(np.polyfit(x_a, y_a, 3)), np.polyint(np.polyfit(x_t, y_t, 3))
    return ((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)


def test_cubic_equals_an_independent_polyfit_integration():
    # Curves that are not polynomials, with different PSNR ranges and point counts.
    a_q = np.array([28.0, 30.5, 33.0, 35.0, 38.0, 39.5])
    a_r = np.exp((a_q - 27.0) / 7.0) * (1 + 0.03 * np.sin(a_q))
    t_q = np.array([29.0, 31.0, 34.5, 36.5, 41.0])
    t_r = 0.85 * np.exp((t_q - 27.0) / 7.3)
    res = bjontegaard(a_r, a_q, t_r, t_q)
    assert res.method == "cubic"
    expected_rate = (math.exp(_polyfit_mean(a_q, np.log(a_r), t_q, np.log(t_r))) - 1) * 100
    expected_psnr = _polyfit_mean(np.log(a_r), a_q, np.log(t_r), t_q)
    assert res.bd_rate == pytest.approx(expected_rate, rel=1e-9)
    assert res.bd_psnr == pytest.approx(expected_psnr, rel=1e-9)
    assert res.quality_overlap == (29.0, 39.5)


def test_cubic_matches_a_hand_integral():
    # test log-rate = anchor log-rate + ln2 * ((q - 30) / 10)^2: its mean over
    # [30, 40] is ln2 / 3, so BD-rate = (2^(1/3) - 1) * 100 = 25.992...%
    u = (PSNR - 30.0) / 10.0
    test_rate = np.exp(u + math.log(2) * u**2)
    res = bjontegaard(RATE, PSNR, test_rate, PSNR)
    assert res.method == "cubic"
    assert res.bd_rate == pytest.approx((2 ** (1 / 3) - 1) * 100, rel=1e-9)
    assert res.quality_overlap == (30.0, 40.0)


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_piecewise_methods_converge_to_the_hand_integral(method):
    # Dense samples of the same curves: a piecewise cubic approaches the exact integral.
    q = np.linspace(30.0, 40.0, 41)
    u = (q - 30.0) / 10.0
    res = bjontegaard(np.exp(u), q, np.exp(u + math.log(2) * u**2), q, method)
    assert res.method == method
    assert res.bd_rate == pytest.approx((2 ** (1 / 3) - 1) * 100, rel=1e-4)


def test_two_points_are_linear_hand_case():
    # Two points per curve: anchor from (1 bpp, 30 dB) to (e bpp, 40 dB); the test
    # needs twice the bits at 30 dB and the same at 40 dB: log-rate difference
    # falls linearly from ln2 to 0, mean ln2 / 2 -> (sqrt(2) - 1) * 100 %.
    res = bjontegaard([1.0, math.e], [30.0, 40.0], [2.0, math.e], [30.0, 40.0])
    assert res.method == "pchip"
    assert res.bd_rate == pytest.approx((math.sqrt(2) - 1) * 100, rel=1e-12)
    assert any("piecewise cubic (pchip)" in n for n in res.notes)
    akima = bjontegaard([1.0, math.e], [30.0, 40.0], [2.0, math.e], [30.0, 40.0], "akima")
    assert akima.bd_rate == pytest.approx((math.sqrt(2) - 1) * 100, rel=1e-12)


def test_three_points_use_pchip_and_partial_overlap_is_noted():
    res = bjontegaard(RATE, PSNR, RATE[2:] * 1.1, PSNR[2:])
    assert res.method == "pchip"
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
    with pytest.raises(ValueError, match="method must be one of"):
        bjontegaard(RATE, PSNR, RATE, PSNR, method="linear")


def test_sign_convention_better_test_is_negative():
    # The test reaches each PSNR with 20% fewer bits: -20%, and more dB at equal rate.
    res = bjontegaard(RATE, PSNR, RATE * 0.8, PSNR)
    assert res.bd_rate == pytest.approx(-20.0) and res.bd_psnr > 0


# -- a rate window and the quality at one rate ---------------------------------------------------------------
WIDE_PSNR = np.arange(24.0, 46.0, 2.0)  # 11 points, rates e^-0.6 .. e^1.4 (0.55 .. 4.06)
WIDE_RATE = np.exp((WIDE_PSNR - 30.0) / 10.0)


def test_rate_window_keeps_the_inside_and_the_nearest_point_outside_on_each_side():
    rates = [3.5, 0.5, 1.0, 2.0, 0.8, 2.9, 4.0]  # unsorted on purpose
    quality = [r * 10 for r in rates]
    r, q = rate_window(rates, quality, (1.0, 3.0))
    assert r == [0.8, 1.0, 2.0, 2.9, 3.5] and q == [8.0, 10.0, 20.0, 29.0, 35.0]
    assert rate_window([1.5, 2.5], [1, 2], (1.0, 3.0)) == ([1.5, 2.5], [1, 2])  # nothing outside: nothing added
    assert rate_window([0.1, 0.2, 5.0], [1, 2, 3], (1.0, 3.0)) == ([0.2, 5.0], [2, 3])  # no point inside
    with pytest.raises(ValueError, match="rate window"):
        rate_window([1.0], [1.0], (3.0, 1.0))


def test_bd_over_a_window_of_known_curves():
    # A test curve that needs 20% fewer bits than the anchor from 0.97 bpp up and 70% fewer below: its
    # window (1-3 bpp, with 0.977 and 3.24 the nearest outside) and the anchor's follow the -20% law, so
    # the delta over the window is -20% exactly; over the whole curves it is something else.
    factor = np.where(WIDE_PSNR >= 32.0, 0.8, 0.3)
    test_rate = WIDE_RATE * factor
    res = bjontegaard(WIDE_RATE, WIDE_PSNR, test_rate, WIDE_PSNR, window=(1.0, 3.0))
    assert res.window == (1.0, 3.0) and res.method == "cubic"
    assert res.bd_rate == pytest.approx(-20.0, abs=1e-9)
    assert res.bd_psnr == pytest.approx(10.0 * math.log(1 / 0.8), abs=1e-9)  # 10 dB per e of rate
    whole = bjontegaard(WIDE_RATE, WIDE_PSNR, test_rate, WIDE_PSNR)
    assert whole.window is None and abs(whole.bd_rate - (-20.0)) > 1.0


def test_psnr_at_interpolates_linearly_between_the_points_around_it():
    assert psnr_at([1.0, 3.0, 2.0], [30.0, 34.0, 31.0], 2.0) == 31.0
    assert psnr_at([1.0, 3.0, 2.0], [30.0, 34.0, 31.0], 2.5) == pytest.approx(32.5)
    assert psnr_at([1.0, 3.0], [30.0, 34.0], 1.0) == 30.0 and psnr_at([1.0, 3.0], [30.0, 34.0], 3.0) == 34.0
    assert psnr_at([1.0, 3.0], [30.0, 34.0], 0.9) is None and psnr_at([1.0, 3.0], [30.0, 34.0], 3.1) is None
    assert psnr_at([], [], 2.0) is None
    assert psnr_at(WIDE_RATE, WIDE_PSNR, 2.0) == pytest.approx(float(np.interp(2.0, WIDE_RATE, WIDE_PSNR)), abs=1e-12)
