"""Access control against a real Mosquitto running the generated production config.

The broker runs ``broker_config`` output (no anonymous access, TLS device listener
with the certificate from ``streetsense.identity.pki``, plain service listener on
loopback) with ``passwd``/``acl`` generated from a real registry database.
Clients are paho MQTT 5 clients, so refusals show up as reason codes:
PUBACK 0x87 (Not authorized) for a publish outside a device's own topics.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from contract import v1
from streetsense.embedded import free_port, wait_port
from streetsense.identity import mosquitto as m
from streetsense.identity import pki
from streetsense.identity.credentials import IdentityStore
from tests.support.mosquitto import find_mosquitto

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)      # Success, No matching subscribers


@dataclass
class Client:
    """A paho MQTT 5 client driven by its own network thread, recording everything."""
    c: mqtt.Client
    connack: object = None
    pubacks: dict = field(default_factory=dict)
    subacks: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    disconnected: object = None
    connected: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, payload: bytes, retain: bool = False, timeout: float = 5) -> int:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + timeout
        while info.mid not in self.pubacks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return self.pubacks[info.mid]

    def subscribe(self, topic: str, timeout: float = 5) -> int:
        _, mid = self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + timeout
        while mid not in self.subacks:
            assert time.monotonic() < deadline, f"no SUBACK for {topic}"
            time.sleep(0.01)
        return self.subacks[mid]

    def topics(self) -> list[str]:
        return [t for t, _ in self.messages]

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def connect(port: int, username: str | None, password: str | None, *, client_id: str,
            ca: Path | None = None, timeout: float = 5) -> Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    cl = Client(c)
    if username:
        c.username_pw_set(username, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(_c, _u, _f, rc, _p):
        cl.connack = rc
        cl.connected.set()

    c.on_connect = on_connect
    c.on_publish = lambda _c, _u, mid, rc, _p: cl.pubacks.__setitem__(mid, rc.value)
    c.on_subscribe = lambda _c, _u, mid, rcs, _p: cl.subacks.__setitem__(mid, rcs[0].value)
    c.on_message = lambda _c, _u, msg: cl.messages.append((msg.topic, msg.payload))
    c.on_disconnect = lambda _c, _u, _f, rc, _p: setattr(cl, "disconnected", rc)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert cl.connected.wait(timeout), "no CONNACK"
    return cl


def refused(port: int, username: str | None, password: str | None, ca: Path | None = None) -> int:
    cl = connect(port, username, password, client_id="probe-refused", ca=ca)
    cl.c.loop_stop()
    assert cl.connack.is_failure, f"{username} was accepted"
    return cl.connack.value


def eventually(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


class SecuredBroker:
    """Mosquitto with the generated config and files; ``sync()`` = what the CLI does after a change."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.db_url = db_url
        self.pki = root / "pki"
        self.dir = root / "broker"
        self.device_port = free_port()
        self.service_port = free_port()
        pki.init_ca(self.pki)
        pki.server_cert(self.pki, ["localhost", "127.0.0.1"])
        self.ca = self.pki / pki.CA_CERT
        self.store = IdentityStore.connect(db_url)
        conf = m.broker_config(
            self.dir, persistence=False, run_as_root=os.geteuid() == 0,
            listeners=[m.Listener(self.device_port, "127.0.0.1", tls=True, devices=True),
                       m.Listener(self.service_port, "127.0.0.1", tls=False, devices=False)],
            certfile=self.pki / pki.SERVER_CERT, keyfile=self.pki / pki.SERVER_KEY, cafile=self.ca,
            extra=f"log_dest file {self.dir / 'mosquitto.log'}\nlog_type error\nlog_type warning\n")
        m.write_private(self.dir / m.CONF, conf, 0o644)
        (self.dir / "run").mkdir()
        m.sync(self.store, self.dir, reload=False)
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.dir / m.CONF)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port("127.0.0.1", self.device_port)
            wait_port("127.0.0.1", self.service_port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log()}") from None
        assert eventually(lambda: (self.dir / m.PID).exists())

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text() if p.exists() else ""

    def sync(self) -> m.SyncResult:
        res = m.sync(self.store, self.dir)
        assert res.reloaded, "the broker was not signalled"
        time.sleep(0.3)            # mosquitto applies SIGHUP in its main loop
        return res

    def device(self, username: str, secret: str, client_id: str | None = None) -> Client:
        return connect(self.device_port, username, secret, client_id=client_id or username.split(".", 1)[1],
                       ca=self.ca)

    def service(self, username: str, secret: str, client_id: str | None = None) -> Client:
        return connect(self.service_port, username, secret, client_id=client_id or username)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.store.close()


