"""Simulators: event rates match the scenario, and labelled events show in the readings."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from contract import v1
from contract.decode import PackError, decode
from simulators.engine import Simulation
from simulators.fleet import build_fleet
from simulators.geo import haversine_m
from simulators.scenario import load_scenario
from simulators.timebase import DAY_MS, HOUR_MS, MIN_MS, parse_start

START = parse_start("2026-03-02")        # a Monday
DAYS = 14


def _poisson_ok(obs: float, exp: float, k: float = 4.0, low: float = 1.0) -> bool:
    """obs within k sigma of a Poisson expectation (``low`` scales the lower bound for boundary losses)."""
    sd = math.sqrt(max(exp, 1.0))
    return low * exp - k * sd - 1 <= obs <= exp + k * sd + 1


@pytest.fixture(scope="module")
def rated():
    """Two weeks of a small town with raised event rates."""
    sc = load_scenario("tiny")
    e = sc.bins.events
    e.not_put_out, e.not_put_out_repeat = 0.10, 0.30
    e.missed_collection, e.missed_street = 0.05, 0.0
    e.fire_per_bin_year, e.lid_open_per_bin_day, e.knocked_over_per_bin_day = 1.0, 0.005, 0.003
    e.sensor_stuck_per_bin_year = e.sensor_noisy_per_bin_year = 2.0
    sc.air.local_episodes_per_site_month = 2.0
    sc.air.drift_per_sensor_year = sc.air.failure_per_sensor_year = 5.0
    sc.noise.party_per_site_week, sc.noise.construction_per_site_month = 0.5, 2.0
    sc.road.new_potholes_per_day = 1.0
    nd = {"duplicate_rate": 0.01, "out_of_order_rate": 0.005, "malformed_rate": 0.005,
          "offline_per_device_year": 10.0, "dead_battery_per_device_year": 3.0, "clock_fault_per_device_year": 2.0}
    fleet = build_fleet(sc, counts={"bins": 600, "air": 20, "noise": 30, "road": 2})
    sim = Simulation(fleet, start_ms=START, days=DAYS, node=nd)
    msgs, truth = [], []
    for b in sim.batches():
        msgs.extend(b.messages)
        truth.extend(b.truth)
    return sc, fleet, sim, msgs, truth


def test_bin_event_rates_match_the_scenario(rated):
    sc, fleet, sim, msgs, truth = rated
    e = sc.bins.events
    n_bins = len(fleet.by_kind("bin_fill"))
    k = collections.Counter(t.kind for t in truth)
    for kind, per_day in (("fire", e.fire_per_bin_year / 365), ("lid_open", e.lid_open_per_bin_day),
                          ("knocked_over", e.knocked_over_per_bin_day),
                          ("sensor_stuck", e.sensor_stuck_per_bin_year / 365),
                          ("sensor_noisy", e.sensor_noisy_per_bin_year / 365)):
        exp = per_day * n_bins * DAYS
        assert exp > 15, kind
        assert _poisson_ok(k[kind], exp), (kind, k[kind], exp)
    # household did not put the bin out: streak starts per decision; a second round with p_repeat
    starts = k["not_put_out"] + k["not_put_out_2"]
    house = {d.asset.asset_id for d in fleet.by_kind("bin_fill") if d.asset.bin_kind == "household"}
    due = (sum(1 for t in truth if t.kind in ("collection", "missed_collection") and t.entity in house)
           + k["not_put_out"] + sum(len(t.details["scheduled"]) for t in truth if t.kind == "not_put_out_2"))
    decisions = due - sum(len(t.details["scheduled"]) - 1 for t in truth if t.kind == "not_put_out_2")
    exp = e.not_put_out * decisions
    assert decisions > 500 and abs(starts - exp) <= 4 * math.sqrt(exp * (1 - e.not_put_out)) + 2, (starts, exp)
    frac2 = k["not_put_out_2"] / starts
    assert abs(frac2 - e.not_put_out_repeat) < 4 * math.sqrt(0.3 * 0.7 / starts) + 0.02
    # the crew misses bins that are out
    served = k["collection"] + k["missed_collection"]
    exp = e.missed_collection * served
    assert abs(k["missed_collection"] - exp) <= 4 * math.sqrt(exp) + 2, (k["missed_collection"], exp)


def test_device_and_delivery_fault_rates_match(rated):
    sc, fleet, sim, msgs, truth = rated
    n = len(fleet.devices)
    sh = sim.shell
    p = sim.node_params
    packs = sh.stats["packs"]
    k = collections.Counter(t.kind for t in truth)
    for kind, rate in (("duplicate", p.duplicate_rate), ("malformed", p.malformed_rate)):
        exp = rate * packs
        assert _poisson_ok(k[kind], exp), (kind, k[kind], exp)
    # out-of-order is drawn only for packs that were not made malformed
    exp = p.out_of_order_rate * packs * (1 - p.malformed_rate)
    assert _poisson_ok(k["out_of_order"], exp), (k["out_of_order"], exp)
    planned_outages = sum(len(x) for x in sh.offline)
    exp = p.offline_per_device_year / 365 * n * DAYS
    assert _poisson_ok(planned_outages, exp, low=0.85), (planned_outages, exp)      # overlapping ones are skipped
    assert 0 < k["offline_burst"] <= planned_outages
    onsets = sum(1 for d in sh.decline if d < math.inf)
    assert _poisson_ok(onsets, p.dead_battery_per_device_year / 365 * n * DAYS)
    assert _poisson_ok(k["clock_drift"], p.clock_fault_per_device_year / 365 * n * DAYS)


def test_air_noise_road_event_rates_match(rated):
    sc, fleet, sim, msgs, truth = rated
    k = collections.Counter((t.kind, t.details.get("scope")) for t in truth)
    n_air = len(fleet.by_kind("air"))
    assert _poisson_ok(k[("air_episode", "local")], sc.air.local_episodes_per_site_month / 30 * n_air * DAYS)
    kk = collections.Counter(t.kind for t in truth)
    for kind, rate in (("sensor_drift", sc.air.drift_per_sensor_year), ("sensor_failure", sc.air.failure_per_sensor_year)):
        assert _poisson_ok(kk[kind], rate / 365 * n_air * DAYS, low=0.8), kind
    noise = fleet.by_kind("noise")
    n_party_sites = sum(1 for d in noise if d.asset.site_type in sc.noise.party_sites)
    exp = sc.noise.party_per_site_week / 7 * n_party_sites * DAYS
    assert _poisson_ok(kk["noise_party"], exp, low=0.75), (kk["noise_party"], exp)   # a few shift past the end
    exp = sc.noise.construction_per_site_month / 30 * len(noise) * DAYS
    assert _poisson_ok(kk["construction_out_of_hours"], exp, low=0.9), (kk["construction_out_of_hours"], exp)
    # road features: castings = 8 x potholes at the start, potholes ~ density x km, new ones at their rate
    g = fleet.graph
    initial = [t for t in truth if t.kind == "pothole" and not t.details["formed_during_run"]]
    new = [t for t in truth if t.kind == "pothole" and t.details["formed_during_run"]]
    assert kk["casting"] == round(len(initial) * sc.road.castings_per_pothole)
    assert _poisson_ok(len(initial), sc.road.potholes_per_km * g.total_length_km)
    assert _poisson_ok(len(new), sc.road.new_potholes_per_day * DAYS)
    assert all(sim.start_ms < t.start_ms < sim.end_ms for t in new)


# ---- labelled events are visible in the readings -------------------------------------

@pytest.fixture(scope="module")
def series(rated):
    sc, fleet, sim, msgs, truth = rated
    kinds = {d.device_id: d.kind for d in fleet.devices}
    out: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
    sent: dict[str, list[int]] = collections.defaultdict(list)
    for m in msgs:
        _, dev, ch = v1.parse_topic(m.topic)
        if ch != v1.UP:
            continue
        sent[dev].append(m.send_ms)
        try:
            pack = decode(m.payload, device_id=dev, received_ms=m.send_ms, kind=kinds[dev])
        except PackError:
            continue
        for r in pack.readings:
            out[(dev, r.metric)].append((r.time_ms, r.value))
    for v in out.values():
        v.sort()
    return out, sent


def _window(s, dev, metric, a, b):
    return [v for t, v in s.get((dev, metric), []) if a <= t <= b]


def test_collections_empty_the_bin_and_tilt_it(rated, series):
    _, fleet, _, _, truth = rated
    s, _ = series
    drops, tilts = [], []
    for e in truth:
        if e.kind != "collection" or e.details["fill_before"] < 0.3:
            continue
        dev = e.details["device_id"]
        before = _window(s, dev, "fill", e.start_ms - 2 * HOUR_MS, e.start_ms)
        after = _window(s, dev, "fill", e.start_ms, e.start_ms + 2 * HOUR_MS)
        if before and after:
            drops.append(before[-1] - after[0])
        if e.details["bin_kind"] == "household":
            tilts.append(max(_window(s, dev, "tilt", e.start_ms - MIN_MS, e.start_ms + MIN_MS), default=0))
    assert len(drops) > 50 and np.median(drops) > 0.25
    assert len(tilts) > 30 and np.mean(np.array(tilts) >= 120) > 0.9


def test_missed_and_not_put_out_bins_stay_full(rated, series):
    _, _, _, _, truth = rated
    s, _ = series
    faults = collections.defaultdict(list)
    for e in truth:
        if e.kind in ("sensor_noisy", "sensor_stuck", "lid_open", "knocked_over", "fire"):
            faults[e.details["device_id"]].append((e.start_ms, e.end_ms or 1 << 62))
    checked = 0
    for e in truth:
        if e.kind not in ("missed_collection", "not_put_out"):
            continue
        dev = e.details["device_id"]
        a, b = e.start_ms - 2 * HOUR_MS, e.start_ms + 3 * HOUR_MS
        if any(x < b and y > a for x, y in faults[dev]):
            continue
        before = _window(s, dev, "fill", a, e.start_ms)
        after = _window(s, dev, "fill", e.start_ms, b)
        if len(before) and len(after) and before[-1] > 0.2:
            checked += 1
            assert np.median(after) > before[-1] - 0.15, (e, before[-1], after)
    assert checked > 10


def _dead(truth) -> dict[str, int]:
    return {e.entity: e.start_ms for e in truth if e.kind == "dead_battery"}


def test_incidents_show_in_the_readings(rated, series):
    _, _, _, _, truth = rated
    s, _ = series
    dead = _dead(truth)
    seen = collections.Counter()
    for e in truth:
        dev = e.details.get("device_id")
        if e.end_ms is None or dead.get(dev, 1 << 62) < e.end_ms:
            continue
        if e.kind == "fire":
            temps = _window(s, dev, "temp", e.start_ms, e.end_ms)
            if temps:
                assert max(temps) > 60
                seen["fire"] += 1
        elif e.kind in ("lid_open", "knocked_over"):
            lo, hi = (95, 120) if e.kind == "lid_open" else (80, 95)
            tilt = _window(s, dev, "tilt", e.start_ms + 1, e.end_ms - 1)
            if tilt:
                assert any(lo <= v <= hi for v in tilt), (e.kind, tilt)
                seen[e.kind] += 1
        elif e.kind == "sensor_stuck":
            d = _window(s, dev, "distance", e.start_ms + HOUR_MS, e.end_ms - 1)
            if len(d) >= 3:
                assert len(set(d)) == 1
                seen["stuck"] += 1
    assert seen["fire"] >= 5 and seen["lid_open"] >= 10 and seen["knocked_over"] >= 5 and seen["stuck"] >= 5


def test_dead_batteries_and_outages_silence_devices(rated, series):
    _, _, sim, _, truth = rated
    s, sent = series
    late = {(e.details["topic"], e.details["send_ms"]) for e in truth if e.kind == "out_of_order"}
    sent = {dev: [t for t in ts if (v1.topic("tiny-town", dev, "up"), t) not in late] for dev, ts in sent.items()}
    n_dead = n_burst = 0
    for e in truth:
        dev = e.details.get("device_id")
        if e.kind == "dead_battery":
            assert not [t for t in sent[dev] if t > e.start_ms + 5 * MIN_MS]
            n_dead += 1
        elif e.kind == "offline_burst" and e.end_ms is not None:
            during = [t for t in sent[dev] if e.start_ms + 5 * MIN_MS < t < e.details["reconnect_ms"]]
            assert not during, e
            burst = [t for t in sent[dev] if e.details["reconnect_ms"] <= t < e.details["reconnect_ms"] + 60_000]
            assert len(burst) >= min(2, e.details["packs"] - e.details["dropped"])
            n_burst += 1
    assert n_dead >= 3 and n_burst >= 10


def test_noise_parties_and_air_episodes_raise_levels(rated, series):
    _, fleet, _, _, truth = rated
    s, _ = series
    lifts = []
    for e in truth:
        dev = e.details.get("device_id")
        if e.kind == "noise_party":
            during = _window(s, dev, "l90", e.start_ms + 10 * MIN_MS, e.end_ms)
            base = [v for t, v in s[(dev, "l90")] if not e.start_ms - DAY_MS // 2 <= t <= e.end_ms + DAY_MS // 2]
            if during and base:
                lifts.append(np.median(during) - np.median(base))
    assert len(lifts) >= 5 and np.median(lifts) > 5
    ratios = []
    for e in truth:
        if e.kind == "air_episode" and e.details["scope"] == "local" and e.end_ms - e.start_ms > 2 * HOUR_MS:
            dev = e.details["device_id"]
            mid = (e.start_ms + e.end_ms) // 2
            during = _window(s, dev, "pm25", mid - 20 * MIN_MS, mid + 20 * MIN_MS)
            base = _window(s, dev, "pm25", e.start_ms - DAY_MS, e.start_ms - 6 * HOUR_MS)
            if during and base:
                ratios.append(np.median(during) / max(0.5, np.median(base)))
    assert len(ratios) >= 3 and np.median(ratios) > 1.8


def test_road_bumps_cluster_at_features(rated, series):
    _, fleet, _, _, truth = rated
    s, _ = series
    pts = []
    for d in fleet.by_kind("road"):
        lat = s[(d.device_id, "lat")]
        lon = dict(s[(d.device_id, "lon")])
        pts += [(la, lon[t]) for t, la in lat if t in lon]
    assert len(pts) > 500
    pa = np.array(pts)
    near = collections.Counter()
    feats = [e for e in truth if e.kind in ("pothole", "casting", "speed_hump")]
    coslat = math.cos(math.radians(pa[0, 0]))
    for f in feats:
        dy = (pa[:, 0] - f.details["lat"]) * 111_320
        dx = (pa[:, 1] - f.details["lon"]) * 111_320 * coslat
        near[f.kind] += int((np.hypot(dx, dy) < 15).sum())
    # every kind of feature collects detections; speed humps (hit by every wheel, slow) most per feature
    per = {k: near[k] / max(1, sum(1 for f in feats if f.kind == k)) for k in ("pothole", "casting", "speed_hump")}
    assert all(v > 0 for v in per.values()), per
    assert per["speed_hump"] > per["casting"]
    # GPS noise: reported positions are not exactly on the features
    f = next(x for x in feats if x.kind == "speed_hump")
    d = [haversine_m(la, lo, f.details["lat"], f.details["lon"]) for la, lo in pts]
    close = [x for x in d if x < 15]
    assert close and min(close) > 0.01
