"""The database-backed model runner against a real PostgreSQL, fed through the
real ingest store: each reading reaches the engine once, across a crashed step
and a restart; checkpoints, verdict feedback, device status with next_wake,
the welfare consent gate, and one active runner per name.

The engine here is a small scripted one with predictable rules (the pure
models are tested on their own); it speaks the real ``stream_models.events``
and returns real ``Finding`` objects."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from alerts import store
from alerts.runner import Runner, RunnerConfig, load_checkpoint
from ingest.store import Batch, ReadingStore
from stream_models.events import DeviceInfo, Reading, Status
from stream_models.findings import make_finding
from tests.test_alerts_store import T0, TENANT, connect, deliveries, grant, seed

MIN = 60_000
HOUR_MS = 60 * MIN
FILL = 2


class ScriptedEngine:
    """fill >= 0.9: overflow_forecast (high from 0.97); status offline: device_silent; two empty
    readings in a row at a household bin: not_put_out_2 (welfare). Remembers everything it was fed."""

    def __init__(self) -> None:
        self.registry: dict[str, dict] = {}
        self.fed: list[list] = []
        self.feedbacks: list[list] = []
        self.quiet: list[list] = []          # (kind, entity) silenced by a false-positive verdict
        self.empty_run: dict[str, int] = {}
        self.ticks = 0
        self.registrations = 0

    def process(self, ev) -> list:
        if isinstance(ev, DeviceInfo):
            self.registry[ev.device_id] = {"kind": ev.kind, "lat": ev.lat, "lon": ev.lon, "asset": ev.asset}
            self.registrations += 1
            return []
        reg = self.registry[ev.device_id]
        asset = reg["asset"]
        entity = asset.get("asset_id") or ev.device_id
        if isinstance(ev, Status):
            self.fed.append(["status", ev.device_id, ev.time_ms, ev.state, ev.next_wake_ms])
            if ev.state == "offline":
                return self._f("device_silent", "medium", ev, ev.device_id, ev.time_ms,
                               f"{ev.device_id} went offline (last will).", {"state": ev.state})
            return []
        assert isinstance(ev, Reading)
        self.fed.append([ev.device_id, ev.metric, ev.time_ms, ev.value])
        if ev.metric != "fill":
            return []
        out = []
        if ev.value >= 0.9:
            out += self._f("overflow_forecast", "high" if ev.value >= 0.97 else "medium", ev, entity, ev.time_ms,
                           f"Bin {entity} is {ev.value:.0%} full.", {"fill": ev.value, "rule": "fill >= 0.9"})
        if asset.get("bin_kind") == "household":
            run = self.empty_run[ev.device_id] = self.empty_run.get(ev.device_id, 0) + 1 if ev.value == 0 else 0
            if run == 2:
                out += [make_finding("not_put_out_2", "medium", tenant=ev.tenant, entity=entity,
                                     device_id=ev.device_id, asset_id=entity, window_start_ms=ev.time_ms,
                                     explanation="Not put out on two rounds in a row.",
                                     suggested_action="Please check on the resident.", welfare=True,
                                     household=asset["household_id"], model="scripted", version="1")]
        return [f for f in out if [f.kind, f.entity] not in self.quiet]

    def _f(self, kind, severity, ev, entity, t, text, evidence) -> list:
        reg = self.registry[ev.device_id]
        return [make_finding(kind, severity, tenant=ev.tenant, entity=entity, device_id=ev.device_id,
                             asset_id=reg["asset"].get("asset_id"), lat=reg["lat"], lon=reg["lon"],
                             window_start_ms=t, explanation=text, evidence=evidence,
                             suggested_action="Send a crew.", model="scripted", version="1")]

    def tick(self, now_ms: int) -> list:
        self.ticks += 1
        return []

    def feedback(self, alert_kind: str, entity: str, verdict: bool, tenant: str | None = None) -> list[dict]:
        self.feedbacks.append([tenant, alert_kind, entity, verdict])
        if not verdict:
            self.quiet.append([alert_kind, entity])
            return [{"parameter": "quiet", "old": False, "new": True}]
        return []

    def dumps(self) -> bytes:
        return json.dumps(vars(self)).encode()

    @classmethod
    def loads(cls, data: bytes) -> "ScriptedEngine":
        e = cls()
        vars(e).update(json.loads(data))
        return e


KW = {"settle": timedelta(0), "initial_lookback": None}
CFG = RunnerConfig(**KW)


def pks(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as c:
        return dict(c.execute("SELECT device_id, id FROM devices").fetchall())


def write(db_url: str, rows: list[tuple], status: dict | None = None) -> None:
    """Store (device, time ms, value[, metric id]) rows as one ingest batch, through the real ingest store
    (the metric is fill unless given)."""
    pk = pks(db_url)
    b = Batch.from_rows([(r[1], pk[r[0]], r[3] if len(r) > 3 else FILL, r[2]) for r in rows], messages=1)
    for d, st in (status or {}).items():
        b.status[pk[d]] = st
    s = ReadingStore(psycopg.connect(db_url), "test")
    try:
        s.write(b)
    finally:
        s.conn.close()


def checkpoint(db_url: str, name: str = "default") -> ScriptedEngine:
    with psycopg.connect(db_url) as c:
        return ScriptedEngine.loads(bytes(c.execute("SELECT engine FROM alert_runner_state WHERE runner = %s",
                                                    (name,)).fetchone()[0]))


@pytest.fixture
def town(db_url):
    seed(db_url)
    with connect(db_url) as c:
        c.autocommit = True
        store.add_sink(c, TENANT, "ops-hook", "webhook", {"url": "http://127.0.0.1:9/hook", "secret": "s"})
        store.add_route(c, TENANT, "ops-hook")
        yield c


def test_each_reading_reaches_the_engine_once_across_a_crash_and_a_restart(town, db_url, monkeypatch):
    batch1 = [("bin-2", T0, 0.5), ("bin-2", T0 + 10 * MIN, 0.8), ("bin-3", T0 + 5 * MIN, 0.95)]
    # overlaps batch 1 in time (other devices, and later readings of bin-3)
    batch2 = [("bin-3", T0 + 15 * MIN, 0.96), ("bin-1", T0 + 2 * MIN, 0.3), ("bin-2", T0 + 20 * MIN, 0.93)]
    batch3 = [("bin-2", T0 + 30 * MIN, 0.98), ("bin-3", T0 + 12 * MIN, 0.99)]   # bin-3 here is late: older
    write(db_url, batch1)
    r = Runner(db_url, ScriptedEngine, CFG)
    res = r.step()
    assert (res.readings, res.findings, res.outcomes) == (3, 1, {"opened": 1})
    write(db_url, batch2)

    calls = []
    real = store.upsert_finding

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database hiccup mid-step")
        return real(*a, **kw)

    monkeypatch.setattr(store, "upsert_finding", flaky)
    with pytest.raises(RuntimeError):
        r.step()
    monkeypatch.setattr(store, "upsert_finding", real)
    # nothing of the failed step is visible: same checkpoint, no new alerts
    assert len(checkpoint(db_url).fed) == 3
    assert [a["entity"] for a in town.execute("SELECT entity FROM alerts ORDER BY id")] == ["sb-2"]
    r.close()

    restarted = Runner(db_url, ScriptedEngine, CFG)
    res = restarted.step()
    assert res.readings == 3 and res.outcomes == {"updated": 1, "opened": 1}
    write(db_url, batch3)
    res = restarted.step()
    assert res.readings == 1 and res.outcomes == {"escalated": 1}   # bin-3's late reading is not fed
    assert restarted.step().readings == 0
    eng = checkpoint(db_url)
    fed = [tuple(x) for x in eng.fed]
    assert len(fed) == len(set(fed)) == 7
    assert sorted(fed) == sorted((d, "fill", t, v) for d, t, v in batch1 + batch2 + batch3[:1])
    by_device = {}
    for d, _, t, _ in fed:
        by_device.setdefault(d, []).append(t)
    assert all(ts == sorted(ts) for ts in by_device.values())    # each device's stream in time order
    alerts = town.execute("SELECT entity, severity, findings FROM alerts ORDER BY id").fetchall()
    assert alerts == [{"entity": "sb-2", "severity": "medium", "findings": 2},
                      {"entity": "sb-1", "severity": "high", "findings": 2}]
    assert sorted(d["event"] for d in deliveries(town)) == ["opened", "opened"]   # escalation rate-limited
    assert eng.ticks == 4 and set(eng.registry) == {"bin-1", "bin-2", "bin-3", "air-1"}
    assert eng.registrations == 4          # once each: not again after the restart (the checkpoint knows)
    assert eng.registry["bin-1"]["asset"]["household_id"] == "hh-7f3a"
    st = town.execute("SELECT version, stats FROM alert_runner_state").fetchone()
    assert st["version"] == 4 and st["stats"]["readings"] == 7 and st["stats"]["alerts_opened"] == 2
    restarted.close()


def test_a_backlog_is_taken_a_bounded_number_of_readings_at_a_time_each_once(town, db_url):
    """Catching up on many batches: each step takes batches up to ``max_readings`` (at least one, even if
    larger), so the runner's working set stays bounded; every reading still arrives once, in order."""
    sizes = [3, 3, 9, 2, 2, 2, 3]                      # readings per batch (the 9 alone exceeds the cap)
    t, sent = T0, []
    for n in sizes:
        rows = []
        for _ in range(n):
            t += MIN
            rows.append(("bin-2", t, 0.1))
        write(db_url, rows)
        sent += rows
    r = Runner(db_url, ScriptedEngine, RunnerConfig(settle=timedelta(0), initial_lookback=None, max_readings=6))
    taken = []
    while (res := r.step()).readings:
        taken.append(res.readings)
    assert taken == [6, 9, 6, 3]                       # 3+3 | 9 | 2+2+2 | 3
    fed = [tuple(x) for x in checkpoint(db_url).fed]
    assert fed == [(d, "fill", tt, v) for d, tt, v in sent]
    r.close()