@pytest.fixture
def world(tmp_path, db_url):
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds'), ('york', 'York')")
        for t, d in (("leeds", "bin-1"), ("leeds", "bin-2"), ("york", "bin-1")):
            c.execute("INSERT INTO devices (tenant, device_id, kind, status) VALUES (%s, %s, 'bin_fill', 'active')",
                      (t, d))
    with IdentityStore.connect(db_url) as s:
        creds = {f"{t}/{d}": s.issue_device_credential(t, d, "test")
                 for t, d in (("leeds", "bin-1"), ("leeds", "bin-2"), ("york", "bin-1"))}
        for name, role, tenant in (("obs", "observer", None), ("api", "api", None), ("ingest", "ingest", None),
                                   ("gw-leeds", "gateway", "leeds")):
            creds[name] = s.add_service_account(name, role, "test", tenant=tenant)
    b = SecuredBroker(tmp_path, db_url)
    clients: list[Client] = []
    b.clients = clients
    try:
        yield b, creds, clients
    finally:
        for cl in clients:
            try:
                cl.close()
            except Exception:
                pass
        b.stop()


def observer(b, creds, clients) -> Client:
    o = b.service("svc_obs", creds["obs"].secret)
    clients.append(o)
    assert o.subscribe("ss/v1/#") == 1
    return o


def test_device_publishes_only_under_its_own_topics(world):
    b, creds, clients = world
    obs = observer(b, creds, clients)
    d1 = b.device("leeds.bin-1", creds["leeds/bin-1"].secret)
    clients.append(d1)
    assert d1.connack.value == 0
    own = [v1.topic("leeds", "bin-1", ch) for ch in (v1.UP, v1.STATUS, v1.ACK)]
    for t in own:
        assert d1.publish(t, b"mine") in ACCEPTED
    # as another device of the same tenant, as the same device id in another tenant, and
    # onto channels the backend owns: all refused with PUBACK 0x87
    spoofed = [v1.topic("leeds", "bin-2", v1.UP), v1.topic("york", "bin-1", v1.UP),
               v1.topic("york", "bin-1", v1.STATUS), v1.topic("leeds", "bin-1", v1.CFG),
               v1.topic("leeds", "bin-1", v1.CMD), "ss/v1/leeds/bin-1/up/extra", "elsewhere/x"]
    for t in spoofed:
        assert d1.publish(t, b"spoof") == NOT_AUTHORIZED, t
    assert d1.publish(v1.topic("leeds", "bin-1", v1.UP), b"after") in ACCEPTED      # still connected and working
    assert eventually(lambda: len(obs.messages) == 4)
    time.sleep(0.3)
    assert obs.topics() == own + [own[0]]
    assert all(p != b"spoof" for _, p in obs.messages)


def test_device_cannot_read_another_devices_cfg_or_cmd(world):
    b, creds, clients = world
    api = b.service("svc_api", creds["api"].secret)
    clients.append(api)
    # retained configs for two devices, published by the API's account
    for dev in ("bin-1", "bin-2"):
        assert api.publish(v1.topic("leeds", dev, v1.CFG), f'{{"rev":1,"for":"{dev}"}}'.encode(), retain=True) in ACCEPTED
    d1 = b.device("leeds.bin-1", creds["leeds/bin-1"].secret)
    clients.append(d1)
    codes = {t: d1.subscribe(t) for t in (v1.topic("leeds", "bin-2", v1.CFG), v1.topic("leeds", "bin-2", v1.CMD),
                                          "ss/v1/leeds/+/cfg", "ss/v1/#", v1.topic("leeds", "bin-1", v1.CFG))}
    # Mosquitto's acl_file checks read access when a message is delivered (2.0 grants the
    # SUBACK); a broker that refuses at subscribe time answers 0x87.  Either way: silence.
    assert all(c in (1, NOT_AUTHORIZED) for c in codes.values()), codes
    assert api.publish(v1.topic("leeds", "bin-2", v1.CMD), b'{"cmd":"reboot"}') in ACCEPTED
    assert api.publish(v1.topic("york", "bin-1", v1.CFG), b'{"rev":2}') in ACCEPTED
    assert api.publish(v1.topic("leeds", "bin-1", v1.CMD), b'{"cmd":"ping"}') in ACCEPTED
    assert eventually(lambda: len(d1.messages) >= 2)
    time.sleep(0.5)
    # only its own cfg (once per matching subscription) and its own cmd
    assert set(d1.topics()) == {v1.topic("leeds", "bin-1", v1.CFG), v1.topic("leeds", "bin-1", v1.CMD)}
    assert all(b"bin-2" not in p for _, p in d1.messages)


