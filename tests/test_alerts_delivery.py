"""Delivery through the outbox to real servers on localhost: an Open311
GeoReport v2 server, a webhook receiver that verifies signatures, and an SMTP
server (aiosmtpd). Includes the chaos test: sinks killed mid-run while alerts
keep coming, then brought back; every alert takes effect exactly once."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from datetime import timedelta

import httpx
import pytest
from aiosmtpd.controller import Controller

from alerts import store
from alerts.outbox import OutboxConfig, OutboxWorker
from alerts.sinks import sign
from alerts.store import upsert_finding
from streetsense.embedded import free_port
from tests.support.open311 import Open311Server
from tests.support.webhook import WebhookReceiver
from tests.test_alerts_store import TENANT, connect, deliveries, finding, grant, seed, welfare_finding

SECRET = "whsec_test_0123456789"
FAST = OutboxConfig(backoff_base_s=0.05, backoff_cap_s=0.3, idle_s=0.05, lease=timedelta(seconds=5),
                    http_timeout_s=3, poll_every=timedelta(0))


class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos),
                              email.message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        yield ctl, inbox
    finally:
        ctl.stop()


@pytest.fixture
def db(db_url):
    seed(db_url)
    with connect(db_url) as c:
        c.autocommit = True
        yield c


def run_until(worker: OutboxWorker, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the outbox"
        worker.run_once()
        time.sleep(0.02)


def add_open311(db, server: Open311Server, name: str = "city-311", **route) -> None:
    store.add_sink(db, TENANT, name, "open311", {"base_url": server.base_url, "api_key": server.api_key,
                                                 "service_code": "GENERAL",
                                                 "service_codes": {"overflow_forecast": "BIN-OVERFLOW"}})
    store.add_route(db, TENANT, name, **route)


def test_open311_one_request_per_incident_and_council_closure_resolves(db, db_url):
    server = Open311Server().start()
    worker = OutboxWorker(db_url, FAST)
    try:
        add_open311(db, server)
        a = upsert_finding(db, finding(entity="sb-1")).alert_id
        run_until(worker, lambda: deliveries(db, a)[0]["status"] == "delivered")
        d = deliveries(db, a)[0]
        req = server.requests[d["external_id"]]
        assert (req["service_code"], req["lat"], req["long"]) == ("BIN-OVERFLOW", 53.8, -1.55)
        assert req["attributes"]["streetsense_ref"] == d["idempotency_key"]
        assert d["idempotency_key"] in req["description"] and "Empty the bin" in req["description"]
        assert d["attempts"] == 1 and d["payload"]["service_code"] == "BIN-OVERFLOW"

        # the POST's answer is lost: the request exists but we never heard its id. The retry looks it up.
        server.lose_next = 1
        b = upsert_finding(db, finding(entity="sb-2")).alert_id
        run_until(worker, lambda: deliveries(db, b)[0]["status"] == "delivered")
        d = deliveries(db, b)[0]
        assert d["attempts"] == 2                                 # the second attempt found it
        assert server.posts == 2                                  # one POST per alert, never a second
        assert set(server.created_by_ref().values()) == {1} and len(server.requests) == 2
        assert server.requests[d["external_id"]]["attributes"]["streetsense_ref"] == d["idempotency_key"]

        # escalation: no second service request for the same incident
        upsert_finding(db, finding(entity="sb-1", severity="critical"))
        worker.run_once()
        assert len(deliveries(db, a)) == 1 and server.posts == 2

        # the council closes the request: the poller resolves the alert
        server.close_request(deliveries(db, a)[0]["external_id"], "Emptied 14:05 by crew 3")
        run_until(worker, lambda: store.get_alert(db, a)["status"] == "resolved")
        row = store.get_alert(db, a)
        assert (row["resolution"], row["closed_by"], row["comment"]) == \
            ("council", "open311:city-311", "Emptied 14:05 by crew 3")
        assert store.get_alert(db, b)["status"] == "open"
        assert deliveries(db, a)[0]["remote_status"] == "closed"
        audit = db.execute("SELECT actor, action FROM audit_log WHERE subject = %s", (f"alert-{a}",)).fetchall()
        assert audit == [{"actor": "open311:city-311", "action": "alert.council_close"}]

        # a server that answers with a token: the id is fetched from tokens/{token}.json
        server.tokens = True
        c = upsert_finding(db, finding("fire_risk", "critical", entity="sb-1", device_id="bin-2")).alert_id
        run_until(worker, lambda: deliveries(db, c)[0]["status"] == "delivered")
        d = deliveries(db, c)[0]
        assert server.requests[d["external_id"]]["service_code"] == "GENERAL" and server.posts == 3
    finally:
        worker.close()
        server.stop()


def test_webhook_is_signed_retried_and_takes_effect_once(db, db_url):
    rx = WebhookReceiver(SECRET).start()
    worker = OutboxWorker(db_url, FAST)
    try:
        store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": rx.url + "/hook", "secret": SECRET})
        store.add_route(db, TENANT, "ops-hook")
        rx.fail_next = 2                      # two 503s, then the receiver processes it but the answer is lost
        rx.lose_next = 1
        a = upsert_finding(db, finding()).alert_id
        run_until(worker, lambda: deliveries(db, a)[0]["status"] == "delivered")
        d = deliveries(db, a)[0]
        key = d["idempotency_key"]
        assert d["attempts"] == 4 and rx.arrived[key] == 4 and rx.effects[key] == 1 and rx.rejected == []
        ev = rx.events[0]
        assert (ev["alert_id"], ev["event"], ev["kind"], ev["severity"], ev["entity"]) == \
            (a, "opened", "overflow_forecast", "medium", "sb-1")
        assert ev["evidence"]["model"] == "fill-forecast" and ev["suggested_action"].startswith("Empty")
        # receivers refuse stale timestamps (replays), bad signatures and unsigned posts
        body = b'{"alert_id": 1}'
        old = int(time.time()) - 3600
        now = int(time.time())
        with httpx.Client() as c:
            assert c.post(rx.url, content=body, headers={"X-StreetSense-Timestamp": str(old),
                                                         "X-StreetSense-Signature": sign(SECRET, old, body)}
                          ).status_code == 401
            assert c.post(rx.url, content=body, headers={"X-StreetSense-Timestamp": str(now),
                                                         "X-StreetSense-Signature": sign("wrong", now, body)}
                          ).status_code == 401
            assert c.post(rx.url, content=body + b" ", headers={"X-StreetSense-Timestamp": str(now),
                                                                "X-StreetSense-Signature": sign(SECRET, now, body)}
                          ).status_code == 401
            assert c.post(rx.url, content=body).status_code == 401
        assert rx.rejected == ["stale timestamp", "bad signature", "bad signature", "missing signature headers"]
        # a sink with the wrong secret never gets acknowledged: it stays pending, retried with backoff
        store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": rx.url + "/hook", "secret": "not-the-secret"})
        b = upsert_finding(db, finding(entity="sb-2")).alert_id
        for _ in range(3):
            worker.run_once()
            time.sleep(0.1)
        d = deliveries(db, b)[0]
        assert d["status"] == "pending" and d["attempts"] >= 2 and "401" in d["last_error"]
        assert rx.rejected[-1] == "bad signature" and len(rx.events) == 1
    finally:
        worker.close()
        rx.stop()


def test_email_via_smtp_and_welfare_only_to_the_named_recipient(db, db_url, smtp):
    ctl, inbox = smtp
    worker = OutboxWorker(db_url, FAST)
    try:
        cfg = {"host": "127.0.0.1", "port": ctl.port, "sender": "alerts@leeds.example", "to": ["duty@leeds.example"]}
        store.add_sink(db, TENANT, "duty-mail", "email", cfg)
        store.add_sink(db, TENANT, "care-mail", "email", {**cfg, "to": ["should-not-be-used@leeds.example"]})
        store.add_route(db, TENANT, "duty-mail")
        store.add_route(db, TENANT, "care-mail", welfare=True)
        a = upsert_finding(db, finding()).alert_id
        grant(db)
        w = upsert_finding(db, welfare_finding()).alert_id
        run_until(worker, lambda: len(inbox.messages) == 2)
        by_to = {tuple(rcpt): msg for rcpt, msg in inbox.messages}
        ops = by_to[("duty@leeds.example",)]
        da = deliveries(db, a)[0]
        assert ops["Message-ID"] == f"<{da['idempotency_key']}@streetsense.invalid>"
        assert ops["Subject"] == "[StreetSense] New medium alert: overflow_forecast at sb-1"
        body = ops.get_content()
        assert "fill 93% and rising" in body and "Suggested action: Empty the bin" in body and "eta < 6h" in body
        care = by_to[("ann@example.org",)]                    # the consent's recipient, not the sink's list
        assert care["Subject"] == "[StreetSense] Please check on household hh-7f3a"
        assert "Nothing else happens automatically" in care.get_content()
        assert "eta < 6h" not in care.get_content()          # welfare mail carries no sensor evidence
        assert [d["status"] for d in deliveries(db)] == ["delivered", "delivered"]
        trail = db.execute("SELECT actor, action FROM audit_log WHERE subject = 'hh-7f3a' ORDER BY id").fetchall()
        assert [(t["actor"], t["action"]) for t in trail] == [
            ("officer-1", "consent.grant"), ("runner", "welfare.raise"), ("outbox", "welfare.deliver")]
        assert store.get_alert(db, w)["status"] == "open"     # it asks a person to check; nothing acts by itself
    finally:
        worker.close()


def test_withdrawal_cancels_a_pending_welfare_delivery(db, db_url):
    """The mail server is down when the welfare alert is raised; consent is withdrawn before it comes
    back: nothing is ever sent."""
    port = free_port()
    worker = OutboxWorker(db_url, FAST)
    inbox = Inbox()
    try:
        store.add_sink(db, TENANT, "care-mail", "email", {"host": "127.0.0.1", "port": port})
        store.add_route(db, TENANT, "care-mail", welfare=True)
        cid = grant(db)["id"]
        w = upsert_finding(db, welfare_finding()).alert_id
        worker.run_once()
        d = deliveries(db, w)[0]
        assert d["status"] == "pending" and d["attempts"] == 1 and "ConnectionRefused" in d["last_error"]
        with db.transaction():
            out = store.withdraw_consent(db, cid, "officer-2", "resident asked")
        assert out["deliveries_cancelled"] == 1
        ctl = Controller(inbox, hostname="127.0.0.1", port=port)
        ctl.start()
        try:
            for _ in range(5):
                worker.run_once()
                time.sleep(0.1)
        finally:
            ctl.stop()
        assert inbox.messages == []
        d = deliveries(db, w)[0]
        assert (d["status"], d["attempts"], d["payload"]) == ("cancelled", 1, None)
    finally:
        worker.close()


def test_chaos_sinks_killed_mid_run_every_alert_delivered_exactly_once(db, db_url):
    """Two workers drain the outbox while alerts keep coming; a third sends and dies before recording it.
    Both sinks are killed mid-run (connections refused), stay down while more alerts are raised, and
    come back on the same ports; answers are also lost now and then. Afterwards every alert has had
    exactly one effect at each sink, counted at the receiver by idempotency key, and one Open311
    service request."""
    rx = WebhookReceiver(SECRET).start()
    council = Open311Server().start()
    store.add_sink(db, TENANT, "ops-hook", "webhook", {"url": rx.url + "/hook", "secret": SECRET})
    store.add_route(db, TENANT, "ops-hook")
    add_open311(db, council)
    stop = threading.Event()
    workers = [OutboxWorker(db_url, FAST) for _ in range(2)]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    producer = connect(db_url)
    producer.autocommit = True
    alerts: list[int] = []

    def raise_alerts(n: int) -> None:
        for _ in range(n):
            i = len(alerts)
            with producer.transaction():
                alerts.append(upsert_finding(producer, finding(entity=f"sb-{i + 100}", device_id=None,
                                                               lat=53.8, lon=-1.55)).alert_id)
            time.sleep(0.01)

    class Crash(Exception):
        pass

    class DoomedWorker(OutboxWorker):
        """Sends, then dies before recording it: its rows stay leased until the lease runs out."""

        def _finish(self, *a, **kw):
            raise Crash

    try:
        raise_alerts(10)
        doomed = DoomedWorker(db_url, OutboxConfig(batch=4, lease=timedelta(seconds=1), http_timeout_s=3))
        with pytest.raises(Crash):
            doomed.run_once()
        doomed.close()
        assert db.execute("SELECT count(*) AS n FROM alert_deliveries WHERE status = 'sending'").fetchone()["n"] == 4
        for t in threads:
            t.start()
        rx.lose_next, council.lose_next = 2, 2
        raise_alerts(5)
        rx.stop()                      # kill both sinks mid-run
        council.stop()
        raise_alerts(15)               # alerts keep coming while they are down
        time.sleep(0.5)
        down = db.execute("SELECT count(*) AS n FROM alert_deliveries WHERE status <> 'delivered'").fetchone()["n"]
        assert down > 0
        rx.start()                     # back, on the same ports
        council.start()
        raise_alerts(10)
        deadline = time.monotonic() + 30
        while db.execute("SELECT count(*) AS n FROM alert_deliveries WHERE status <> 'delivered'").fetchone()["n"]:
            assert time.monotonic() < deadline, "not everything was delivered after the sinks came back"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for w in workers:
            w.close()
        producer.close()
        rx.stop()
        council.stop()
    rows = deliveries(db)
    assert len(rows) == 2 * len(alerts) == 80 and {d["status"] for d in rows} == {"delivered"}
    hook_keys = {d["idempotency_key"] for d in rows if d["sink"] == "ops-hook"}
    council_keys = {d["idempotency_key"] for d in rows if d["sink"] == "city-311"}
    assert set(rx.effects) == hook_keys and set(rx.effects.values()) == {1}       # each exactly once
    assert sorted(e["alert_id"] for e in rx.events) == sorted(alerts)
    assert sum(rx.arrived.values()) >= len(alerts) + 2                           # lost answers were retried
    assert council.posts == len(alerts)                           # a lost answer was looked up, not re-posted
    assert set(council.created_by_ref()) == council_keys and set(council.created_by_ref().values()) == {1}
    assert len(council.requests) == len(alerts)
    ids = {d["external_id"] for d in rows if d["sink"] == "city-311"}
    assert ids == set(council.requests)                                         # every id was recorded
    assert max(d["attempts"] for d in rows) > 1
