"""Behaviour of the stream models and the engine on small synthetic streams (no datasets, no network)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_models.air import DaqiIndex, daqi_index
from stream_models.bins import CollectionJudge, FillLevelModel
from stream_models.engine import Engine
from stream_models.events import CrewReport, DeviceInfo, Status, Verdict
from stream_models.findings import KINDS, SEVERITIES, Finding
from stream_models.nab import corpus_score, score_file
from stream_models.roads import BumpClusterer

H = 3_600_000
D = 86_400_000
T0 = 1767571200000  # Monday 2026-01-05 00:00 UTC (the tests run the engine in UTC)
TEN = "t"


def _bin(
    e: Engine,
    dev: str,
    asset: str,
    edge: int,
    household: str | None = None,
    kind: str = "household",
    days=(0,),
    freq: int = 1,
    parity: int = 0,
) -> None:
    e.register(
        DeviceInfo(
            TEN,
            dev,
            "bin_fill",
            52.95,
            -1.15,
            {
                "asset_id": asset,
                "bin_kind": kind,
                "depth_m": 0.95,
                "frequency_weeks": freq,
                "round_days": list(days),
                "week_parity": parity,
                "round_id": "mon-weekly",
                "slot_h": 9.0,
                "edge_id": edge,
                "household_id": household,
                "expected_fill_per_day": 0.05,
                "window_start_h": 7.0,
                "window_end_h": 15.0,
            },
        )
    )


def _sample(e: Engine, dev: str, t: int, fill: float, tilt: float = 2.0, temp: float = 8.0) -> list[Finding]:
    out = []
    for m, v in (
        ("distance", round(0.95 * (1 - fill), 3)),
        ("fill", round(fill, 3)),
        ("temp", temp),
        ("tilt", tilt),
    ):
        out += e.process((TEN, dev, "bin_fill", m, t, v))
    return out


def _motion(e: Engine, dev: str, t: int, tilt: float) -> list[Finding]:
    return e.process((TEN, dev, "bin_fill", "tilt", t, tilt))


class Town:
    """A street of bins with scripted behaviour, sampled hourly with a status every 6 h."""

    def __init__(self) -> None:
        self.e = Engine({"timezone": "UTC"})
        self.plan: dict[str, dict] = {}
        self.found: list[tuple[Finding, int]] = []

    def add(self, dev, asset, edge, household=None, **behaviour):
        _bin(self.e, dev, asset, edge, household)
        self.plan[dev] = {"fill": 0.3, **behaviour}

    def run(self, t_from: int, t_to: int) -> list[Finding]:
        e = self.e
        new: list[Finding] = []
        t = t_from
        while t < t_to:
            for dev, p in self.plan.items():
                day = (t - T0) // D
                week = day // 7
                monday = day % 7 == 0
                hour = (t % D) // H
                out_this_week = week not in p.get("not_out_weeks", ())
                f = p["fill"]
                if day % 7 == 6 and hour == 20 and (day + 1) // 7 not in p.get("not_out_weeks", ()):
                    new += _motion(e, dev, t + 1_000, 30.0)  # put out on Sunday evening
                if monday and hour == 9 and out_this_week and week not in p.get("missed_weeks", ()):
                    new += _motion(e, dev, t + 5 * 60_000, 135.0)  # tipped by the lifter
                    p["fill"] = f = 0.02
                if monday and hour == 13 and out_this_week:
                    new += _motion(e, dev, t + 2_000, 28.0)  # taken in
                p["fill"] = f = min(0.9, f + 0.05 / 24)
                new += _sample(e, dev, t + 7_000, f, temp=p.get("temp", 8.0))
                if hour % 6 == 5:
                    new += e.process(Status(TEN, dev, t + 8_000, "sleeping", t + 6 * H + 8_000))
            new += e.tick(t + H - 1)
            t += H
        self.found += [(f, 0) for f in new]
        return new


@pytest.fixture(scope="module")
def street():
    town = Town()
    town.add("bin-a", "hb-a", 1, "hh-a")  # normal
    town.add("bin-b", "hb-b", 1, "hh-b", missed_weeks=(0,))  # out, crew missed it in week 0
    town.add("bin-c", "hb-c", 1, "hh-c", not_out_weeks=(0, 1))  # not put out two weeks running
    for k in range(5):
        town.add(f"bin-d{k}", f"hb-d{k}", 2, f"hh-d{k}")  # the rest of the round
    w0 = town.run(T0 - D, T0 + D)
    w1 = town.run(T0 + D, T0 + 8 * D)
    return town, w0, w1


def test_missed_collection_and_not_put_out_are_told_apart(street):
    _, w0, _ = street
    kinds = {(f.kind, f.entity) for f in w0}
    assert ("missed_collection", "hb-b") in kinds
    assert ("not_put_out", "hb-c") in kinds
    assert not any(
        f.entity == "hb-a" or f.entity.startswith("hb-d")
        for f in w0
        if f.kind in ("missed_collection", "not_put_out", "not_put_out_2")
    )
    mc = next(f for f in w0 if f.kind == "missed_collection")
    assert mc.evidence["put_out_motion_seen"] is True and mc.evidence["cause"] == "crew_missed_bin"
    assert mc.window_start_ms == T0 + 7 * H and mc.window_end_ms == T0 + 15 * H
    npo = next(f for f in w0 if f.kind == "not_put_out")
    assert npo.evidence["put_out_motion_seen"] is False and not npo.welfare and npo.household is None
    assert "hb-c" in npo.explanation


def test_second_round_not_put_out_is_a_welfare_finding(street):
    _, _, w1 = street
    np2 = [f for f in w1 if f.kind == "not_put_out_2"]
    assert len(np2) == 1
    f = np2[0]
    assert f.welfare and f.household == "hh-c" and f.entity == "hb-c"
    assert f.evidence["rounds_in_a_row"] == 2
    # nobody else gets a welfare finding; bin b was collected in week 1
    assert all(not g.welfare for g in w1 if g is not f)
    assert not any(g.kind == "missed_collection" for g in w1)


def test_findings_are_well_formed(street):
    town, w0, w1 = street
    for f in w0 + w1:
        assert f.kind in KINDS and f.severity in SEVERITIES
        assert f.explanation and f.suggested_action and f.tenant == TEN
        assert "model" in f.evidence and "model_version" in f.evidence
        assert f.welfare == (f.kind == "not_put_out_2")


def test_street_skipped_is_a_missed_collection_for_the_street():
    town = Town()
    for k in range(3):
        town.add(f"bin-s{k}", f"hb-s{k}", 3, missed_weeks=(0,))  # the crew skipped street 3
    for k in range(6):
        town.add(f"bin-r{k}", f"hb-r{k}", 4)
    out = town.run(T0 - D, T0 + D)
    mc = [f for f in out if f.kind == "missed_collection"]
    assert {f.entity for f in mc} == {"hb-s0", "hb-s1", "hb-s2"}
    assert all(f.evidence["cause"] == "street_skipped" and f.severity == "high" for f in mc[1:])


def test_crew_report_overrides_the_sensor():
    town = Town()
    town.add("bin-x", "hb-x", 1, not_out_weeks=(0,))
    town.add("bin-y", "hb-y", 1, missed_weeks=(0,))
    for k in range(4):
        town.add(f"bin-z{k}", f"hb-z{k}", 2)
    town.run(T0 - D, T0 + 10 * H)
    town.e.process(CrewReport(TEN, "hb-y", T0 + 10 * H, "collected"))
    out = town.run(T0 + 10 * H, T0 + D)
    assert [f.entity for f in out if f.kind == "missed_collection"] == []
    assert [f.entity for f in out if f.kind == "not_put_out"] == ["hb-x"]


def test_silence_judged_against_next_wake_and_last_will():
    e = Engine({"timezone": "UTC"})
    e.register(DeviceInfo(TEN, "bin-1", "bin_fill", 52.95, -1.15, {"asset_id": "hb-1"}))
    e.process(Status(TEN, "bin-1", T0, "sleeping", T0 + 6 * H))
    assert e.tick(T0 + 6 * H + 30 * 60_000) == []  # asleep as announced (grace 1.5 h)
    out = e.tick(T0 + 8 * H)
    assert [f.kind for f in out] == ["device_silent"] and out[0].entity == "bin-1"
    assert e.tick(T0 + 9 * H) == []  # one finding per silence
    e.process(Status(TEN, "bin-1", T0 + 9 * H, "sleeping", T0 + 15 * H))
    assert e.tick(T0 + 10 * H) == []
    # always-connected node: the broker's last will
    e.register(
        DeviceInfo(TEN, "noise-1", "noise", 52.95, -1.15, {"site_id": "n1", "site_type": "residential"})
    )
    e.process(Status(TEN, "noise-1", T0 + 10 * H, "online", 0))
    e.process(Status(TEN, "noise-1", T0 + 10 * H + 90_000, "offline", 0))
    assert [f.kind for f in e.tick(T0 + 10 * H + 10 * 60_000)] == []
    assert [f.kind for f in e.tick(T0 + 10 * H + 20 * 60_000)] == ["device_silent"]


def test_fire_lid_knock_and_feedback():
    e = Engine({"timezone": "UTC"})
    _bin(e, "bin-1", "hb-1", 1)
    out = []
    for k in range(30):
        out += _sample(e, "bin-1", T0 + k * H, 0.3)
    out += _sample(e, "bin-1", T0 + 30 * H, 0.3, tilt=104.0)[:0]
    # lid open: the sensor looks past the bin floor
    out += [
        f
        for m, v in (("distance", 2.9), ("fill", -2.05), ("temp", 8.0), ("tilt", 104.0))
        for f in e.process((TEN, "bin-1", "bin_fill", m, T0 + 31 * H, v))
    ]
    # knocked over: alarm records
    out += [
        f
        for m, v in (("tilt", 87.0), ("distance", 0.2), ("fill", 0.79))
        for f in e.process((TEN, "bin-1", "bin_fill", m, T0 + 32 * H, v))
    ]
    out += _sample(e, "bin-1", T0 + 33 * H, 0.3, temp=96.0)
    out += e.tick(T0 + 34 * H)
    kinds = [f.kind for f in out]
    assert kinds.count("lid_open") == 1 and kinds.count("knocked_over") == 1 and kinds.count("fire_risk") == 1
    fire = next(f for f in out if f.kind == "fire_risk")
    assert fire.severity == "critical" and fire.evidence["temp_c"] == 96.0
    changes = e.feedback("fire_risk", "hb-1", False)
    assert changes[0]["parameter"] == "abs_c" and changes[0]["new"] > changes[0]["old"]
    assert e.process(Verdict(TEN, "lid_open", "hb-1", False)) == []
    assert [c["parameter"] for c in e.audit] == ["abs_c", "lid_min"]


def test_air_daqi_band_and_fan_failure():
    e = Engine({"timezone": "UTC"})
    for k in range(3):
        e.register(
            DeviceInfo(
                TEN,
                f"air-{k}",
                "air",
                52.95 + 0.001 * k,
                -1.15,
                {"site_id": f"s{k}", "site_type": "background"},
            )
        )
    out = []
    for i in range(12 * 36):  # 36 h of 5-minute samples
        t = T0 + i * 300_000
        for k in range(3):
            pm = 85.0 if i >= 12 * 6 else 8.0  # humidity-corrected: ~65 ug/m3
            if k == 2 and i >= 12 * 30:
                pm = 0.1  # fan stopped
            for m, v in (("pm25", pm), ("pm10", pm * 1.2), ("rh", 50.0)):
                out += e.process((TEN, f"air-{k}", "air", m, t, v))
        if i % 3 == 0:
            out += e.tick(t + 1)
    bands = [f for f in out if f.kind == "daqi_band" and f.entity == "air-0"]
    assert [f.evidence["band"] for f in bands][:2] == ["Moderate", "High"]
    assert "DAQI" in bands[0].evidence["rule"]
    fails = [f for f in out if f.kind == "air_sensor_failure"]
    assert [(f.entity, f.evidence["mode"]) for f in fails] == [("air-2", "fan_stopped")]


def test_noise_night_limit():
    e = Engine({"timezone": "UTC"})
    e.register(
        DeviceInfo(TEN, "noise-1", "noise", 52.95, -1.15, {"site_id": "n1", "site_type": "residential"})
    )
    out = []
    for i in range(12 * 30):
        t = T0 + i * 300_000 + 300_000
        hour = (t - 150_000) % D // H
        lvl = 50.0 + (20.0 if 23 * 12 <= i < 25 * 12 else 0.0)
        for m, v in (("laeq", lvl), ("lamax", lvl + 10), ("l10", lvl + 2), ("l90", lvl - 8)):
            out += e.process((TEN, "noise-1", "noise", m, t, v))
        assert 0 <= hour < 24
    ex = [f for f in out if f.kind == "noise_exceedance"]
    assert len(ex) == 1 and ex[0].evidence["period"] == "night" and ex[0].evidence["limit_db"] == 62.0


def _bump(e, dev, t, lat, lon, peak=6.0, dur=1.2, speed=7.0):
    out = []
    for m, v in (("bump_g", peak), ("bump_dur", dur), ("speed", speed), ("lat", lat), ("lon", lon)):
        out += e.process((TEN, dev, "road", m, t, v))
    return out


def test_road_pothole_confirmed_from_passes_and_register_suppresses_castings():
    rnd = random.Random(4)
    c_lat, c_lon = 52.951, -1.151  # a registered casting
    e = Engine({"timezone": "UTC", "road_register": {TEN: [("casting-1", "casting", c_lat, c_lon)]}})
    out = []
    t = T0
    for p in range(40):  # 40 passes over two days by two vans
        dev = f"road-{p % 2}"
        t += 1800_000
        for lat, lon in ((52.95, -1.15), (c_lat, c_lon)):
            if rnd.random() < 0.7:
                out += _bump(
                    e,
                    dev,
                    t,
                    lat + rnd.gauss(0, 3) / 110_574,
                    lon,
                    peak=rnd.uniform(5, 9),
                    dur=rnd.uniform(1.0, 1.5) if lat == 52.95 else rnd.uniform(0.8, 1.1),
                )
            t += 10_000
        for _ in range(3):  # texture events anywhere
            out += _bump(
                e,
                dev,
                t,
                52.95 + rnd.uniform(-0.01, 0.01),
                -1.15 + rnd.uniform(-0.01, 0.01),
                peak=4.5,
                dur=0.5,
            )
            t += 1000
    out += e.tick(t + H)
    pot = [f for f in out if f.kind == "pothole"]
    assert len(pot) == 1
    f = pot[0]
    assert abs(f.lat - 52.95) < 5e-5 and f.evidence["passes"] >= 3 and f.entity.startswith("rd-")
    assert f.severity in ("medium", "high", "critical")
    assert not any(g.kind in ("pothole", "road_defect_other") and abs(g.lat - c_lat) < 2e-4 for g in out)
    ch = e.feedback("pothole", f.entity, True)
    assert ch[0]["parameter"] == "cluster_class" and ch[0]["new"] == "pothole"


def test_collection_judge_learns_rates():
    j = CollectionJudge(prior_weight=10.0)
    p0 = j.rates()
    for _ in range(50):
        j.learn_one({}, "not_put_out")
    assert j.rates()[0] > p0[0]


def test_daqi_thresholds_match_defra_bands():
    pm25 = [
        (11, 1),
        (12, 2),
        (23, 2),
        (24, 3),
        (35, 3),
        (36, 4),
        (41, 4),
        (42, 5),
        (53, 6),
        (54, 7),
        (64, 8),
        (70, 9),
        (71, 10),
    ]
    pm10 = [(16, 1), (17, 2), (50, 3), (51, 4), (75, 6), (76, 7), (100, 9), (101, 10)]
    assert [daqi_index("pm25", v) for v, _ in pm25] == [i for _, i in pm25]
    assert [daqi_index("pm10", v) for v, _ in pm10] == [i for _, i in pm10]
    d = DaqiIndex(min_hours=18)
    for k in range(12 * 17):
        d.learn_one({"t": k * 300_000, "pm25": 80.0})
    assert d.predict_one()["index"] is None  # fewer than 18 hours: no index yet


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-0.05, max_value=1.1, allow_nan=False), min_size=1, max_size=120))
def test_fill_level_model_is_robust(fills):
    m = FillLevelModel()
    for k, f in enumerate(fills):
        ev = m.update({"t": k * H, "local": k * H, "fill": f})
        if ev is not None:
            assert ev["before"] > ev["after"]
    assert m.level is None or -0.05 <= m.level <= 1.1
    assert all(m.rate_per_day(d) >= 0 for d in range(7))
    ttf = m.time_to_full_h(len(fills) * H)
    assert ttf is None or ttf >= 0


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=200, max_value=600), st.data())
def test_nab_score_bounds(n, data):
    a = data.draw(st.integers(min_value=int(0.2 * n), max_value=n - 30))
    w = [(a, a + 20)]
    perfect = [1.0 if i == a else 0.0 for i in range(n)]
    assert corpus_score([(perfect, w)])["score"] == pytest.approx(100.0)
    assert corpus_score([([0.0] * n, w)], threshold=0.5)["score"] == pytest.approx(0.0)
    k = data.draw(st.integers(min_value=0, max_value=19))
    later = [1.0 if i == a + k + 1 else 0.0 for i in range(n)]
    assert score_file(perfect, w)["raw"] >= score_file(later, w)["raw"]


def test_bump_clusterer_forgets_stray_events():
    c = BumpClusterer(prune_days=1.0)
    for k in range(50):
        c.update(
            {
                "t": k,
                "device": "v",
                "lat": 52.9 + k * 1e-3,
                "lon": -1.1,
                "peak": 5.0,
                "dur": 1.0,
                "speed": 6.0,
            }
        )
    assert len(c.clusters) == 50
    assert c.prune(3 * D) == 50 and not c.clusters


def test_tiny_scenario_through_decode_and_engine():
    """Two simulated days of the tiny town: the real bytes, decoded, through the engine."""
    from stream_models.evaluate import run_scenario, score_findings

    run = run_scenario("tiny", days=1.5, seed=3, counts={"bins": 30, "air": 2, "noise": 2, "road": 1})
    assert run["stats"]["readings"] > 10_000
    assert all(isinstance(f, Finding) and f.kind in KINDS for f, _ in run["findings"])
    scores = score_findings(run["findings"], run["truth"], run["end_ms"])
    assert all(r["precision"] is None or 0 <= r["precision"] <= 1 for r in scores.values())
    eng = run["engine"]
    assert Engine.loads(eng.dumps()).n_readings == eng.n_readings
    assert math.isfinite(run["stats"]["engine_s"])


def _synthetic_nab(root):
    import json as _json

    (root / "data" / "synth").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = ["timestamp,value"]
    rnd = random.Random(5)
    for i in range(1500):
        v = 10 + math.sin(i / 30) + rnd.gauss(0, 0.2) + (15.0 if 1200 <= i < 1210 else 0.0)
        rows.append(
            f"2014-04-01 {i // 60 % 24:02d}:{i % 60:02d}:00".replace(
                "2014-04-01", f"2014-04-{1 + i // 1440:02d}"
            )
            + f",{v:.3f}"
        )
    (root / "data" / "synth" / "s.csv").write_text("\n".join(rows) + "\n")
    ts = [r.split(",")[0] for r in rows[1:]]
    _json.dump(
        {"synth/s.csv": [[ts[1180] + ".000000", ts[1230] + ".000000"]]},
        open(root / "labels" / "combined_windows.json", "w"),
    )


def test_eval_commands_are_typer_compatible(tmp_path, capsys):
    """The evaluation functions mount as CLI commands and print JSON (synthetic data, no datasets)."""
    import json as _json

    import typer
    from typer.testing import CliRunner

    from stream_models.evaluate import eval_nab, eval_roads

    _synthetic_nab(tmp_path / "nab")
    road = tmp_path / "road"
    rnd = random.Random(2)
    for d, amp, width in (
        ("potholes", 7, 12),
        ("metal_bumps", 6, 5),
        ("asphalt_bumps", 5, 20),
        ("regular_road", 1, 1),
        ("worn_out_road", 2, 1),
    ):
        (road / d).mkdir(parents=True)
        for k in range(6):
            vals = [
                9.81
                + rnd.gauss(0, 0.3)
                + (amp * math.sin(math.pi * (i - 50) / width) if 50 <= i < 50 + width else 0.0)
                for i in range(120)
            ]
            (road / d / f"{k}.csv").write_text("acc_z\n" + "\n".join(f"{v:.3f}" for v in vals) + "\n")
    app = typer.Typer()
    app.command("nab")(eval_nab)
    app.command("roads")(eval_roads)
    r = CliRunner().invoke(app, ["nab", "--data", str(tmp_path / "nab"), "--json-out"])
    assert r.exit_code == 0, r.output
    out = _json.loads(r.output)
    assert out["files"] == 1 and out["windows"] == 1 and out["detectors"]["robust"]["score"] > 50
    r = CliRunner().invoke(
        app, ["roads", "--data", str(road), "--json-out", "--folds", "3", "--learners", "gnb,knn"]
    )
    assert r.exit_code == 0, r.output
    out = _json.loads(r.output)
    assert out["clips"] == 30 and set(out["learners"]) == {"gnb", "knn"} and 0 <= out["best_macro_f1"] <= 1