def test_anonymous_and_wrong_secrets_are_refused(world):
    b, creds, _ = world
    for port in (b.device_port, b.service_port):
        ca = b.ca if port == b.device_port else None
        assert refused(port, None, None, ca=ca) in (0x86, NOT_AUTHORIZED)
        assert refused(port, "leeds.bin-1", "guess", ca=ca) in (0x86, NOT_AUTHORIZED)
        assert refused(port, "leeds.bin-1", creds["leeds/bin-2"].secret, ca=ca) in (0x86, NOT_AUTHORIZED)
        assert refused(port, "nobody", creds["leeds/bin-1"].secret, ca=ca) in (0x86, NOT_AUTHORIZED)


def test_revoked_and_retired_devices_are_refused_after_reload(world):
    b, creds, clients = world
    obs = observer(b, creds, clients)
    d2 = b.device("leeds.bin-2", creds["leeds/bin-2"].secret)
    y1 = b.device("york.bin-1", creds["york/bin-1"].secret)
    clients += [d2, y1]
    assert d2.publish(v1.topic("leeds", "bin-2", v1.UP), b"before") in ACCEPTED
    b.store.set_device_status("leeds", "bin-2", "revoked", "alice", reason="stolen")
    b.store.set_device_status("york", "bin-1", "retired", "alice")
    b.sync()
    # connected sessions are dropped on reload ...
    assert eventually(lambda: d2.disconnected is not None and y1.disconnected is not None)
    # ... and new connections refused
    assert refused(b.device_port, "leeds.bin-2", creds["leeds/bin-2"].secret, ca=b.ca) == NOT_AUTHORIZED
    assert refused(b.device_port, "york.bin-1", creds["york/bin-1"].secret, ca=b.ca) == NOT_AUTHORIZED
    # the others are unaffected
    d1 = b.device("leeds.bin-1", creds["leeds/bin-1"].secret)
    clients.append(d1)
    assert d1.publish(v1.topic("leeds", "bin-1", v1.UP), b"still-here") in ACCEPTED
    assert eventually(lambda: b"still-here" in [p for _, p in obs.messages])
    assert [p for _, p in obs.messages] == [b"before", b"still-here"]


def test_rotation_invalidates_the_old_secret(world):
    b, creds, clients = world
    old = creds["leeds/bin-1"].secret
    d_old = b.device("leeds.bin-1", old)
    clients.append(d_old)
    new = b.store.issue_device_credential("leeds", "bin-1", "alice", reason="rotate")
    assert new.replaced == 1
    b.sync()
    assert eventually(lambda: d_old.disconnected is not None)
    assert refused(b.device_port, "leeds.bin-1", old, ca=b.ca) == NOT_AUTHORIZED
    d_new = b.device("leeds.bin-1", new.secret)
    clients.append(d_new)
    assert d_new.connack.value == 0
    assert d_new.publish(v1.topic("leeds", "bin-1", v1.UP), b"x") in ACCEPTED


def test_client_id_is_bound_to_the_username_on_the_device_listener(world):
    """Device ids repeat across tenants and a client id is not a secret: one device
    connecting with another's client id must not take over its session."""
    b, creds, clients = world
    victim = b.device("leeds.bin-1", creds["leeds/bin-1"].secret, client_id="bin-1")
    same_id_other_tenant = b.device("york.bin-1", creds["york/bin-1"].secret, client_id="bin-1")
    attacker = b.device("leeds.bin-2", creds["leeds/bin-2"].secret, client_id="leeds.bin-1")
    clients += [victim, same_id_other_tenant, attacker]
    time.sleep(0.5)
    assert victim.disconnected is None and same_id_other_tenant.disconnected is None
    assert victim.publish(v1.topic("leeds", "bin-1", v1.UP), b"ok") in ACCEPTED
    assert attacker.publish(v1.topic("leeds", "bin-1", v1.UP), b"spoof") == NOT_AUTHORIZED


