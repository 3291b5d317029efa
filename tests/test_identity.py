"""Device identity without a broker: the Mosquitto hash format against the real
``mosquitto_passwd``, the registry tables and triggers of 0003_identity.sql,
the generated password/ACL/config files, and the PKI."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from streetsense.identity import mosquitto as m
from streetsense.identity import pki
from streetsense.identity.cli import broker_app, pki_app
from streetsense.identity.credentials import (DeviceEntry, IdentityError, IdentityStore, ServiceEntry,
                                              device_username, hash_secret, new_secret, parse_hash,
                                              service_username, verify_secret)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
needs_passwd = pytest.mark.skipif(not os.access(MOSQUITTO_PASSWD, os.X_OK), reason="mosquitto_passwd not installed")


# --- the hash format ------------------------------------------------------------

@needs_passwd
@pytest.mark.parametrize("secret", ["pa55word", new_secret(), "ünïcødé ✓ with spaces"])
def test_hash_is_byte_identical_to_mosquitto_passwd(tmp_path, secret):
    pw = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "leeds.bin-0001", secret], check=True,
                   capture_output=True)
    written = pw.read_bytes()
    user, _, h = written.decode().rstrip("\n").partition(":")
    iterations, salt, _ = parse_hash(h)
    assert user == "leeds.bin-0001" and iterations == 101 and len(salt) == 12
    ours = hash_secret(secret, salt=salt, iterations=iterations)
    assert ours == h
    # and the generated password file is the same bytes as mosquitto_passwd's
    entry = DeviceEntry("leeds", "bin-0001", "leeds.bin-0001", ours)
    assert m.password_file([entry], []).encode() == written
    assert verify_secret(secret, h) and not verify_secret(secret + "x", h)


def test_fresh_hashes_are_salted_and_secrets_random():
    s = new_secret()
    assert len(s) >= 43 and s != new_secret()
    a, b = hash_secret(s), hash_secret(s)
    assert a != b and verify_secret(s, a) and verify_secret(s, b)
    with pytest.raises(ValueError):
        parse_hash("$6$abc$def")


def test_usernames():
    assert device_username("leeds", "bin-0001") == "leeds.bin-0001"
    assert service_username("ingest") == service_username("svc_ingest") == "svc_ingest"
    for bad in ("Bad", "a b", "x" * 70, "a:b"):
        with pytest.raises(ValueError):
            service_username(bad)
    with pytest.raises(ValueError):
        device_username("leeds", "Bin_1")


# --- registry ------------------------------------------------------------------

def seed(db_url: str) -> None:
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds'), ('york', 'York')")
        for t, d in (("leeds", "bin-1"), ("leeds", "bin-2"), ("york", "bin-1")):
            c.execute("INSERT INTO devices (tenant, device_id, kind, status) VALUES (%s, %s, 'bin_fill', 'active')",
                      (t, d))


@pytest.fixture
def store(db_url):
    seed(db_url)
    with IdentityStore.connect(db_url) as s:
        yield s


def test_issue_rotate_retire_and_audit(store, db_url):
    a = store.issue_device_credential("leeds", "bin-1", "alice")
    assert a.username == "leeds.bin-1" and a.replaced == 0 and "secret" not in repr(a)
    b = store.issue_device_credential("leeds", "bin-1", "bob", reason="rotate")
    assert b.replaced == 1 and b.secret != a.secret
    hist = store.device_credentials("leeds", "bin-1")
    assert [h["revoked_at"] is None for h in hist] == [True, False]
    assert hist[1]["rotated_at"] is not None and hist[0]["created_by"] == "bob"
    devs, _ = store.broker_entries()
    (entry,) = [d for d in devs if d.username == "leeds.bin-1"]
    assert verify_secret(b.secret, entry.secret_hash) and not verify_secret(a.secret, entry.secret_hash)
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT credentials_ref FROM devices WHERE tenant='leeds' AND device_id='bin-1'"
                         ).fetchone()[0] == "mqtt:leeds.bin-1"
    # never the secret or the hash in the audit log
    store.set_device_status("leeds", "bin-1", "retired", "carol", reason="bin removed")
    assert store.broker_entries()[0] == []
    log = store.audit_entries(tenant="leeds", subject="bin-1")
    assert [(e["actor"], e["action"]) for e in reversed(log)] == [
        ("alice", "credential.issue"), ("bob", "credential.rotate"), ("carol", "device.status"),
        ("carol", "device.retire")]
    assert log[0]["details"]["credentials_revoked"] == 1
    blob = repr(log)
    assert a.secret not in blob and b.secret not in blob and "$7$" not in blob
    with pytest.raises(IdentityError, match="retired"):
        store.issue_device_credential("leeds", "bin-1", "alice")
    with pytest.raises(IdentityError, match="no device"):
        store.issue_device_credential("leeds", "nope", "alice")
    with pytest.raises(IdentityError, match="actor"):
        store.issue_device_credential("leeds", "bin-2", "")


def test_at_most_one_active_credential_per_device(store, db_url):
    store.issue_device_credential("leeds", "bin-2", "alice")
    with psycopg.connect(db_url) as c, pytest.raises(psycopg.errors.UniqueViolation):
        c.execute("""INSERT INTO device_credentials (device_pk, mqtt_username, secret_hash, created_by)
                     SELECT id, 'leeds.bin-2', %s, 'mallory' FROM devices WHERE tenant='leeds' AND device_id='bin-2'""",
                  (hash_secret("x"),))


def test_schema_rejects_plaintext_and_bad_usernames(store, db_url):
    with psycopg.connect(db_url) as c:
        pk = c.execute("SELECT id FROM devices WHERE tenant='york'").fetchone()[0]
    for user, h in (("york.bin-1", "plaintext"), ("york/bin-1", hash_secret("x")), ("svc_x", hash_secret("x"))):
        with psycopg.connect(db_url) as c, pytest.raises(psycopg.errors.CheckViolation):
            c.execute("INSERT INTO device_credentials (device_pk, mqtt_username, secret_hash, created_by) "
                      "VALUES (%s, %s, %s, 't')", (pk, user, h))


def test_audit_log_is_append_only(store, db_url):
    store.issue_device_credential("york", "bin-1", "alice")
    with psycopg.connect(db_url) as c, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        c.execute("UPDATE audit_log SET actor = 'mallory'")
    with psycopg.connect(db_url) as c, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        c.execute("DELETE FROM audit_log")


def test_status_change_by_any_path_revokes_and_audits(store, db_url):
    """The API's DELETE (or plain SQL) retires a device: the trigger revokes its credential."""
    store.issue_device_credential("leeds", "bin-2", "alice")
    with psycopg.connect(db_url) as c:
        c.execute("UPDATE devices SET status = 'revoked' WHERE tenant='leeds' AND device_id='bin-2'")
        # unrelated updates (ingest bookkeeping) do not audit
        c.execute("UPDATE devices SET last_seen = now() WHERE tenant='leeds'")
    assert [d.username for d in store.broker_entries()[0]] == []
    log = store.audit_entries(subject="bin-2")
    assert log[0]["action"] == "device.status" and log[0]["actor"].startswith("db:")
    assert log[0]["details"] == {"from": "active", "to": "revoked", "credentials_revoked": 1}
    assert len(store.audit_entries()) == 2


