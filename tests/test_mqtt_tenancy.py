"""MQTT isolation between councils (tenants) on one shared broker.

A real Mosquitto runs the generated production config (``broker_config``) with
``passwd``/``acl`` generated from a real registry holding two tenants, ``leeds``
and ``york``.  Every check is a pair: a client of the wrong tenant receives
nothing, while a correctly scoped client receives the same messages in the same
run, so a test fails if isolation breaks *or* if delivery itself stops working.

Mosquitto's ``acl_file`` does not check SUBSCRIBE (a subscription to anything
is granted) and checks read access per message at delivery.  Two consequences
are tested here:

* wildcard and ``$share`` subscriptions of another tenant stay silent;
* a shared-subscription group is round-robin and a member without read access
  *consumes* its turn: the message is dropped, not given to another member.
  Any authenticated client joining the platform ingest group could therefore
  make ingest lose readings.  The ingest group and client id are derived from
  the ingest account's secret (:func:`streetsense.identity.mosquitto.ingest_names`),
  so no other account can name them.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from contract import v1
from streetsense.identity import mosquitto as m
from streetsense.identity.credentials import IdentityStore
from tests.support.mosquitto import find_mosquitto
from tests.test_identity_broker import ACCEPTED, NOT_AUTHORIZED, Client, SecuredBroker, connect, eventually

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

DEVICES = (("leeds", "bin-1"), ("leeds", "bin-2"), ("york", "bin-1"), ("york", "air-1"))
SERVICES = (  # name, role, tenant
    ("ingest", "ingest", None),
    ("gw-leeds", "gateway", "leeds"), ("gw-york", "gateway", "york"),
    ("dash-leeds", "observer", "leeds"), ("dash-york", "observer", "york"),
    ("api-leeds", "api", "leeds"), ("api-york", "api", "york"),
)
# every filter a client of york might try in order to read leeds
GREEDY = ("#", "ss/#", "ss/v1/#", "ss/v1/+/+/up", "ss/v1/+/+/+", "+/+/+/+/+", "ss/v1/leeds/#",
          "ss/v1/leeds/+/up", "ss/v1/leeds/bin-1/up", "ss/v1/leeds/bin-1/cfg", "ss/v1/+/bin-1/#",
          "$share/ingest/ss/v1/+/+/up", "$share/york/ss/v1/#", "$share/g/#", "$SYS/#")


@pytest.fixture
def town(tmp_path, db_url):
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds'), ('york', 'York')")
        for t, d in DEVICES:
            c.execute("INSERT INTO devices (tenant, device_id, kind, status) VALUES (%s, %s, %s, 'active')",
                      (t, d, "air" if d.startswith("air") else "bin_fill"))
    with IdentityStore.connect(db_url) as s:
        creds = {f"{t}/{d}": s.issue_device_credential(t, d, "test") for t, d in DEVICES}
        for name, role, tenant in SERVICES:
            creds[name] = s.add_service_account(name, role, "test", tenant=tenant)
    b = SecuredBroker(tmp_path, db_url)
    clients: list[Client] = []

    def dev(key: str, client_id: str | None = None) -> Client:
        t, d = key.split("/")
        cl = b.device(f"{t}.{d}", creds[key].secret, client_id=client_id)
        clients.append(cl)
        assert cl.connack.value == 0
        return cl

    def svc(name: str, client_id: str | None = None) -> Client:
        cl = b.service(f"svc_{name}", creds[name].secret, client_id=client_id)
        clients.append(cl)
        assert cl.connack.value == 0
        return cl

    try:
        yield b, creds, dev, svc
    finally:
        for cl in clients:
            try:
                cl.close()
            except Exception:
                pass
        b.stop()


def leeds_traffic(dev, svc) -> list[tuple[str, bytes]]:
    """Every kind of leeds message: device up/status/ack, gateway-forwarded up, API cfg/cmd (retained cfg)."""
    d1, gw, api = dev("leeds/bin-1"), svc("gw-leeds"), svc("api-leeds")
    sent = []
    for cl, topic, retain in ((d1, v1.topic("leeds", "bin-1", v1.UP), False),
                              (d1, v1.topic("leeds", "bin-1", v1.STATUS), True),
                              (d1, v1.topic("leeds", "bin-1", v1.ACK), False),
                              (gw, v1.topic("leeds", "bin-2", v1.UP), False),
                              (api, v1.topic("leeds", "bin-1", v1.CFG), True),
                              (api, v1.topic("leeds", "bin-2", v1.CMD), False)):
        payload = f"leeds-secret:{topic}".encode()
        assert cl.publish(topic, payload, retain=retain) in ACCEPTED, topic
        sent.append((topic, payload))
    return sent


def test_other_tenant_cannot_publish_into_a_tenant(town):
    b, creds, dev, svc = town
    dash_leeds = svc("dash-leeds")
    assert dash_leeds.subscribe("ss/v1/leeds/#") == 1
    y_dev, y_gw, y_api, y_dash = dev("york/bin-1"), svc("gw-york"), svc("api-york"), svc("dash-york")
    forged = [v1.topic("leeds", "bin-1", ch) for ch in (v1.UP, v1.STATUS, v1.ACK, v1.CFG, v1.CMD)]
    for cl in (y_dev, y_gw, y_api, y_dash):
        for t in forged:
            assert cl.publish(t, b"forged-by-york") == NOT_AUTHORIZED, t
    # york's own traffic is accepted, and the leeds dashboard reader is listening (positive control below)
    assert y_dev.publish(v1.topic("york", "bin-1", v1.UP), b"york-own") in ACCEPTED
    assert y_gw.publish(v1.topic("york", "air-1", v1.UP), b"york-gw") in ACCEPTED
    d1 = dev("leeds/bin-1")
    assert d1.publish(v1.topic("leeds", "bin-1", v1.UP), b"leeds-own") in ACCEPTED
    assert eventually(lambda: len(dash_leeds.messages) >= 1)
    time.sleep(0.5)
    assert dash_leeds.messages == [(v1.topic("leeds", "bin-1", v1.UP), b"leeds-own")]


@pytest.mark.parametrize("who", ["device", "gateway", "dashboard", "api"])
def test_other_tenant_reads_nothing_through_any_filter(town, who):
    b, creds, dev, svc = town
    york = {"device": lambda: dev("york/bin-1"), "gateway": lambda: svc("gw-york"),
            "dashboard": lambda: svc("dash-york"), "api": lambda: svc("api-york")}[who]()
    for f in GREEDY:
        assert york.subscribe(f) in (0, 1, NOT_AUTHORIZED), f
    control = svc("dash-leeds")                          # leeds' own reader, subscribed the same greedy way
    assert control.subscribe("ss/v1/#") == 1
    sent = leeds_traffic(dev, svc)
    assert eventually(lambda: len(control.messages) >= len(sent))
    time.sleep(0.5)
    assert sorted(control.messages) == sorted(sent)    # delivery works ...
    assert [t for t, _ in york.messages if "/leeds/" in t] == []     # ... and york sees none of it
    assert all(b"leeds-secret" not in p for _, p in york.messages)
    # retained leeds messages are not replayed to a late york subscriber either
    late = {"device": lambda: dev("york/air-1"), "gateway": lambda: svc("gw-york", client_id="gw-york-2"),
            "dashboard": lambda: svc("dash-york", client_id="dash-york-2"),
            "api": lambda: svc("api-york", client_id="api-york-2")}[who]()
    for f in ("#", "ss/v1/leeds/#"):
        late.subscribe(f)
    time.sleep(0.5)
    assert late.messages == []


def test_tenant_scoped_accounts_see_their_own_tenant(town):
    b, creds, dev, svc = town
    dash_y, gw_y, api_y = svc("dash-york"), svc("gw-york"), svc("api-york")
    for cl in (dash_y, gw_y, api_y):
        assert cl.subscribe("#") == 1
    y1 = dev("york/bin-1")
    assert y1.publish(v1.topic("york", "bin-1", v1.UP), b"y-up") in ACCEPTED
    assert y1.publish(v1.topic("york", "bin-1", v1.STATUS), b"y-status") in ACCEPTED
    assert api_y.publish(v1.topic("york", "bin-1", v1.CFG), b"y-cfg") in ACCEPTED
    leeds_traffic(dev, svc)
    assert eventually(lambda: len(dash_y.messages) >= 3 and len(gw_y.messages) >= 1 and len(api_y.messages) >= 1)
    time.sleep(0.5)
    # the dashboard reader sees all of york, the gateway its devices' cfg/cmd, the API their status/ack
    assert sorted(dash_y.topics()) == sorted([v1.topic("york", "bin-1", c) for c in (v1.UP, v1.STATUS, v1.CFG)])
    assert gw_y.topics() == [v1.topic("york", "bin-1", v1.CFG)]
    assert api_y.topics() == [v1.topic("york", "bin-1", v1.STATUS)]


def test_platform_ingest_reads_every_tenant(town):
    b, creds, dev, svc = town
    group, client_id = m.ingest_names(creds["ingest"].secret, "ingest", "host-0")
    ing = svc("ingest", client_id=client_id)
    assert ing.subscribe(f"$share/{group}/ss/v1/+/+/up") == 1
    y1 = dev("york/bin-1")
    assert y1.publish(v1.topic("york", "bin-1", v1.UP), b"york-up") in ACCEPTED
    sent = leeds_traffic(dev, svc)
    want = {(v1.topic("york", "bin-1", v1.UP), b"york-up")} | {x for x in sent if x[0].endswith("/up")}
    assert eventually(lambda: len(ing.messages) >= len(want))
    time.sleep(0.3)
    assert set(ing.messages) == want and len(ing.messages) == len(want)


def test_no_other_account_can_join_the_ingest_share_group(town):
    """A member of a shared group without read access swallows its turn.  With a group named
    after the role (``$share/ingest/…``) a york device halves what ingest receives; the
    secret-derived group loses nothing."""
    b, creds, dev, svc = town
    group, client_id = m.ingest_names(creds["ingest"].secret, "ingest", "host-0")
    assert group.startswith("ingest-") and group != "ingest"
    assert m.ingest_names(creds["ingest"].secret, "ingest", "host-0") == (group, client_id)   # stable
    assert m.ingest_names("another-secret", "ingest", "host-0")[0] != group

    def run(share: str) -> int:
        ing = svc("ingest", client_id=f"{client_id}-{share}")
        assert ing.subscribe(f"$share/{share}/ss/v1/+/+/up") == 1
        for intruder in (dev("york/bin-1"), svc("gw-york"), svc("dash-york")):
            for guess in ("ingest", "svc_ingest", "streetsense"):        # what an intruder can name
                intruder.subscribe(f"$share/{guess}/ss/v1/+/+/up")
                intruder.subscribe(f"$share/{guess}/#")
        d1 = dev("leeds/bin-2")
        for i in range(12):
            assert d1.publish(v1.topic("leeds", "bin-2", v1.UP), f"r{i}".encode()) in ACCEPTED
        eventually(lambda: len(ing.messages) >= 12, timeout=2)
        time.sleep(0.3)
        ing.close()
        return len(ing.messages)

    assert run("ingest") < 12          # the hole: a guessable group loses readings to intruders
    assert run(group) == 12            # the fix: nobody else can name the group


def test_no_other_account_can_take_over_the_ingest_session(town):
    """On the service listener the client id is chosen by the client; ingest's is derived from
    its secret, so a tenant's account cannot take over (and drain) the ingest session."""
    b, creds, dev, svc = town
    group, client_id = m.ingest_names(creds["ingest"].secret, "ingest", "host-0")
    assert creds["ingest"].secret not in client_id and creds["ingest"].secret not in group
    ing = svc("ingest", client_id=client_id)
    assert ing.subscribe(f"$share/{group}/ss/v1/+/+/up") == 1
    for guess in ("ingest-host-0", "ingest", "svc_ingest", "ingest-0", "ingest-ingest-0"):
        svc("gw-york", client_id=guess)
    d1 = dev("leeds/bin-1")
    for i in range(5):
        assert d1.publish(v1.topic("leeds", "bin-1", v1.UP), f"r{i}".encode()) in ACCEPTED
    assert eventually(lambda: len(ing.messages) >= 5)
    assert ing.disconnected is None
    # what the secret protects: whoever names the client id takes the session over
    svc("gw-york", client_id=client_id)
    assert eventually(lambda: ing.disconnected is not None)


def test_no_other_account_can_take_over_a_gateway_session(town):
    """The gateway's central client id is derived from its secret: another council's
    account guessing ``ss-gw-<id>`` gets its own session and leaves the gateway's alone."""
    b, creds, dev, svc = town
    client_id = m.gateway_client_id("gw-leeds", creds["gw-leeds"].secret)
    assert creds["gw-leeds"].secret not in client_id
    gw = svc("gw-leeds", client_id=client_id)
    assert gw.subscribe("ss/v1/leeds/+/cfg") == 1
    for guess in ("ss-gw-gw-leeds", "gw-leeds", "svc_gw-leeds", "ss-gw-leeds"):
        svc("gw-york", client_id=guess)
    api = svc("api-leeds")
    for i in range(3):
        assert api.publish(v1.topic("leeds", f"bin-{i}", v1.CFG), b"{}") in ACCEPTED
    assert eventually(lambda: len(gw.messages) >= 3)
    assert gw.disconnected is None
    # what the secret protects: whoever names the client id takes the session over
    svc("gw-york", client_id=client_id)
    assert eventually(lambda: gw.disconnected is not None)