def test_service_account_roles(world):
    b, creds, clients = world
    obs = observer(b, creds, clients)
    ing = b.service("svc_ingest", creds["ingest"].secret, client_id="ingest-host-0")
    gw = b.service("svc_gw-leeds", creds["gw-leeds"].secret)
    clients += [ing, gw]
    assert ing.subscribe("$share/ingest/ss/v1/+/+/up") == 1
    assert ing.subscribe("ss/v1/+/+/cfg") in (1, NOT_AUTHORIZED)
    # the gateway speaks for its tenant's devices only
    assert gw.publish(v1.topic("leeds", "bin-9", v1.UP), b"via-gw") in ACCEPTED
    assert gw.publish(v1.topic("york", "bin-1", v1.UP), b"gw-spoof") == NOT_AUTHORIZED
    assert gw.publish(v1.topic("leeds", "bin-9", v1.CFG), b"gw-cfg") == NOT_AUTHORIZED
    # ingest reads but never writes
    assert ing.publish(v1.topic("leeds", "bin-1", v1.UP), b"ing-spoof") == NOT_AUTHORIZED
    api = b.service("svc_api", creds["api"].secret)
    clients.append(api)
    assert api.publish(v1.topic("leeds", "bin-1", v1.CFG), b"cfg") in ACCEPTED
    assert api.publish(v1.topic("leeds", "bin-1", v1.UP), b"api-spoof") == NOT_AUTHORIZED
    assert eventually(lambda: len(ing.messages) == 1 and len(obs.messages) == 2)
    time.sleep(0.3)
    assert ing.topics() == [v1.topic("leeds", "bin-9", v1.UP)]
    assert [p for _, p in obs.messages] == [b"via-gw", b"cfg"]
    # a revoked service account is refused after reload
    b.store.revoke_service_account("gw-leeds", "alice")
    b.sync()
    assert refused(b.service_port, "svc_gw-leeds", creds["gw-leeds"].secret) == NOT_AUTHORIZED


