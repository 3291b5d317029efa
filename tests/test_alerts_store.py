"""Alert rules against a real, migrated PostgreSQL: one open alert per problem
growing with its evidence, rate limits, routing, the operator lifecycle with
audited verdicts, and the welfare consent gate (including a withdrawal racing
a runner transaction). Helpers here are shared by the other test_alerts files."""

from __future__ import annotations

import doctest
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

import alerts.sinks
from alerts import store
from alerts.store import Policy, upsert_finding
from stream_models.findings import make_finding

T0 = 1_767_225_600_000          # 2026-01-01T00:00Z
HOUR = 3_600_000
TENANT = "leeds"


def seed(db_url: str) -> None:
    """A tenant, a household bin (welfare-capable), a street bin in another ward, an air sensor."""
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants VALUES ('leeds', 'Leeds City Council')")
        c.execute("""INSERT INTO assets (tenant, asset_id, bin_kind, household, ward, lat, lon, capacity_l, depth_m)
                     VALUES ('leeds', 'hb-1', 'household', 'hh-7f3a', 'headingley', 53.82, -1.58, 240, 1.0),
                            ('leeds', 'sb-1', 'street', NULL, 'city', 53.80, -1.55, 120, 0.9),
                            ('leeds', 'sb-2', 'street', NULL, 'city', 53.7965, -1.5478, 120, 0.9)""")
        c.execute("""INSERT INTO devices (tenant, device_id, kind, asset_id, status) VALUES
                     ('leeds', 'bin-1', 'bin_fill', 'hb-1', 'active'), ('leeds', 'bin-2', 'bin_fill', 'sb-1', 'active'),
                     ('leeds', 'bin-3', 'bin_fill', 'sb-2', 'active')""")
        c.execute("""INSERT INTO devices (tenant, device_id, kind, lat, lon, status)
                     VALUES ('leeds', 'air-1', 'air', 53.79, -1.54, 'active')""")


def finding(kind: str = "overflow_forecast", severity: str = "medium", entity: str = "sb-1", *,
            t: int = T0, end: int | None = None, explanation: str | None = None, **kw):
    args = {"device_id": {"sb-1": "bin-2", "sb-2": "bin-3", "hb-1": "bin-1"}.get(entity, entity),
            "asset_id": entity if entity.startswith(("sb-", "hb-")) else None, **kw}
    return make_finding(kind, severity, tenant=TENANT, entity=entity, window_start_ms=t, window_end_ms=end,
                        explanation=explanation or f"{kind} at {entity}: fill 93% and rising 4%/h.",
                        evidence={"fill": [0.81, 0.88, 0.93], "baseline_per_h": 0.012, "rule": "eta < 6h"},
                        suggested_action="Empty the bin on today's round.", model="fill-forecast", version="2",
                        **args)


def welfare_finding(t: int = T0):
    return make_finding("not_put_out_2", "medium", tenant=TENANT, entity="hb-1", device_id="bin-1", asset_id="hb-1",
                        window_start_ms=t, window_end_ms=t + 14 * 24 * HOUR,
                        explanation="The bin at this household was not put out on two collection rounds in a row.",
                        evidence={"rounds": ["2026-01-05", "2026-01-12"], "fill": 0.2},
                        suggested_action="Please check that the resident is well.", welfare=True,
                        household="hh-7f3a", model="set-out", version="1")


def grant(c: psycopg.Connection, **kw) -> dict:
    args = {"tenant": TENANT, "household": "hh-7f3a", "recipient_name": "Ann Example", "recipient_role": "daughter",
            "recipient_contact": "ann@example.org", "purpose": "Tell Ann if Dad's bin is not put out twice running",
            "evidence": "signed form WF-0042", "actor": "officer-1"}
    args.update(kw)
    return store.grant_consent(c, **args)


def connect(db_url: str) -> psycopg.Connection:
    return psycopg.connect(db_url, row_factory=dict_row)


@pytest.fixture
def db(db_url):
    seed(db_url)
    with connect(db_url) as c:
        yield c


def deliveries(c: psycopg.Connection, alert_id: int | None = None) -> list[dict]:
    return c.execute("""SELECT * FROM alert_deliveries WHERE %(a)s::bigint IS NULL OR alert_id = %(a)s
                        ORDER BY id""", {"a": alert_id}).fetchall()


def test_sinks_doctests():
    assert doctest.testmod(alerts.sinks).failed == 0


