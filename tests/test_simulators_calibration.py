"""Simulated output against the real datasets (opt-in evaluation, never part of the default run).

Run with ``STREETSENSE_DATASETS=../shared/datasets pytest tests/test_simulators_calibration.py``
(about 30 s).  The default run skips it: a fresh clone has no ``../shared``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = os.environ.get("STREETSENSE_DATASETS")
pytestmark = pytest.mark.skipif(not DATA, reason="set STREETSENSE_DATASETS to the datasets folder to run")


@pytest.fixture(scope="module")
def report():
    from simulators.calibrate import validate

    return validate(Path(DATA))


def test_constants_are_what_the_data_give():
    from simulators.calibrate import calibrate_air, calibrate_bins, calibrate_noise, calibrate_road
    from simulators.models.air import AirParams
    from simulators.models.bins import STREET_DOW, StreetBinParams
    from simulators.models.noise import SITE_LEVELS
    from simulators.models.road import BACKGROUND, SHAPES

    d = Path(DATA)
    a, ap = calibrate_air(d), AirParams()
    assert (a["ref_median"], a["ref_log_sd"], a["ref_lag1_autocorr_log"], a["pms_g0"]) == \
        (ap.background_median, ap.background_log_sd, ap.background_rho, ap.pms_g0)
    b, sp = calibrate_bins(d), StreetBinParams()
    assert (b["site_rate_median"], b["site_rate_log_sd"]) == (sp.rate_median, sp.rate_sigma)
    assert list(STREET_DOW) == b["dow_factor_mon_sun"]
    n = calibrate_noise(d)["groups"]
    for ty, lv in SITE_LEVELS.items():
        g = n[ty]
        assert (lv.D, lv.E, lv.N, lv.l10_day, lv.l90_day) == (g["D"], g["E"], g["N"], g["l10_day"], g["l90_day"])
    r = calibrate_road(d)["classes"]
    for kind, cls in (("pothole", "potholes"), ("casting", "metal_bumps"), ("speed_hump", "asphalt_bumps")):
        assert SHAPES[kind][:4] == (r[cls]["peak_log_mu"], r[cls]["peak_log_sd"], r[cls]["span_log_mu"],
                                    r[cls]["span_log_sd"])
    assert BACKGROUND["good"] == (r["regular_road"]["exceedances_per_s"], r["regular_road"]["excess_mean"])
    assert BACKGROUND["worn"] == (r["worn_out_road"]["exceedances_per_s"], r["worn_out_road"]["excess_mean"])


def test_noise_levels_within_one_db(report):
    for ty, per in report["noise"].items():
        for p, v in per.items():
            assert abs(v["sim"] - v["madrid"]) <= 1.0, (ty, p, v)


def test_air_humidity_response_and_background(report):
    a = report["air"]
    for band in ("60-70", "70-90"):
        assert abs(a["sim_ratio_by_rh"][band] / a["ref_ratio_by_rh"][band] - 1) < 0.1, band
    assert abs(a["sim_background_daily_true_log_sd"] - a["ref_daily_log_sd"]) < 0.1
    assert 0.7 < a["sim_background_daily_true_median"] / a["ref_daily_median"] < 1.4


def test_road_bump_shapes(report):
    for kind, r in report["road"].items():
        assert abs(r["sim_detect_frac"] - r["clip_detect_frac"]) < 0.15, kind
        assert abs(r["sim_span_median_s"] / r["clip_span_median_s"] - 1) < 0.15, kind
        assert abs(r["sim_peak_median_all"] / r["clip_peak_median"] - 1) < 0.2, kind


def test_street_bins_fill_before_collection(report):
    b = report["bins"]
    assert abs(b["sim_share_at_full_mark"] - b["edinburgh_share_at_full_mark"]) < 0.06
    assert 0.4 < b["sim_fill_before_median_capped"] <= b["edinburgh_fill_before_median"] + 0.05