def test_verdicts_status_and_the_welfare_gate_through_the_runner(town, db_url):
    r = Runner(db_url, ScriptedEngine, CFG)
    write(db_url, [("bin-2", T0, 0.95)])
    r.step()
    a = town.execute("SELECT id FROM alerts").fetchone()["id"]
    with town.transaction():
        store.close(town, a, "op-ann", "dismissed", "false_positive", "lid sensor fouled")
    res = r.step()
    assert res.feedback == 1
    fb = town.execute("SELECT * FROM alert_feedback").fetchone()
    assert fb["applied_by"] == "default" and fb["result"]["changes"] == [{"parameter": "quiet", "old": False,
                                                                          "new": True}]
    assert fb["result"]["state_changed"] is True
    r.close()
    r = Runner(db_url, ScriptedEngine, CFG)               # a restart does not apply it again
    r.step()
    assert checkpoint(db_url).feedbacks == [["leeds", "overflow_forecast", "sb-1", False]]
    write(db_url, [("bin-2", T0 + HOUR_MS, 0.99)])       # silenced by the verdict: no finding at all
    assert r.step().findings == 0

    # device status: sleep with a planned wake is passed on; going offline raises device_silent
    nw = T0 // 1000 + 6 * 3600
    write(db_url, [], status={"bin-3": ("sleeping", "0.3.0", nw)})
    assert r.step().status == 1
    last = checkpoint(db_url).fed[-1]
    assert (last[0], last[1], last[3], last[4]) == ("status", "bin-3", "sleeping", nw * 1000)
    write(db_url, [], status={"bin-3": ("offline", "0.3.0", 0)})
    assert r.step().outcomes == {"opened": 1}
    assert town.execute("SELECT kind, entity FROM alerts ORDER BY id DESC LIMIT 1").fetchone() == \
        {"kind": "device_silent", "entity": "bin-3"}

    # welfare: two empty rounds at the household bin; no consent, no alert; with consent, an alert
    write(db_url, [("bin-1", T0 + 1 * HOUR_MS, 0.0), ("bin-1", T0 + 2 * HOUR_MS, 0.0)])
    assert r.step().outcomes == {"no_consent": 1}
    assert town.execute("SELECT count(*) AS n FROM alerts WHERE welfare").fetchone()["n"] == 0
    grant(town)
    write(db_url, [("bin-1", T0 + 3 * HOUR_MS, 0.4), ("bin-1", T0 + 4 * HOUR_MS, 0.0),
                   ("bin-1", T0 + 5 * HOUR_MS, 0.0)])
    assert r.step().outcomes == {"opened": 1}
    w = town.execute("SELECT * FROM alerts WHERE welfare").fetchone()
    assert w["household"] == "hh-7f3a" and w["consent_id"] is not None
    r.close()