def test_one_open_alert_grows_with_its_evidence(db):
    store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": "http://127.0.0.1:9/x", "secret": "s"})
    store.add_route(db, TENANT, "ops-hook")
    pol = Policy()
    a = upsert_finding(db, finding(severity="low", t=T0, end=T0 + HOUR), pol)
    b = upsert_finding(db, finding(severity="medium", t=T0 + 2 * HOUR, explanation="Fill 97%, overflow in 2 h."), pol)
    c = upsert_finding(db, finding(severity="low", t=T0 - HOUR, end=T0 + 3 * HOUR), pol)
    other = upsert_finding(db, finding(entity="sb-2"), pol)
    assert (a.outcome, b.outcome, c.outcome, other.outcome) == ("opened", "escalated", "updated", "opened")
    assert a.alert_id == b.alert_id == c.alert_id != other.alert_id
    row = store.get_alert(db, a.alert_id)
    assert row["severity"] == "medium" and row["first_severity"] == "low"       # rose, never fell back
    assert row["findings"] == 3 and len(row["evidence"]) == 3
    assert [e["severity"] for e in row["evidence"]] == ["low", "medium", "low"]
    assert row["evidence"][0]["evidence"]["model"] == "fill-forecast"
    assert row["evidence"][0]["evidence"]["model_version"] == "2"
    assert row["window_start"].timestamp() * 1000 == T0 - HOUR                  # window extends both ways
    assert row["window_end"].timestamp() * 1000 == T0 + 3 * HOUR
    assert row["summary"].startswith("overflow_forecast at sb-1")               # the latest explanation
    assert (row["ward"], row["lat"], row["lon"]) == ("city", 53.80, -1.55)      # from the asset
    assert row["device_id"] is not None
    # escalations within the re-notify interval raise severity but send nothing more...
    assert b.deliveries == 0 and [d["event"] for d in deliveries(db, a.alert_id)] == ["opened"]
    d = upsert_finding(db, finding(severity="high"), pol)
    assert d.outcome == "escalated" and d.deliveries == 0
    assert store.get_alert(db, a.alert_id)["severity"] == "high"
    # ...except a rise to critical, which always goes out
    e = upsert_finding(db, finding(severity="critical"), pol)
    assert e.deliveries == 1 and deliveries(db, a.alert_id)[-1]["event"] == "escalated:critical"
    # once the interval has passed, any escalation notifies
    f = upsert_finding(db, finding(entity="sb-2", severity="high"), Policy(renotify_after=timedelta(0)))
    assert f.deliveries == 1 and deliveries(db, other.alert_id)[-1]["event"] == "escalated:high"
    # evidence is capped: the first finding and the newest are kept
    for i in range(10):
        upsert_finding(db, finding(t=T0 + i), Policy(evidence_cap=4))
    row = store.get_alert(db, a.alert_id)
    assert len(row["evidence"]) == 4 and row["evidence"][0]["severity"] == "low" and row["findings"] == 15
    assert row["evidence"][-1]["window_start"].startswith("2026-01-01T00:00:00.009")
    keys = [d["idempotency_key"] for d in deliveries(db)]
    assert len(set(keys)) == len(keys) and all(k.startswith("ss_") for k in keys)


def test_cooldown_after_close_and_storm_limit(db):
    store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": "http://127.0.0.1:9/x", "secret": "s"})
    store.add_route(db, TENANT, "ops-hook")
    a = upsert_finding(db, finding())
    store.close(db, a.alert_id, "op", "dismissed", "false_positive")
    again = upsert_finding(db, finding())
    assert again == store.Upserted("suppressed", a.alert_id)
    assert store.get_alert(db, a.alert_id)["suppressed"] == 1
    reopened = upsert_finding(db, finding(), Policy(cooldown=timedelta(0)))
    assert reopened.outcome == "opened" and reopened.alert_id != a.alert_id
    # storm: at most 2 new alerts of a kind per hour are sent; more are stored muted
    pol = Policy(storm_limit=2)
    outs = [upsert_finding(db, finding("battery_low", "low", entity=f"dev-{i}", device_id=None), pol) for i in range(4)]
    muted = [store.get_alert(db, o.alert_id)["muted"] for o in outs]
    assert muted == [False, False, True, True]
    assert [o.deliveries for o in outs] == [1, 1, 0, 0]


