"""The alert and consent routes over real HTTP (uvicorn) against a real PostgreSQL:
filters, the explanation view, the lifecycle with verdicts, the consent register,
and the audit trail of every look at welfare data."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from alerts import store
from alerts.store import upsert_finding
from api.app import create_app
from tests.support.api_auth import bearer, make_token
from tests.support.http import serve
from tests.test_alerts_store import HOUR, T0, TENANT, connect, finding, seed, welfare_finding


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


@pytest.fixture
def town(db_url):
    seed(db_url)
    with connect(db_url) as c:
        c.autocommit = True
        store.add_sink(c, TENANT, "ops-hook", "webhook", {"url": "http://127.0.0.1:9/hook", "secret": "s"})
        store.add_route(c, TENANT, "ops-hook")
        admin = bearer(make_token(db_url, "admin", TENANT, name="admin-amy"))
        with serve(create_app(db_url)) as base, httpx.Client(base_url=base, timeout=10, headers=admin) as client:
            yield client, c


CONSENT = {"tenant": TENANT, "household": "hh-7f3a", "recipient_name": "Ann Example", "recipient_role": "daughter",
           "recipient_contact": "ann@example.org", "purpose": "Tell Ann if Dad's bin is not put out twice running",
           "evidence": "signed form WF-0042"}


def test_alert_list_explanation_and_lifecycle(town):
    api, db = town
    a = upsert_finding(db, finding(t=T0, end=T0 + HOUR)).alert_id
    upsert_finding(db, finding(severity="high", t=T0 + 2 * HOUR))
    b = upsert_finding(db, finding("pm_episode", "low", entity="air-1", device_id="air-1", asset_id=None,
                                   t=T0 + 10 * HOUR)).alert_id
    spec = api.get("/openapi.json").json()
    assert {"/alerts", "/alerts/{alert_id}", "/alerts/{alert_id}/acknowledge", "/alerts/{alert_id}/resolve",
            "/alerts/{alert_id}/dismiss", "/consents", "/consents/{consent_id}/withdraw"} <= set(spec["paths"])

    def ids(**params):
        r = api.get("/alerts", params={"tenant": TENANT, **params})
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert ids() == [b, a]
    assert ids(kind="pm_episode") == [b]
    assert ids(entity="sb-1") == [a]
    assert ids(severity="high") == [a]
    assert ids(since=iso(T0 + 5 * HOUR)) == [b]
    assert ids(until=iso(T0 + 5 * HOUR)) == [a]
    assert ids(status="acknowledged") == []
    assert api.get("/alerts", params={"tenant": "Bad Tenant"}).status_code == 422

    view = api.get(f"/alerts/{a}").json()
    assert view["summary"] == "overflow_forecast at sb-1: fill 93% and rising 4%/h."
    assert view["suggested_action"] == "Empty the bin on today's round."
    assert (view["severity"], view["first_severity"], view["findings"], view["device"]) == \
        ("high", "medium", 2, "bin-2")
    assert view["explanation"]["evidence"] == {"fill": [0.81, 0.88, 0.93], "baseline_per_h": 0.012,
                                               "rule": "eta < 6h", "model": "fill-forecast", "model_version": "2"}
    assert len(view["evidence"]) == 2
    assert [(d["sink"], d["event"], d["status"]) for d in view["deliveries"]] == [("ops-hook", "opened", "pending")]
    assert api.get("/alerts/999999").status_code == 404

    r = api.post(f"/alerts/{a}/acknowledge", json={"comment": "crew on the way"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert r.json()["acknowledged_by"] == "admin-amy"
    assert api.post(f"/alerts/{a}/acknowledge").status_code == 409
    assert api.post(f"/alerts/{a}/resolve", json={"verdict": "probably"}).status_code == 422
    r = api.post(f"/alerts/{a}/resolve", json={"verdict": "true_positive", "comment": "emptied"})
    assert r.status_code == 200 and (r.json()["status"], r.json()["verdict"]) == ("resolved", "true_positive")
    assert api.post(f"/alerts/{a}/dismiss").status_code == 409
    r = api.post(f"/alerts/{b}/dismiss")          # the default verdict of a dismissal: a false positive
    assert r.status_code == 200 and (r.json()["status"], r.json()["verdict"]) == ("dismissed", "false_positive")
    assert ids(status="resolved") == [a]
    view = api.get(f"/alerts/{a}").json()
    assert [f["verdict"] for f in view["feedback"]] == ["true_positive"] and view["feedback"][0]["applied_at"] is None
    assert view["deliveries"][0]["status"] == "cancelled"
    trail = db.execute("SELECT action, details FROM audit_log WHERE subject IN (%s, %s) ORDER BY id",
                       (f"alert-{a}", f"alert-{b}")).fetchall()
    assert [t["action"] for t in trail] == ["alert.acknowledge", "alert.resolve", "alert.dismiss"]


def test_consents_and_welfare_access_are_audited(town):
    api, db = town
    r = api.post("/consents", json=CONSENT)
    assert r.status_code == 201, r.text
    consent = r.json()
    assert consent["granted_by"] == "admin-amy" and consent["withdrawn_at"] is None
    assert api.post("/consents", json=CONSENT).status_code == 409
    assert api.post("/consents", json={**CONSENT, "recipient_contact": "not-an-email"}).status_code == 422
    assert api.post("/consents", json={**CONSENT, "tenant": "nowhere"}).status_code == 404
    assert api.post("/consents", json={**CONSENT, "evidence": ""}).status_code == 422
    listed = api.get("/consents", params={"tenant": TENANT, "active": True}).json()
    assert [c["id"] for c in listed] == [consent["id"]]

    w = upsert_finding(db, welfare_finding()).alert_id
    assert api.get("/alerts", params={"tenant": TENANT, "welfare": True}).json()[0]["household"] == "hh-7f3a"
    view = api.get(f"/alerts/{w}").json()
    assert view["welfare"] and view["summary"].startswith("The bin at this household")

    r = api.post(f"/consents/{consent['id']}/withdraw", json={"reason": "resident asked"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["alerts_closed"], out["alerts_redacted"], out["deliveries_cancelled"]) == (1, 1, 0)
    assert out["consent"]["withdrawn_by"] == "admin-amy"
    assert api.post(f"/consents/{consent['id']}/withdraw").status_code == 409
    assert api.post("/consents/999999/withdraw").status_code == 404
    view = api.get(f"/alerts/{w}").json()
    assert (view["status"], view["resolution"], view["summary"], view["evidence"]) == \
        ("dismissed", "consent_withdrawn", store.REDACTED, [])
    assert api.get("/consents", params={"tenant": TENANT, "active": True}).json() == []

    trail = db.execute("SELECT actor, action, details FROM audit_log WHERE subject = 'hh-7f3a' ORDER BY id").fetchall()
    assert [t["action"] for t in trail] == ["consent.grant", "consent.view", "welfare.raise", "welfare.view",
                                            "welfare.view", "consent.withdraw", "welfare.view"]
    assert [t["details"].get("via") for t in trail if t["action"] == "welfare.view"] == ["list", "detail", "detail"]


def test_alert_routes_need_the_token(db_url):
    seed(db_url)
    tok = make_token(db_url, "operations", TENANT)
    with serve(create_app(db_url)) as base, httpx.Client(base_url=base) as c:
        assert c.get("/alerts", params={"tenant": TENANT}).status_code == 401
        assert c.post("/alerts/1/acknowledge").status_code == 401
        assert c.get("/consents", params={"tenant": TENANT}).status_code == 401
        assert c.post("/consents", json=CONSENT).status_code == 401
        ok = c.get("/alerts", params={"tenant": TENANT}, headers=bearer(tok))
        assert ok.status_code == 200 and ok.json() == []