def test_one_runner_at_a_time(town, db_url):
    write(db_url, [("bin-2", T0, 0.95)])
    other = psycopg.connect(db_url)
    try:
        other.execute("SELECT pg_advisory_xact_lock(%s, hashtext('default'))", (0x5757_0005,))
        r = Runner(db_url, ScriptedEngine, CFG)
        assert r.step().ran is False
        assert town.execute("SELECT count(*) AS n FROM alerts").fetchone()["n"] == 0
        other.rollback()
        assert r.step().findings == 1
        r.close()
    finally:
        other.close()


def test_the_real_engine_through_the_runner(town, db_url):
    """stream_models.engine.Engine end to end: a lid temperature jump at a street bin becomes a critical
    fire_risk alert with its evidence; a false-positive verdict changes the engine's threshold, and the
    change survives a restart through the checkpoint."""
    from stream_models.engine import Engine

    TEMP = 3
    t = T0 + 9 * HOUR_MS
    now = {"ms": t + 10 * MIN}
    write(db_url, [("bin-2", t, 0.41), ("bin-2", t, 9.0, TEMP), ("bin-2", t + MIN, 0.41), ("bin-2", t + MIN, 95.0, TEMP)])
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=lambda: now["ms"] / 1000)
    r.step()
    fire = town.execute("SELECT * FROM alerts WHERE kind = 'fire_risk'").fetchone()
    assert (fire["severity"], fire["entity"], fire["device_id"] is not None) == ("critical", "sb-1", True)
    assert fire["summary"] and fire["suggested_action"]
    assert fire["explanation"]["evidence"]["model"] and "model_version" in fire["explanation"]["evidence"]
    assert [d["event"] for d in deliveries(town, fire["id"])] == ["opened"]
    with town.transaction():
        store.close(town, fire["id"], "op-ann", "dismissed", "false_positive", "bonfire next to it, not the bin")
    r.step()
    fb = town.execute("SELECT result FROM alert_feedback").fetchone()["result"]
    assert fb["state_changed"] and [c["parameter"] for c in fb["changes"]][:1] == ["abs_c"]
    raised = fb["changes"][0]["new"]
    r.close()
    restarted = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=lambda: now["ms"] / 1000)
    now["ms"] += HOUR_MS
    write(db_url, [("bin-2", now["ms"] - 30 * MIN, 0.42)])
    assert restarted.step().readings == 1
    with psycopg.connect(db_url) as c:
        assert load_checkpoint(c, Engine).devices[(TENANT, "bin-2")].state.fire.abs_c == raised
    restarted.close()