def test_routing_by_kind_severity_area_and_welfare(db):
    for name, kind, cfg in (("city-311", "open311", {"base_url": "http://127.0.0.1:9", "api_key": "k",
                                                      "service_code": "GENERAL"}),
                            ("box-hook", "webhook", {"url": "http://127.0.0.1:9", "secret": "s"}),
                            ("night-mail", "email", {"host": "127.0.0.1", "port": 9, "to": ["duty@leeds.example"]}),
                            ("care-mail", "email", {"host": "127.0.0.1", "port": 9}),
                            ("care-311", "open311", {"base_url": "http://127.0.0.1:9", "api_key": "k",
                                                     "service_code": "GENERAL"})):
        store.add_sink(db, TENANT, name, kind, cfg)
    store.add_route(db, TENANT, "city-311", kinds=["overflow_forecast", "fire_risk"], ward="city")
    store.add_route(db, TENANT, "box-hook", bbox=(53.795, -1.549, 53.799, -1.546))     # around sb-2 only
    store.add_route(db, TENANT, "night-mail", min_severity="high")
    store.add_route(db, TENANT, "care-mail", welfare=True)
    store.add_route(db, TENANT, "care-311", welfare=True)      # never used: welfare does not go to Open311

    def sinks(alert_id):
        return sorted((d["sink"], d["event"]) for d in deliveries(db, alert_id))

    a = upsert_finding(db, finding(entity="sb-1"))
    assert sinks(a.alert_id) == [("city-311", "opened")]
    b = upsert_finding(db, finding(entity="sb-2"))
    assert sinks(b.alert_id) == [("box-hook", "opened"), ("city-311", "opened")]
    c = upsert_finding(db, finding("pm_episode", "medium", entity="air-1", device_id="air-1", asset_id=None))
    assert sinks(c.alert_id) == []
    upsert_finding(db, finding("pm_episode", "high", entity="air-1", device_id="air-1", asset_id=None))
    assert sinks(c.alert_id) == [("night-mail", "escalated:high")]
    upsert_finding(db, finding(entity="sb-2", severity="critical"), Policy(renotify_after=timedelta(0)))
    # Open311 gets one request per incident: escalations go to the other sinks only
    assert sinks(b.alert_id) == [("box-hook", "escalated:critical"), ("box-hook", "opened"),
                                 ("city-311", "opened"), ("night-mail", "escalated:critical")]
    grant(db)
    w = upsert_finding(db, welfare_finding())
    ds = deliveries(db, w.alert_id)
    assert [(d["sink"], d["recipient"]) for d in ds] == [("care-mail", "ann@example.org")]


def test_lifecycle_is_audited_and_verdicts_queue_feedback(db):
    store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": "http://127.0.0.1:9", "secret": "s"})
    store.add_route(db, TENANT, "ops-hook")
    a = upsert_finding(db, finding()).alert_id
    acked = store.acknowledge(db, a, "op-ann", "on it")
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "op-ann"
    with pytest.raises(store.Conflict):
        store.acknowledge(db, a, "op-ann")
    upsert_finding(db, finding(severity="high"))          # an acknowledged alert still grows
    assert store.get_alert(db, a)["findings"] == 2
    closed = store.close(db, a, "op-bob", "resolved", "true_positive", "emptied")
    assert (closed["status"], closed["verdict"], closed["resolution"], closed["comment"]) == \
        ("resolved", "true_positive", "operator", "emptied")
    with pytest.raises(store.Conflict):
        store.close(db, a, "op-bob", "dismissed", "false_positive")
    with pytest.raises(store.NotFound):
        store.acknowledge(db, 999_999, "op")
    with pytest.raises(ValueError):
        store.close(db, a, "op", "resolved", "maybe")
    assert {d["status"] for d in deliveries(db, a)} == {"cancelled"}        # never sent: nothing after close
    trail = db.execute("SELECT actor, action, subject, details FROM audit_log WHERE subject = %s ORDER BY id",
                       (f"alert-{a}",)).fetchall()
    assert [(t["actor"], t["action"]) for t in trail] == [("op-ann", "alert.acknowledge"), ("op-bob", "alert.resolve")]
    assert trail[1]["details"]["verdict"] == "true_positive"
    fb = db.execute("SELECT * FROM alert_feedback").fetchall()
    assert [(f["kind"], f["entity"], f["verdict"], f["applied_at"]) for f in fb] == \
        [("overflow_forecast", "sb-1", "true_positive", None)]
    with pytest.raises(psycopg.errors.RaiseException):
        db.execute("UPDATE audit_log SET actor = 'someone-else'")
    db.rollback()


