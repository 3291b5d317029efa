"""Calibration of the behaviour models against the real data in ``../shared/datasets``.

An evaluation command, never run by the default tests: it re-derives the
numbers written as constants into ``simulators/models/*.py`` so anyone can
check or refresh them::

    python -m simulators.calibrate                     # all kinds, JSON to stdout
    python -m simulators.calibrate air --data ../shared/datasets
    python -m simulators.calibrate validate            # simulate and compare with the data

Each function returns a JSON-able dict; ``compare()`` puts the derived
values beside the constants the models use.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["calibrate_air", "calibrate_noise", "calibrate_road", "calibrate_bins", "default_data_dir", "main"]


def default_data_dir() -> Path:
    """``../shared/datasets`` relative to the repository root."""
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


# --------------------------------------------------------------------------- air
def calibrate_air(data: Path | None = None) -> dict:
    """PurpleAir PMS5003 vs EPA reference PM2.5, daily means 2021-2023.

    Returns the reference distribution (lognormal fit, lag-1 autocorrelation
    of log daily means within a sensor), the humidity response of the raw
    sensor, ``raw/ref = g0 * (1 + k * RH / (100 - RH))`` fitted by least
    squares on log ratios, and the sensor-to-sensor spread of the gain.
    """
    path = (data or default_data_dir()) / "air_quality" / "purpleair_vs_epa_aqs_daily_2021_2023.csv"
    rows = list(csv.DictReader(open(path, encoding="utf-8")))

    def col(k: str) -> np.ndarray:
        return np.array([float(r[k]) if r[k] not in ("", "NA") else np.nan for r in rows])

    ref, raw, rh = col("conc"), col("A_B_Avg"), col("humidity_a")
    sensor = np.array([r["sensor_index"] for r in rows])
    ok = np.isfinite(ref) & np.isfinite(raw) & np.isfinite(rh) & (ref > 2) & (raw > 0.5) & (rh < 99)
    lr = np.log(ref[np.isfinite(ref) & (ref > 0)])
    x = rh[ok] / (100 - rh[ok])
    y = raw[ok] / ref[ok]
    # fit log(y) = log(g0) + log(1 + k x) by a small grid over k
    best = None
    for k in np.linspace(0.0, 1.0, 201):
        r = np.log(y) - np.log1p(k * x)
        c = float(np.median(r))
        cost = float(np.mean(np.abs(r - c)))
        if best is None or cost < best[0]:
            best = (cost, float(k), math.exp(c))
    _, k, g0 = best
    resid = np.log(y) - np.log(g0) - np.log1p(k * x)
    per_sensor = []
    for s in np.unique(sensor[ok]):
        m = sensor[ok] == s
        if m.sum() >= 30:
            per_sensor.append(float(np.median(resid[m])))
    within = []
    for s in np.unique(sensor[ok]):
        m = sensor[ok] == s
        if m.sum() >= 30:
            within.extend((resid[m] - np.median(resid[m])).tolist())
    # lag-1 autocorrelation of log daily reference per sensor
    by: dict[str, list] = defaultdict(list)
    for r_, v in zip(rows, ref):
        if np.isfinite(v) and v > 0:
            by[r_["sensor_index"]].append((_dt.date.fromisoformat(r_["DAILY"]), math.log(v)))
    acs = []
    for lst in by.values():
        lst.sort()
        pairs = [(a[1], b[1]) for a, b in zip(lst, lst[1:]) if (b[0] - a[0]).days == 1]
        if len(pairs) > 30:
            arr = np.array(pairs)
            acs.append(float(np.corrcoef(arr[:, 0], arr[:, 1])[0, 1]))
    wd = defaultdict(list)
    for r_, v in zip(rows, ref):
        if np.isfinite(v):
            wd[_dt.date.fromisoformat(r_["DAILY"]).weekday()].append(v)
    wmean = np.array([np.mean(wd[d]) for d in range(7)])
    return {
        "source": str(path.name),
        "n_days": int(np.isfinite(ref).sum()),
        "n_sensors": int(len(np.unique(sensor))),
        "ref_pm25_percentiles": dict(zip(["p5", "p25", "p50", "p75", "p95", "p99"],
                                         np.percentile(ref[np.isfinite(ref)], [5, 25, 50, 75, 95, 99]).round(2).tolist())),
        "ref_log_mean": round(float(lr.mean()), 3),
        "ref_log_sd": round(float(lr.std()), 3),
        "ref_median": round(float(np.median(np.exp(lr))), 2),
        "ref_lag1_autocorr_log": round(float(np.median(acs)), 3),
        "weekday_factor_mon_sun": (wmean / wmean.mean()).round(3).tolist(),
        "pms_g0": round(g0, 3),
        "pms_k": round(k, 3),
        "pms_ratio_by_rh": {f"{lo}-{hi}": round(float(np.median(y[(rh[ok] >= lo) & (rh[ok] < hi)])), 3)
                            for lo, hi in ((0, 40), (40, 50), (50, 60), (60, 70), (70, 90))},
        "sensor_gain_log_sd": round(float(np.std(per_sensor)), 3),
        "daily_residual_log_sd": round(float(np.std(within)), 3),
        "rh_reported_percentiles": np.percentile(rh[np.isfinite(rh)], [5, 50, 95]).round(1).tolist(),
    }


# --------------------------------------------------------------------------- noise
def _madrid_rows(path: Path) -> list[dict]:
    txt = path.read_text(encoding="utf-8-sig")
    out = []
    for r in csv.reader(io.StringIO(txt), delimiter=";"):
        r = [x.strip() for x in r]
        if len(r) < 11:
            continue
        try:
            d = {"st": int(r[0]), "date": _dt.date(int(r[1]), int(r[2]), int(r[3])), "tipo": r[4]}
            vals = [float(x.replace(",", ".")) for x in r[5:11]]
        except ValueError:
            continue
        d.update(zip(("laeq", "l01", "l10", "l50", "l90", "l99"), vals))
        out.append(d)
    return out


def calibrate_noise(data: Path | None = None) -> dict:
    """Madrid municipal noise network, daily LAeq by period (D 7-19, E 19-23, N 23-7), 2020.

    Only days before the COVID-19 lockdown (2020-01-01 .. 2020-03-13) are
    used.  Stations are grouped by their median 24 h LAeq: below 50 dB
    (parks) are left out, 50-60 "residential", 60-65 "high_street", 65+
    "arterial".  Per group: median D/E/N levels, weekend day change,
    Friday/Saturday night change, L10/L90 offsets from LAeq, day-to-day SD.
    """
    path = (data or default_data_dir()) / "noise" / "madrid_noise_daily_2020.csv"
    rows = [r for r in _madrid_rows(path) if r["date"] < _dt.date(2020, 3, 14) and r["laeq"] > 20]
    st: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        st[r["st"]][r["tipo"]].append(r)
    groups: dict[str, list[int]] = defaultdict(list)
    for s, dd in st.items():
        t = float(np.median([x["laeq"] for x in dd["T"]]))
        g = None if t < 50 else "residential" if t < 60 else "high_street" if t < 65 else "arterial"
        if g:
            groups[g].append(s)
    out: dict = {"source": path.name, "period": "2020-01-01..2020-03-13", "groups": {}}
    for g, sts in sorted(groups.items()):
        def med(tipo: str, f=lambda x: x["laeq"], days=None) -> float:
            v = [f(x) for s in sts for x in st[s][tipo] if days is None or x["date"].weekday() in days]
            return round(float(np.median(v)), 2)
        D, E, N = med("D"), med("E"), med("N")
        wd_D, we_D = med("D", days=(0, 1, 2, 3, 4)), med("D", days=(5, 6))
        n_wk, n_fs = med("N", days=(0, 1, 2, 3, 6)), med("N", days=(4, 5))
        day_sd = float(np.median([np.std([x["laeq"] for x in st[s]["T"]]) for s in sts]))
        out["groups"][g] = {
            "stations": sorted(sts), "D": D, "E": E, "N": N,
            "weekend_day_delta": round(we_D - wd_D, 2), "fri_sat_night_delta": round(n_fs - n_wk, 2),
            "l10_day": med("D", lambda x: x["l10"] - x["laeq"]), "l90_day": med("D", lambda x: x["l90"] - x["laeq"]),
            "l10_night": med("N", lambda x: x["l10"] - x["laeq"]), "l90_night": med("N", lambda x: x["l90"] - x["laeq"]),
            "l01_day": med("D", lambda x: x["l01"] - x["laeq"]),
            "day_to_day_sd": round(day_sd, 2),
            "site_sd": round(float(np.std([np.median([x["laeq"] for x in st[s]["T"]]) for s in sts])), 2),
        }
    return out


# --------------------------------------------------------------------------- road
def calibrate_road(data: Path | None = None, threshold: float = 4.0) -> dict:
    """Vertical-acceleration clips (50 Hz) per class: bump shape distributions.

    For each clip: peak |a_z - median| (m/s²) and the span between the first
    and last sample above 30 % of that peak (s); lognormal fits per class;
    for the road-surface classes, the rate of separate exceedances of
    ``threshold`` per second of driving (false bump candidates) and the mean
    excess of their peaks over the threshold.
    """
    root = (data or default_data_dir()) / "road_surface"
    out: dict = {"source": "road_surface (González et al. 2017)", "threshold": threshold, "classes": {}}
    for cls in ("asphalt_bumps", "metal_bumps", "potholes", "regular_road", "worn_out_road"):
        peaks, spans, secs, events, excess = [], [], 0.0, 0, []
        for f in sorted((root / cls).glob("*.csv")):
            x = np.loadtxt(f, skiprows=1)
            dev = np.abs(x - np.median(x))
            peaks.append(float(dev.max()))
            idx = np.nonzero(dev > 0.3 * dev.max())[0]
            spans.append((idx[-1] - idx[0] + 1) / 50.0)
            secs += len(x) / 50.0
            above = np.nonzero(dev > threshold)[0]
            if len(above):
                splits = np.split(above, np.nonzero(np.diff(above) > 25)[0] + 1)
                events += len(splits)
                excess.extend(float(dev[s].max() - threshold) for s in splits)
        lp, ls = np.log(peaks), np.log(spans)
        out["classes"][cls] = {
            "clips": len(peaks),
            "peak_median": round(float(np.median(peaks)), 2),
            "peak_log_mu": round(float(lp.mean()), 3), "peak_log_sd": round(float(lp.std()), 3),
            "span_median_s": round(float(np.median(spans)), 2),
            "span_log_mu": round(float(ls.mean()), 3), "span_log_sd": round(float(ls.std()), 3),
            "detect_frac": round(float(np.mean(np.array(peaks) > threshold)), 3),
            "exceedances_per_s": round(events / secs, 4),
            "excess_mean": round(float(np.mean(excess)), 3) if excess else None,
        }
    return out


# --------------------------------------------------------------------------- bins
def calibrate_bins(data: Path | None = None) -> dict:
    """Edinburgh Enevo litter-bin collections (Jun-Aug 2016).

    True fill = reported % x 0.8 (sheet note).  Per site, fill gained per
    day between consecutive collections (intervals 0.2-14 days); lognormal fit
    of the per-site median; day-of-week factors by least squares of fill
    gained on the days of the week each interval covers; monthly medians.
    """
    path = (data or default_data_dir()) / "smart_bins" / "edinburgh_enevo_bin_collections_2016.csv"
    rows = list(csv.DictReader(open(path, encoding="utf-8-sig")))
    keys = list(rows[0].keys())
    k_time, k_before = keys[8], keys[10]
    by: dict[str, list] = defaultdict(list)
    for r in rows:
        t = _dt.datetime.fromisoformat(r[k_time])
        by[r["Site"]].append((t, float(r[k_before]) * 0.008, float(r["Fill level after"]) * 0.008))
    site_rates, months = [], defaultdict(list)
    X, Y = [], []
    intervals = []
    for lst in by.values():
        lst.sort()
        rates = []
        for (t0, _, a0), (t1, b1, _) in zip(lst, lst[1:]):
            d = (t1 - t0).total_seconds() / 86400
            if not 0.2 <= d <= 14:
                continue
            intervals.append(d)
            r = (b1 - a0) / d
            rates.append(r)
            months[t1.month].append(r)
            cov = np.zeros(7)
            t = t0
            while t < t1:
                nxt = min(t1, _dt.datetime.combine(t.date() + _dt.timedelta(days=1), _dt.time()))
                cov[t.weekday()] += (nxt - t).total_seconds() / 86400
                t = nxt
            X.append((cov, len(site_rates)))
            Y.append(b1 - a0)
        if len(rates) >= 5:
            site_rates.append(float(np.median(rates)))
        else:
            site_rates.append(float("nan"))
    sr = np.array(site_rates)
    A = np.array([c * sr[s] for c, s in X])
    y = np.array(Y)
    good = np.isfinite(A).all(axis=1)
    w, *_ = np.linalg.lstsq(A[good], y[good], rcond=None)
    lr = np.log(sr[np.isfinite(sr) & (sr > 0)])
    fb = np.array([float(r[k_before]) for r in rows])
    return {
        "source": path.name,
        "collections": len(rows), "sites": len(by),
        "site_rate_log_mu": round(float(lr.mean()), 3), "site_rate_log_sd": round(float(lr.std()), 3),
        "site_rate_median": round(float(np.exp(lr.mean())), 3),
        "interval_days_median": round(float(np.median(intervals)), 2),
        "fill_before_median_true": round(float(np.median(fb)) * 0.008, 3),
        "full_at_collection_frac": round(float(np.mean(fb >= 100)), 3),
        "dow_factor_mon_sun": (w / w.mean()).round(3).tolist(),
        "month_median_rate": {int(m): round(float(np.median(v)), 3) for m, v in sorted(months.items())},
    }


def validate(data: Path | None = None, seed: int = 20260101) -> dict:
    """Run the simulators and compare their output with the datasets (evaluation, ~1 min).

    * bins: street litter bins in July (the Edinburgh season): fill before
      collection, capped at the sensor's "full" mark (0.8) as in the
      Edinburgh sheet - median and share at the cap;
    * air: 30 days of 30 sites without episodes: daily-mean raw/true ratio by
      reported-RH band (vs PurpleAir/EPA), daily true PM2.5 at background
      sites (median, log-sd);
    * noise: per site type, the median over site-days of daily D/E/N LAeq (vs
      the Madrid group medians);
    * road: hits on features at the simulated speeds: median peak of
      detected events and detection share per class (vs the clips).
    """
    from simulators.context import make_context
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.models.air import AirModel
    from simulators.models.noise import NoiseModel
    from simulators.models.road import RoadModel
    from simulators.scenario import load_scenario
    from simulators.timebase import DAY_MS, HOUR_MS, parse_start

    out: dict = {}
    # bins ------------------------------------------------------------------------
    ref_b = calibrate_bins(data)
    sc = load_scenario()
    fl = build_fleet(sc, counts={"bins": 2500, "air": 0, "noise": 0, "road": 0}, seed=seed)
    sim = Simulation(fl, start_ms=parse_start("2026-07-06"), days=14, seed=seed)
    street = {d.asset.asset_id for d in fl.devices if d.asset.bin_kind == "street"}
    fb = np.array([e.details["fill_before"] for b in sim.batches() for e in b.truth
                   if e.kind == "collection" and e.entity in street])
    capped = np.minimum(fb, 0.8)
    out["bins"] = {"street_collections": int(len(fb)),
                   "sim_fill_before_median_capped": round(float(np.median(capped)), 3),
                   "sim_share_at_full_mark": round(float(np.mean(fb >= 0.8)), 3),
                   "edinburgh_fill_before_median": ref_b["fill_before_median_true"],
                   "edinburgh_share_at_full_mark": ref_b["full_at_collection_frac"]}
    # air -------------------------------------------------------------------------
    ref_a = calibrate_air(data)
    sc = load_scenario()
    sc.air.regional_episodes_per_month = sc.air.local_episodes_per_site_month = 0.0
    sc.air.drift_per_sensor_year = sc.air.failure_per_sensor_year = 0.0
    fl = build_fleet(sc, counts={"bins": 0, "air": 30, "noise": 0, "road": 0}, seed=seed)
    t0 = parse_start("2026-04-01")
    ctx = make_context(fl, t0, 30, seed)
    am = AirModel(fl.devices, sc.air, ctx)
    am.trace = []
    am.advance(t0, ctx.end_ms)
    T = np.concatenate([x[0] for x in am.trace])
    true = np.concatenate([x[1] for x in am.trace])
    raw = np.concatenate([x[2] for x in am.trace])
    rh = np.concatenate([x[3] for x in am.trace])
    site = np.tile(np.arange(am.n), len(am.trace))
    day = T // DAY_MS
    keys = site * 100000 + day
    uniq, inv = np.unique(keys, return_inverse=True)
    cnt = np.bincount(inv)
    dm_true, dm_raw, dm_rh = (np.bincount(inv, w) / cnt for w in (true, raw, rh))
    dsite = uniq // 100000
    ratio = dm_raw / dm_true
    bands = {}
    for lo, hi in ((0, 40), (40, 50), (50, 60), (60, 70), (70, 90)):
        m = (dm_rh >= lo) & (dm_rh < hi)
        if m.sum() >= 5:
            bands[f"{lo}-{hi}"] = round(float(np.median(ratio[m])), 3)
    bg = np.array([fl.devices[i].asset.site_type == "background" for i in range(len(fl.devices))])
    bgd = dm_true[bg[dsite]]
    out["air"] = {"site_days": int(len(uniq)), "sim_ratio_by_rh": bands, "ref_ratio_by_rh": ref_a["pms_ratio_by_rh"],
                  "sim_background_daily_true_median": round(float(np.median(bgd)), 2),
                  "sim_background_daily_true_log_sd": round(float(np.std(np.log(bgd))), 3),
                  "ref_daily_median": ref_a["ref_median"], "ref_daily_log_sd": ref_a["ref_log_sd"]}
    # noise -----------------------------------------------------------------------
    ref_n = calibrate_noise(data)
    sc = load_scenario()
    sc.noise.party_per_site_week = sc.noise.construction_per_site_month = 0.0
    fl = build_fleet(sc, counts={"bins": 0, "air": 0, "noise": 300, "road": 0}, seed=seed)
    t0 = parse_start("2026-01-12")
    ctx = make_context(fl, t0, 21, seed)
    nm = NoiseModel(fl.devices, sc.noise, ctx)
    ups, _ = nm.advance(t0, ctx.end_ms)
    per: dict = defaultdict(list)
    for u in ups:
        ty = fl.devices[u.dev].asset.site_type
        for name, q, t in u.records:
            if name == "laeq":
                mid = t - nm.P // 2
                h = ctx.clock.hour(mid)
                loc_day = ctx.clock.local_day(mid - 7 * HOUR_MS)       # night belongs to the evening's day
                period = "D" if 7 <= h < 19 else "E" if 19 <= h < 23 else "N"
                per[(ty, u.dev, loc_day, period)].append(q / 10.0)
    agg: dict = defaultdict(list)
    for (ty, _, _, period), v in per.items():
        if len(v) >= 36:
            agg[(ty, period)].append(10 * np.log10(np.mean(10 ** (np.array(v) / 10))))
    out["noise"] = {ty: {per_: {"sim": round(float(np.median(agg[(ty, per_)])), 1),
                                "madrid": ref_n["groups"][ty][per_]} for per_ in ("D", "E", "N")}
                    for ty in ("residential", "high_street", "arterial")}
    # road ------------------------------------------------------------------------
    ref_r = calibrate_road(data)
    sc = load_scenario()
    fl = build_fleet(sc, counts={"bins": 0, "air": 0, "noise": 0, "road": 6}, seed=seed)
    t0 = parse_start("2026-01-05")
    ctx = make_context(fl, t0, 5, seed)
    rm = RoadModel(fl.devices, sc.road, ctx)
    rm.trace = []
    rm.advance(t0, ctx.end_ms)
    cls = {"pothole": "potholes", "casting": "metal_bumps", "speed_hump": "asphalt_bumps"}
    road = {}
    for kind, rc in cls.items():
        hits = [x for x in rm.trace if x[0] == kind]
        det = [x for x in hits if x[4]]
        road[kind] = {"hits": len(hits), "sim_detect_frac": round(len(det) / max(1, len(hits)), 3),
                      "clip_detect_frac": ref_r["classes"][rc]["detect_frac"],
                      "sim_peak_median_all": round(float(np.median([x[1] for x in hits])), 2) if hits else None,
                      "clip_peak_median": ref_r["classes"][rc]["peak_median"],
                      "sim_speed_median_kmh": round(float(np.median([x[3] for x in hits]) * 3.6), 1) if hits else None,
                      "sim_span_median_s": round(float(np.median([x[2] for x in hits])), 2) if hits else None,
                      "clip_span_median_s": ref_r["classes"][rc]["span_median_s"]}
    out["road"] = road
    return out


def compare(data: Path | None = None) -> dict:
    """Derived values next to the constants in the models."""
    from simulators.models import air, noise, road
    from simulators.models.bins import STREET_DOW, StreetBinParams

    res = {"air": calibrate_air(data), "noise": calibrate_noise(data), "road": calibrate_road(data),
           "bins": calibrate_bins(data)}
    sp = StreetBinParams()
    ap = air.AirParams()
    res["constants_in_code"] = {
        "bins": {"rate_median": sp.rate_median, "rate_sigma": sp.rate_sigma, "STREET_DOW": list(STREET_DOW)},
        "air": {"background_median": ap.background_median, "background_log_sd": ap.background_log_sd,
                "background_rho": ap.background_rho, "pms_g0": ap.pms_g0, "pms_k": ap.pms_k,
                "sensor_gain_log_sd": ap.sensor_gain_log_sd},
        "noise": {k: vars(v) if hasattr(v, "__dict__") else v for k, v in noise.SITE_LEVELS.items()},
        "road": {k: list(v) for k, v in road.SHAPES.items()},
    }
    return res


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    data = None
    if "--data" in args:
        i = args.index("--data")
        data = Path(args[i + 1])
        del args[i:i + 2]
    what = args[0] if args else "all"
    fn = {"air": calibrate_air, "noise": calibrate_noise, "road": calibrate_road, "bins": calibrate_bins,
          "all": compare, "validate": validate}[what]
    print(json.dumps(fn(data), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