# ---- crew reports from the crew app as model input ----------------------------------------------------------

def test_engine_state_is_checkpointed_per_device_and_a_restart_each_step_changes_nothing(town, db_url):
    """The real engine's checkpoint is split: the core in alert_runner_state, each device in a row of
    alert_runner_devices, and a step rewrites only the devices whose state changed. A runner restarted
    before every step ends with the same state and findings as one that never stopped."""
    import pickle

    from stream_models.engine import Engine

    now = {"ms": T0}
    clock = lambda: now["ms"] / 1000              # noqa: E731
    steady = Runner(db_url, lambda: Engine({"timezone": "UTC"}), RunnerConfig(name="steady", **KW), clock=clock)
    saved, results = [], []
    for h in range(30):
        t = T0 + h * HOUR_MS
        rows = [("bin-2", t, round(0.2 + 0.02 * h, 3))]
        if h % 10 == 0:
            rows.append(("bin-3", t + MIN, 0.5))
        write(db_url, rows)
        now["ms"] = t + 10 * MIN
        a = steady.step()
        restarted = Runner(db_url, lambda: Engine({"timezone": "UTC"}), RunnerConfig(name="restarted", **KW),
                           clock=clock)
        b = restarted.step()
        restarted.close()
        results.append(((a.readings, a.findings), (b.readings, b.findings)))
        saved.append(steady.saved_devices)
    assert all(x == y for x, y in results) and sum(x[0] for x, _ in results) == 33
    # the first step writes every device the engine has; later ones only what the step's events touched
    assert saved[0] >= 2 and max(saved[1:]) <= 2 and saved[1:].count(1) >= 20, saved
    with psycopg.connect(db_url) as c:
        n = c.execute("SELECT runner, count(*) FROM alert_runner_devices GROUP BY 1 ORDER BY 1").fetchall()
        a_eng, b_eng = load_checkpoint(c, Engine, "steady"), load_checkpoint(c, Engine, "restarted")
        assert dict(n) == {"restarted": len(a_eng.devices), "steady": len(a_eng.devices)}
    assert set(a_eng.devices) == set(b_eng.devices) == set(steady.engine.devices)

    def norm(eng: Engine) -> dict:            # pickles compared after the same round trip
        _, devs = eng.dump_parts()
        return {k: pickle.dumps(pickle.loads(v)) for k, v in devs.items()}

    assert norm(a_eng) == norm(b_eng)
    steady.close()