def test_welfare_needs_consent_and_withdrawal_stops_it_at_once(db):
    store.add_sink(db, TENANT, "care-mail", "email", {"host": "127.0.0.1", "port": 9})
    store.add_route(db, TENANT, "care-mail", welfare=True)
    assert upsert_finding(db, welfare_finding()) == store.Upserted("no_consent", None)
    assert db.execute("SELECT count(*) AS n FROM alerts").fetchone()["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM audit_log WHERE subject = 'hh-7f3a'").fetchone()["n"] == 0
    c = grant(db)
    with pytest.raises(store.Conflict):
        grant(db, recipient_name="Someone Else")
    w = upsert_finding(db, welfare_finding())
    alert = store.get_alert(db, w.alert_id)
    assert alert["welfare"] and alert["consent_id"] == c["id"] and alert["household"] == "hh-7f3a"
    assert [d["status"] for d in deliveries(db, w.alert_id)] == ["pending"]
    out = store.withdraw_consent(db, c["id"], "officer-2", "resident asked")
    assert (out["alerts_closed"], out["alerts_redacted"], out["deliveries_cancelled"]) == (1, 1, 1)
    alert = store.get_alert(db, w.alert_id)
    assert (alert["status"], alert["resolution"], alert["summary"], alert["evidence"]) == \
        ("dismissed", "consent_withdrawn", store.REDACTED, [])
    assert (alert["household"], alert["asset_id"], alert["device_id"], alert["lat"], alert["entity"]) == \
        (None, None, None, None, f"redacted-{w.alert_id}")
    d = deliveries(db, w.alert_id)[0]
    assert (d["status"], d["cancelled_reason"], d["recipient"]) == ("cancelled", "consent withdrawn", None)
    assert upsert_finding(db, welfare_finding()).outcome == "no_consent"
    with pytest.raises(store.Conflict):
        store.withdraw_consent(db, c["id"], "officer-2")
    actions = [r["action"] for r in db.execute(
        "SELECT action FROM audit_log WHERE subject = 'hh-7f3a' ORDER BY id").fetchall()]
    assert actions == ["consent.grant", "welfare.raise", "consent.withdraw"]
    # consent given again: alerts resume (no cooldown from a withdrawal)
    grant(db, recipient_name="Ann Example", evidence="second form WF-0051")
    assert upsert_finding(db, welfare_finding()).outcome == "opened"


def test_withdrawal_racing_a_runner_transaction_closes_what_it_raised(db_url):
    seed(db_url)
    with connect(db_url) as setup:
        cid = grant(setup)["id"]
        setup.commit()
    runner = connect(db_url)
    officer = connect(db_url)
    try:
        out = upsert_finding(runner, welfare_finding())        # not committed yet: holds the consent FOR SHARE
        done = threading.Event()
        result = {}

        def withdraw():
            result.update(store.withdraw_consent(officer, cid, "officer-2"))
            officer.commit()
            done.set()

        t = threading.Thread(target=withdraw)
        t.start()
        assert not done.wait(0.5)                     # the withdrawal waits for the runner's transaction
        runner.commit()
        t.join(10)
        assert done.is_set() and result["alerts_closed"] == 1
        a = store.get_alert(runner, out.alert_id)
        assert a["status"] == "dismissed" and a["redacted_at"] is not None
    finally:
        runner.close()
        officer.close()


def test_open_problem_is_unique_even_for_concurrent_writers(db_url):
    """Two transactions raising the same problem at once: the partial unique index keeps one open alert."""
    seed(db_url)
    c1, c2 = connect(db_url), connect(db_url)
    try:
        upsert_finding(c1, finding())
        errors = []

        def second():
            try:
                upsert_finding(c2, finding())
                c2.commit()
            except psycopg.errors.UniqueViolation as e:
                errors.append(e)
                c2.rollback()

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        c1.commit()
        t.join(10)
        n = c1.execute("SELECT count(*) AS n FROM alerts WHERE status = 'open'").fetchone()["n"]
        assert n == 1 and len(errors) == 1        # the runner holds an advisory lock, so this never happens there
    finally:
        c1.close()
        c2.close()