def test_service_accounts(store):
    ing = store.add_service_account("ingest", "ingest", "alice")
    gw = store.add_service_account("gw-leeds", "gateway", "alice", tenant="leeds")
    with pytest.raises(IdentityError, match="one tenant"):
        store.add_service_account("gw", "gateway", "alice")
    with pytest.raises(IdentityError, match="exists"):
        store.add_service_account("ingest", "ingest", "alice")
    with pytest.raises(IdentityError, match="unknown tenant"):
        store.add_service_account("gw-x", "gateway", "alice", tenant="nowhere")
    rot = store.rotate_service_account("ingest", "bob")
    store.revoke_service_account("gw-leeds", "bob")
    _, svcs = store.broker_entries()
    assert [s.username for s in svcs] == ["svc_ingest"]
    assert verify_secret(rot.secret, svcs[0].secret_hash) and not verify_secret(ing.secret, svcs[0].secret_hash)
    assert gw.username == "svc_gw-leeds"
    actions = [e["action"] for e in store.audit_entries()]
    assert actions.count("service_account.create") == 2 and "service_account.revoke" in actions


# --- generated files --------------------------------------------------------------

DEVS = [DeviceEntry("leeds", "bin-1", "leeds.bin-1", hash_secret("a")),
        DeviceEntry("york", "bin-1", "york.bin-1", hash_secret("b"))]
SVCS = [ServiceEntry("svc_ingest", "ingest", None, hash_secret("c")),
        ServiceEntry("svc_gw-leeds", "gateway", "leeds", hash_secret("d")),
        ServiceEntry("svc_api", "api", None, hash_secret("e")),
        ServiceEntry("svc_obs", "observer", None, hash_secret("f"))]


def test_acl_file_rules():
    text = m.acl_file(DEVS, SVCS)
    blocks = {}
    user = None
    for ln in text.splitlines():
        if ln.startswith("user "):
            user = ln[5:]
            blocks[user] = []
        elif ln.startswith("topic "):
            assert user is not None, "a rule before the first user line would apply to anonymous clients"
            blocks[user].append(ln)
    assert blocks["york.bin-1"] == ["topic write ss/v1/york/bin-1/up", "topic write ss/v1/york/bin-1/status",
                                    "topic write ss/v1/york/bin-1/ack", "topic read ss/v1/york/bin-1/cfg",
                                    "topic read ss/v1/york/bin-1/cmd"]
    assert blocks["svc_ingest"] == ["topic read ss/v1/+/+/up", "topic read ss/v1/+/+/status"]
    assert all("ss/v1/leeds/+/" in r for r in blocks["svc_gw-leeds"])
    assert blocks["svc_obs"] == ["topic read ss/v1/#"]
    assert "topic write ss/v1/+/+/cfg" in blocks["svc_api"] and not any(
        "write" in r and r.endswith(("/up", "/status")) for r in blocks["svc_api"])
    assert "pattern" not in text and "readwrite" not in text
    with pytest.raises(ValueError, match="malformed"):
        m.acl_file([DeviceEntry("leeds", "bin-1", "leeds.bin-2", "h")], [])