MON = 1_767_571_200_000          # Monday 2026-01-05 00:00Z (the engine runs in UTC here)
DAY_MS = 24 * HOUR_MS
DIST, TEMP, TILT = 1, 3, 4
STREET = {"round_days": [0], "frequency_weeks": 1, "week_parity": 0, "round_id": "mon-weekly", "slot_h": 9.0,
          "window_start_h": 7.0, "window_end_h": 15.0, "expected_fill_per_day": 0.05}


def crew_town(c: psycopg.Connection) -> None:
    """Household bins on a Monday round: street 1 holds the bins under test (x, y, w) and a normal one (a),
    street 2 the rest of the round (d0..d3)."""
    bins = [("x", 1), ("y", 1), ("w", 1), ("a", 1)] + [(f"d{k}", 2) for k in range(4)]
    for name, edge in bins:
        c.execute("""INSERT INTO assets (tenant, asset_id, bin_kind, household, ward, lat, lon, capacity_l, depth_m,
                                          schedule)
                     VALUES (%s, %s, 'household', %s, 'headingley', 53.82, -1.58, 240, 0.95, %s)""",
                  (TENANT, f"hb-{name}", f"hh-{name}", json.dumps({**STREET, "edge_id": edge})))
        c.execute("INSERT INTO devices (tenant, device_id, kind, asset_id, status) VALUES (%s, %s, 'bin_fill', %s, "
                  "'active')", (TENANT, f"bin-{name}", f"hb-{name}"))


def crew_readings(t_from: int, t_to: int, behaviour: dict[str, dict]) -> list[tuple]:
    """Hourly samples (distance, fill, temp, tilt) of every bin; put out on Sunday 20:00 (tilt motion), tipped by
    the lifter at 09:05 on Monday unless ``left`` that week, taken in at 13:00.  ``out`` False: never moved."""
    rows: list[tuple] = []
    t = t_from
    while t < t_to:
        day, hour = (t - MON) // DAY_MS, (t % DAY_MS) // HOUR_MS
        week = day // 7
        for name, p in behaviour.items():
            dev = f"bin-{name}"
            out = week not in p.get("not_out_weeks", ())
            nxt_out = (day + 1) // 7 not in p.get("not_out_weeks", ())
            if day % 7 == 6 and hour == 20 and nxt_out:
                rows.append((dev, t + 1_000, 30.0, TILT))
            if day % 7 == 0 and hour == 9 and out and week not in p.get("left_weeks", ()):
                rows.append((dev, t + 5 * MIN, 135.0, TILT))
                p["fill"] = 0.02
            if day % 7 == 0 and hour == 13 and out:
                rows.append((dev, t + 2_000, 28.0, TILT))
            p["fill"] = f = min(0.9, p.get("fill", 0.3) + 0.05 / 24)
            for m, v in ((DIST, round(0.95 * (1 - f), 3)), (FILL, round(f, 3)), (TEMP, 8.0), (TILT, 2.0)):
                rows.append((dev, t + 7_000, v, m))
        t += HOUR_MS
    return rows