def test_tls_listener_pins_the_ca(world, tmp_path):
    b, creds, clients = world
    ok = b.device("leeds.bin-1", creds["leeds/bin-1"].secret)
    clients.append(ok)
    assert ok.connack.value == 0
    other = tmp_path / "other-pki"
    pki.init_ca(other, common_name="Some other CA")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bin-1", protocol=mqtt.MQTTv5)
    c.username_pw_set("leeds.bin-1", creds["leeds/bin-1"].secret)
    c.tls_set(ca_certs=str(other / pki.CA_CERT), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", b.device_port)
    # and no plain MQTT on the device listener
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bin-1", protocol=mqtt.MQTTv5)
    plain.username_pw_set("leeds.bin-1", creds["leeds/bin-1"].secret)
    got = threading.Event()
    plain.on_connect = lambda *a: got.set()
    try:
        plain.connect("127.0.0.1", b.device_port)
        plain.loop_start()
        assert not got.wait(1.5)
    except OSError:
        pass
    finally:
        plain.loop_stop()


def test_real_ingest_worker_with_its_service_account(world):
    """The ingest worker, authenticated as svc_ingest on the service listener with a shared
    subscription, stores what a TLS-authenticated device publishes."""
    from ingest.worker import IngestConfig, IngestWorker

    b, creds, clients = world
    url = f"mqtt://svc_ingest:{creds['ingest'].secret}@127.0.0.1:{b.service_port}"
    w = IngestWorker(IngestConfig(b.db_url, url, client_id="ingest-test-0"))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    try:
        d1 = b.device("leeds.bin-1", creds["leeds/bin-1"].secret)
        clients.append(d1)
        bt = int(time.time()) // 60 * 60 - 600
        seq = 0

        def stored() -> int:
            with psycopg.connect(b.db_url) as c:
                return c.execute("SELECT count(*) FROM readings").fetchone()[0]

        deadline = time.monotonic() + 30
        while stored() == 0:        # until the worker's subscription exists
            assert time.monotonic() < deadline, "ingest stored nothing"
            assert d1.publish(v1.topic("leeds", "bin-1", v1.UP),
                              v1.encode_json("bin-1", bt, seq, [("fill", 500 + seq, 0)])) == 0
            seq += 1
            time.sleep(0.3)
        # the spoofed pack never reaches the worker
        assert d1.publish(v1.topic("leeds", "bin-2", v1.UP), v1.encode_json("bin-2", bt, 0, [("fill", 1, 0)])) \
            == NOT_AUTHORIZED
        time.sleep(0.5)
        with psycopg.connect(b.db_url) as c:
            devs = c.execute("SELECT DISTINCT d.device_id FROM readings r JOIN devices d ON d.id = r.device_id"
                             ).fetchall()
        assert devs == [("bin-1",)]
    finally:
        stop.set()
        t.join(30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start mosquitto as a service does")
def test_cli_built_broker_runs_unprivileged_and_reloads(db_url):
    """What an installation does: `pki init`, `pki server-cert`, `broker config --group mosquitto`,
    `broker account add`, `broker sync`; mosquitto started as root drops to its own user and
    still reads (and on SIGHUP re-reads) the generated files."""
    import grp
    import pwd
    import shutil
    import tempfile

    from typer.testing import CliRunner

    from streetsense.identity.cli import broker_app, pki_app

    try:
        pwd.getpwnam("mosquitto")
        grp.getgrnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user")
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds')")
        c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES ('leeds', 'bin-1', 'bin_fill')")
    root = Path(tempfile.mkdtemp(prefix="ss-broker-"))      # pytest's tmp dirs are 0700: not for a service user
    os.chmod(root, 0o711)
    proc = None
    try:
        r = CliRunner()
        dport, sport = free_port(), free_port()
        for app, args in ((pki_app, ["init", "--dir", f"{root}/pki"]),
                          (pki_app, ["server-cert", "--dir", f"{root}/pki", "--host", "127.0.0.1"]),
                          (broker_app, ["config", "--dir", f"{root}/broker", "--pki-dir", f"{root}/pki",
                                        "--device-port", str(dport), "--device-bind", "127.0.0.1",
                                        "--service-port", str(sport), "--no-service-tls", "--group", "mosquitto"]),
                          (broker_app, ["account", "add", "obs", "--role", "observer", "--database-url", db_url,
                                        "--engineer", "alice", "--json"])):
            res = r.invoke(app, args)
            assert res.exit_code == 0, res.output
        obs_secret = json.loads(res.output)["secret"]
        with IdentityStore.connect(db_url) as s:
            dev = s.issue_device_credential("leeds", "bin-1", "alice")
        res = r.invoke(broker_app, ["sync", "--dir", f"{root}/broker", "--database-url", db_url, "--group", "mosquitto"])
        assert res.exit_code == 0, res.output
        os.chmod(root / "broker", 0o711)
        conf = (root / "broker" / m.CONF).read_text()
        assert "allow_anonymous false" in conf and "user root" not in conf and str(root / "pki") not in conf
        proc = subprocess.Popen([find_mosquitto(), "-c", str(root / "broker" / m.CONF)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port("127.0.0.1", dport)
        assert eventually(lambda: (root / "broker" / m.PID).exists()), proc.stderr
        owner = subprocess.run(["ps", "-o", "user=", "-p", str(proc.pid)], capture_output=True, text=True).stdout
        assert owner.strip() == "mosquitto"
        ca = root / "pki" / pki.CA_CERT
        d = connect(dport, "leeds.bin-1", dev.secret, client_id="bin-1", ca=ca)
        assert d.connack.value == 0
        d.close()
        # revoke, sync (SIGHUP via the pid file), and the unprivileged broker re-read its files
        with IdentityStore.connect(db_url) as s:
            s.set_device_status("leeds", "bin-1", "revoked", "alice")
        res = r.invoke(broker_app, ["sync", "--dir", f"{root}/broker", "--database-url", db_url, "--json"])
        assert res.exit_code == 0 and '"reloaded": true' in res.output, res.output
        assert eventually(lambda: refused(dport, "leeds.bin-1", dev.secret, ca=ca) == NOT_AUTHORIZED)
        o = connect(sport, "svc_obs", obs_secret, client_id="obs")      # the others still get in
        assert o.connack.value == 0
        o.close()
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