def test_password_file_refuses_malformed_lines():
    assert m.password_file(DEVS, SVCS).count("\n") == 6
    with pytest.raises(ValueError):
        m.password_file([DeviceEntry("a", "b", "a.b", "plain")], [])
    with pytest.raises(ValueError):
        m.password_file([], [ServiceEntry("svc x", "api", None, hash_secret("x"))])


def test_broker_config_is_locked_down(tmp_path):
    text = m.broker_config(tmp_path, listeners=[m.Listener(8883), m.Listener(8884, "127.0.0.1", tls=False,
                                                                            devices=False)],
                           certfile=tmp_path / "s.crt", keyfile=tmp_path / "s.key", cafile=tmp_path / "ca.crt")
    lines = text.splitlines()
    assert "allow_anonymous false" in lines and "allow_anonymous true" not in text
    assert f"password_file {tmp_path.resolve() / 'passwd'}" in lines and f"acl_file {tmp_path.resolve() / 'acl'}" in lines
    assert lines.count("use_username_as_clientid true") == 1 and "tls_version tlsv1.2" in lines
    with pytest.raises(ValueError, match="TLS"):
        m.broker_config(tmp_path, listeners=[m.Listener(1883, "0.0.0.0", tls=False)])
    with pytest.raises(ValueError, match="anonymous"):
        m.broker_config(tmp_path, listeners=[m.Listener(1883, "127.0.0.1", tls=False)], extra="allow_anonymous true\n")


def test_write_files_is_atomic_private_and_idempotent(tmp_path):
    assert m.write_files(tmp_path, DEVS, SVCS) is True
    for n in (m.PASSWD, m.ACL):
        assert stat.S_IMODE((tmp_path / n).stat().st_mode) == 0o600
    assert m.write_files(tmp_path, DEVS, SVCS) is False            # same rules: no rewrite, no reload
    assert m.write_files(tmp_path, DEVS[:1], SVCS) is True
    assert "york" not in (tmp_path / m.PASSWD).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- PKI -----------------------------------------------------------------------

def test_pki_ca_and_server_cert(tmp_path):
    d = tmp_path / "pki"
    pki.init_ca(d, organization="Leeds City Council")
    pki.server_cert(d, ["mqtt.example.org", "127.0.0.1", "::1"])
    for n in (pki.CA_KEY, pki.SERVER_KEY):
        assert stat.S_IMODE((d / n).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((d / pki.CA_CERT).read_bytes())
    srv = x509.load_pem_x509_certificate((d / pki.SERVER_CERT).read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert srv.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    srv.verify_directly_issued_by(ca)
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    with pytest.raises(pki.PKIError, match="re-provisioning"):
        pki.init_ca(d)
    infos = pki.show(d)
    assert [i.is_ca for i in infos] == [True, False] and infos[1].key == "EC secp256r1"
    with pytest.raises(pki.PKIError, match="no CA"):
        pki.server_cert(tmp_path / "empty", ["x"])


def test_pki_and_broker_cli(tmp_path, db_url):
    seed(db_url)
    r = CliRunner()
    d = tmp_path / "pki"
    res = r.invoke(pki_app, ["init", "--dir", str(d)])
    assert res.exit_code == 0, res.output
    assert r.invoke(pki_app, ["init", "--dir", str(d)]).exit_code == 1
    res = r.invoke(pki_app, ["server-cert", "--dir", str(d), "--host", "localhost", "--host", "127.0.0.1"])
    assert res.exit_code == 0 and "127.0.0.1" in res.output
    res = r.invoke(pki_app, ["show", "--dir", str(d), "--json"])
    assert res.exit_code == 0 and '"is_ca": true' in res.output
    b = tmp_path / "broker"
    res = r.invoke(broker_app, ["config", "--dir", str(b), "--pki-dir", str(d)])
    assert res.exit_code == 0, res.output
    assert "allow_anonymous false" in (b / m.CONF).read_text()
    res = r.invoke(broker_app, ["account", "add", "ingest", "--role", "ingest", "--database-url", db_url,
                                "--engineer", "alice", "--json"])
    assert res.exit_code == 0, res.output
    assert '"username": "svc_ingest"' in res.output
    res = r.invoke(broker_app, ["sync", "--dir", str(b), "--database-url", db_url, "--no-reload"])
    assert res.exit_code == 0 and "0 device and 1 service" in res.output, res.output
    assert (b / m.PASSWD).read_text().startswith("svc_ingest:$7$101$")
    res = r.invoke(broker_app, ["account", "list", "--database-url", db_url])
    assert "svc_ingest" in res.output and "$7$" not in res.output