def crew_report(c: psycopg.Connection, plan_id: int, asset: str, status: str, at_ms: int, cid: str) -> None:
    from datetime import datetime, timezone

    from routing import store as rstore

    rstore.add_report(c, plan_id, TENANT, "rcv-26t-1", asset, status, cid,
                      datetime.fromtimestamp(at_ms / 1000, timezone.utc))


def a_plan(c: psycopg.Connection) -> int:
    from routing import store as rstore

    return rstore.save_plan(c, TENANT, "2026-01-05", {"test": True}, {"routes": []})


def engine_state(db_url: str):
    from stream_models.engine import Engine

    with psycopg.connect(db_url) as c:
        return load_checkpoint(c, Engine)


def test_crew_collected_confirms_an_ambiguous_collection_once_across_a_crash_and_a_restart(town, db_url):
    """Bins y and w were wheeled out but their sensors show no emptying (no lifter tip, no fill drop).  The crew
    reports y collected at 10:00: y gets no missed-collection alert, and w's missed collection is explained by the
    street's evidence counting y as emptied (a single missed bin, not a skipped street).  The report reaches the
    engine once, across a failed step and a restarted runner."""
    from stream_models.engine import Engine

    crew_town(town)
    pid = a_plan(town)
    beh = {n: {} for n in ("y", "w", "a", "d0", "d1", "d2", "d3")}
    beh["y"]["left_weeks"] = beh["w"]["left_weeks"] = (0,)
    now = {"ms": MON + 10 * HOUR_MS}
    fail = {"n": 1}

    def clock() -> float:
        if fail["n"]:
            fail["n"] -= 1
            raise RuntimeError("crash after the engine was fed, before the checkpoint")
        return now["ms"] / 1000

    write(db_url, crew_readings(MON - DAY_MS, MON + 10 * HOUR_MS, beh))
    crew_report(town, pid, "hb-y", "collected", MON + 10 * HOUR_MS, "c-1")
    crew_report(town, pid, "hb-y", "damaged", MON + 10 * HOUR_MS + 1, "c-2")      # read, not model input
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=clock)
    with pytest.raises(RuntimeError):
        r.step()
    assert town.execute("SELECT * FROM alert_runner_state").fetchone() is None       # the whole step rolled back
    r.close()
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=clock)
    res = r.step()
    assert (res.crew, res.crew_ignored) == (1, 1)
    r.close()
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=clock)      # restarted: nothing again
    write(db_url, crew_readings(MON + 10 * HOUR_MS, MON + DAY_MS, beh))
    now["ms"] = MON + DAY_MS
    res = r.step()
    assert (res.crew, res.crew_ignored) == (0, 0) and res.readings > 0
    r.close()
    eng = engine_state(db_url)
    assert list(eng.devices[(TENANT, "bin-y")].state.crew) == [(MON + 10 * HOUR_MS, "collected")]
    assert eng.tenants[TENANT].day_status[((MON // DAY_MS), "hb-y")]["crew"] == "collected"
    missed = town.execute("SELECT entity, explanation FROM alerts WHERE kind = 'missed_collection'").fetchall()
    assert [m["entity"] for m in missed] == ["hb-w"]
    ev = missed[0]["explanation"]["evidence"]
    assert ev["put_out_motion_seen"] is True and ev["street_bins_emptied"] >= 2   # a, and y by the crew's word
    assert ev["cause"] == "crew_missed_bin" and ev["crew_report"] is None
    st = town.execute("SELECT stats FROM alert_runner_state").fetchone()["stats"]
    assert st["crew"] == 1 and st["crew_ignored"] == 1


def test_without_the_crew_report_the_same_sensors_say_missed(town, db_url):
    """The control for the test above: the same readings and no crew report give y a missed collection too."""
    from stream_models.engine import Engine

    crew_town(town)
    beh = {n: {} for n in ("y", "w", "a", "d0", "d1", "d2", "d3")}
    beh["y"]["left_weeks"] = beh["w"]["left_weeks"] = (0,)
    now = {"ms": MON + 10 * HOUR_MS}
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=lambda: now["ms"] / 1000)
    write(db_url, crew_readings(MON - DAY_MS, MON + 10 * HOUR_MS, beh))
    r.step()
    write(db_url, crew_readings(MON + 10 * HOUR_MS, MON + DAY_MS, beh))
    now["ms"] = MON + DAY_MS
    r.step()
    r.close()
    missed = town.execute("SELECT entity, explanation FROM alerts WHERE kind = 'missed_collection' ORDER BY entity"
                          ).fetchall()
    assert [m["entity"] for m in missed] == ["hb-w", "hb-y"]
    assert missed[0]["explanation"]["evidence"]["street_bins_emptied"] == 1     # only a: y counts as left


def test_crew_not_out_decides_not_put_out_and_counts_towards_the_welfare_gate(town, db_url):
    """Bin x's sensor says it was wheeled out but not emptied (alone, that is a missed collection); the crew says
    "not out" on two Mondays running.  Week 0: a not-put-out alert whose evidence is the crew's report.  Week 1:
    the welfare finding, refused without the household's consent; with consent (week 2) it becomes an alert."""
    from stream_models.engine import Engine

    crew_town(town)
    pid = a_plan(town)
    beh = {n: {} for n in ("x", "a", "d0", "d1", "d2", "d3")}
    beh["x"]["left_weeks"] = (0, 1, 2)
    now = {"ms": 0}
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=lambda: now["ms"] / 1000)
    outcomes = []
    for week in range(3):
        w0 = MON + week * 7 * DAY_MS
        write(db_url, crew_readings(w0 - (DAY_MS if week == 0 else 6 * DAY_MS), w0 + 11 * HOUR_MS, beh))
        crew_report(town, pid, "hb-x", "not_out", w0 + 10 * HOUR_MS, f"x-{week}")
        now["ms"] = w0 + 11 * HOUR_MS
        assert r.step().crew == 1
        if week == 2:
            grant(town, household="hh-x")
        write(db_url, crew_readings(w0 + 11 * HOUR_MS, w0 + DAY_MS, beh))
        now["ms"] = w0 + DAY_MS
        outcomes.append(r.step().outcomes)
    r.close()
    assert town.execute("SELECT count(*) AS n FROM alerts WHERE kind = 'missed_collection'").fetchone()["n"] == 0
    npo = town.execute("SELECT * FROM alerts WHERE kind = 'not_put_out' AND entity = 'hb-x'").fetchone()
    ev = npo["explanation"]["evidence"]
    assert ev["crew_report"] == "not_out" and ev["terms"] == {"crew": "not_out"} and ev["put_out_motion_seen"]
    assert outcomes[1].get("no_consent") == 1                 # week 1: the welfare finding, no consent yet
    w = town.execute("SELECT * FROM alerts WHERE welfare").fetchall()
    assert len(w) == 1 and w[0]["entity"] == "hb-x" and w[0]["household"] == "hh-x" and w[0]["consent_id"]
    assert w[0]["explanation"]["evidence"]["rounds_in_a_row"] == 3


def test_crew_blocked_explains_the_missed_collection(town, db_url):
    """The crew could not reach street 1 (blocked): its bins' missed collections say so."""
    from stream_models.engine import Engine

    crew_town(town)
    pid = a_plan(town)
    beh = {n: {} for n in ("y", "a", "d0", "d1", "d2", "d3")}
    beh["y"]["left_weeks"] = (0,)
    now = {"ms": MON + 10 * HOUR_MS}
    r = Runner(db_url, lambda: Engine({"timezone": "UTC"}), CFG, clock=lambda: now["ms"] / 1000)
    write(db_url, crew_readings(MON - DAY_MS, MON + 10 * HOUR_MS, beh))
    crew_report(town, pid, "hb-y", "blocked", MON + 9 * HOUR_MS, "b-1")
    assert r.step().crew == 1
    write(db_url, crew_readings(MON + 10 * HOUR_MS, MON + DAY_MS, beh))
    now["ms"] = MON + DAY_MS
    r.step()
    r.close()
    mc = town.execute("SELECT entity, summary, explanation FROM alerts WHERE kind = 'missed_collection'").fetchall()
    assert [m["entity"] for m in mc] == ["hb-y"]
    ev = mc[0]["explanation"]["evidence"]
    assert ev["cause"] == "blocked" and ev["crew_report"] == "blocked"
    assert "the crew reported the street blocked" in mc[0]["summary"]
