"""Secrets come from the environment or private files and never reach a log.

Real processes (``streetsense ingest run``, ``streetsense api run``, failing
commands) run at DEBUG with known random secrets delivered through
``*_FILE`` variables: the database password (in a URL), the MQTT password, a
device password, the API token and the pseudonym key.  Everything they print
(stdout, stderr) and the broker's log is captured and searched for the
secrets.  A control process logs the secrets on purpose through structlog and
the standard library, so the search is known to look at real log output.
Last, a scan of every git-tracked file for private keys, passwords and known
token formats, with the test fixtures that hold made-up secrets listed.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from contract import v1
from streetsense.identity.credentials import hash_secret
from tests.support.mosquitto import Mosquitto, find_mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from streetsense.cli import app; app()"]


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREETSENSE_") and k not in ("DATABASE_URL", "MQTT_URL")}
    env.update(STREETSENSE_CONFIG="/nonexistent/streetsense.toml", STREETSENSE_LOG_LEVEL="DEBUG",
               PYTHONUNBUFFERED="1", **extra)
    return env


def leaked(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, v in values.items() if v in text]


def test_secret_file_must_be_private(tmp_path):
    url = "postgresql://app:" + secrets.token_hex(8) + "@127.0.0.1:1/x"
    f = private(tmp_path / "db-url", url, 0o644)
    r = subprocess.run([*CLI, "db", "migrate"], env=clean_env(DATABASE_URL_FILE=str(f)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "accessible to group/others (mode 0644)" in r.stderr and f"chmod 600 {f}" in r.stderr
    assert url.split(":")[2].split("@")[0] not in r.stdout + r.stderr
    # both a variable and its _FILE: refused as ambiguous
    os.chmod(f, 0o600)
    r = subprocess.run([*CLI, "db", "migrate"], env=clean_env(DATABASE_URL_FILE=str(f), DATABASE_URL=url),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "both DATABASE_URL and DATABASE_URL_FILE are set" in r.stderr


def test_settings_read_secrets_from_private_files(tmp_path, monkeypatch):
    from streetsense.settings import SecretFileError, Settings

    key, tok = secrets.token_hex(16), secrets.token_urlsafe(16)
    for k in list(os.environ):
        if k.startswith("STREETSENSE_") or k in ("DATABASE_URL", "MQTT_URL"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("STREETSENSE_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("STREETSENSE_PSEUDONYM_KEY_FILE", str(private(tmp_path / "k", key)))
    monkeypatch.setenv("STREETSENSE_API_TOKEN_FILE", str(private(tmp_path / "t", tok)))
    monkeypatch.setenv("MQTT_URL_FILE", str(private(tmp_path / "m", "mqtt://svc_ingest:pw-123456@h:1883")))
    s = Settings()
    assert s.pseudonym_key.get_secret_value() == key and s.api_token.get_secret_value() == tok
    assert s.mqtt_url == "mqtt://svc_ingest:pw-123456@h:1883"
    assert key not in repr(s) and tok not in repr(s)
    assert sorted(s.secret_values()) == sorted([key, tok, "pw-123456"])
    os.chmod(tmp_path / "k", 0o604)
    with pytest.raises(SecretFileError, match="accessible to group/others"):
        Settings()
    os.chmod(tmp_path / "k", 0o600)
    monkeypatch.setenv("STREETSENSE_API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretFileError, match="cannot be read"):
        Settings()


CONTROL = r'''
import logging, os, structlog
from streetsense import logs
from streetsense.settings import get_settings
logs.configure("DEBUG", os.environ.get("JSON") == "1")
s = get_settings()
log = structlog.get_logger("control")
log.info("control-start", url=s.database_url, mqtt=s.mqtt_url, token=s.api_token.get_secret_value(),
         headers={"Authorization": "Bearer " + s.api_token.get_secret_value()},
         note="key is " + s.pseudonym_key.get_secret_value(), nested=[{"password": "x" + s.api_token.get_secret_value()}])
logging.getLogger("somelib").warning("connecting to %s with key %s", s.database_url, s.pseudonym_key.get_secret_value())
try:
    raise RuntimeError("failed with " + s.mqtt_url)
except RuntimeError:
    log.exception("control-exception")
    logging.getLogger("somelib").exception("stdlib-exception")
print("control-done", flush=True)
'''


@pytest.fixture
def secret_world(tmp_path, db_url, pg_admin_url):
    """A database reached as a role with a password, a Mosquitto requiring passwords, secret files."""
    vals = {"db_password": "dbpw-" + secrets.token_hex(10), "mqtt_password": "mqpw-" + secrets.token_hex(10),
            "device_password": "devpw-" + secrets.token_hex(10), "api_token": "tok-" + secrets.token_urlsafe(18),
            "pseudonym_key": "psk-" + secrets.token_hex(16)}
    params = conninfo_to_dict(db_url)
    role = "ss_app_" + secrets.token_hex(4)
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(role),
                                                                             sql.Literal(vals["db_password"])))
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds')")
        c.execute("INSERT INTO devices (tenant, device_id, kind, status) VALUES ('leeds', 'bin-1', 'bin_fill', 'active')")
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    db_url_pw = f"postgresql://{role}:{vals['db_password']}@/{params['dbname']}?host={host}&port={port}"
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    passwd = private(tmp_path / "passwd", f"svc_ingest:{hash_secret(vals['mqtt_password'])}\n"
                                          f"leeds.bin-1:{hash_secret(vals['device_password'])}")
    broker = Mosquitto(extra_config=[f"password_file {passwd}", "allow_anonymous false",
                                     "log_type all", "connection_messages true",
                                     *(["user root"] if os.geteuid() == 0 else [])]).start()
    files = {"DATABASE_URL_FILE": private(tmp_path / "database-url", db_url_pw),
             "MQTT_URL_FILE": private(tmp_path / "mqtt-url",
                                      f"mqtt://svc_ingest:{vals['mqtt_password']}@127.0.0.1:{broker.port}"),
             "STREETSENSE_API_TOKEN_FILE": private(tmp_path / "api-token", vals["api_token"]),
             "STREETSENSE_PSEUDONYM_KEY_FILE": private(tmp_path / "pseudonym-key", vals["pseudonym_key"])}
    try:
        yield vals, {k: str(v) for k, v in files.items()}, broker, db_url_pw
    finally:
        broker.stop()
        with psycopg.connect(pg_admin_url, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))


def _stop(p: subprocess.Popen, timeout: float = 20) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_real_processes_never_log_secrets(tmp_path, secret_world):
    import httpx

    vals, files, broker, db_url_pw = secret_world
    env = clean_env(**files)
    outputs: dict[str, str] = {}

    # 0. control: a process that hands every secret to the loggers on purpose
    for json_logs in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", CONTROL], env={**env, "JSON": json_logs}, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 0 and "control-done" in r.stdout, r.stderr[-2000:]
        for marker in ("control-start", "control-exception", "connecting to", "stdlib-exception", "RuntimeError"):
            assert marker in r.stderr, (marker, r.stderr[-2000:])
        assert r.stderr.count("***") >= 6          # the secrets were there, and masked
        outputs[f"control-json{json_logs}"] = r.stdout + r.stderr

    # 1. ingest at DEBUG, authenticated to the database and the broker, storing a device's readings
    log_ingest = open(tmp_path / "ingest.log", "w")
    ingest = subprocess.Popen([*CLI, "ingest", "run"], env=env, stdout=log_ingest, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bin-1", protocol=mqtt.MQTTv5)
        dev.username_pw_set("leeds.bin-1", vals["device_password"])
        dev.connect("127.0.0.1", broker.port)
        dev.loop_start()
        bt, seq, stored = int(time.time()) // 60 * 60 - 600, 0, 0
        deadline = time.monotonic() + 60
        while stored == 0:
            assert time.monotonic() < deadline and ingest.poll() is None, (tmp_path / "ingest.log").read_text()[-3000:]
            dev.publish(v1.topic("leeds", "bin-1", v1.UP), v1.encode_json("bin-1", bt, seq, [("fill", 400 + seq, 0)]),
                        qos=1).wait_for_publish(5)
            seq += 1
            time.sleep(0.5)
            with psycopg.connect(db_url_pw) as c:
                stored = c.execute("SELECT count(*) FROM readings").fetchone()[0]
        dev.loop_stop()
        dev.disconnect()
    finally:
        _stop(ingest)
        log_ingest.close()
    outputs["ingest"] = (tmp_path / "ingest.log").read_text()
    assert "mqtt connected" in outputs["ingest"]

    # 2. the API at DEBUG: right token, wrong token, token in a query string
    port = free_port()
    log_api = open(tmp_path / "api.log", "w")
    api = subprocess.Popen([*CLI, "api", "run", "--port", str(port)], env=env, stdout=log_api,
                           stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and api.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
                time.sleep(0.3)
        for headers, params in (({"Authorization": f"Bearer {vals['api_token']}"}, {}),
                                ({"Authorization": f"Bearer {vals['api_token']}x"}, {}),
                                ({}, {"token": vals["api_token"], "access_token": vals["api_token"]})):
            r = httpx.get(base + "/devices", headers=headers, params=params, timeout=10)
            assert r.status_code < 500
            assert vals["api_token"] not in r.text
    finally:
        _stop(api)
        log_api.close()
    outputs["api"] = (tmp_path / "api.log").read_text()

    # 3. failures: an unreachable broker, an unreachable database (errors and tracebacks)
    dead = free_port()
    bad_mqtt = private(tmp_path / "bad-mqtt", f"mqtt://svc_ingest:{vals['mqtt_password']}@127.0.0.1:{dead}")
    p = subprocess.Popen([*CLI, "ingest", "run"], env={**env, "MQTT_URL_FILE": str(bad_mqtt)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    time.sleep(6)
    _stop(p)
    outputs["ingest-no-broker"] = p.stdout.read()
    bad_db = private(tmp_path / "bad-db", f"postgresql://app:{vals['db_password']}@127.0.0.1:{dead}/x")
    r = subprocess.run([*CLI, "db", "migrate"], env={**env, "DATABASE_URL_FILE": str(bad_db)}, capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0
    outputs["migrate-no-db"] = r.stdout + r.stderr
    outputs["mosquitto"] = broker.log_path.read_text(errors="replace")

    found = {name: leaked(text, vals) for name, text in outputs.items()}
    assert all(not v for v in found.values()), found
    assert sum(len(t) for t in outputs.values()) > 2000      # there was output to search


# --- repository scan ----------------------------------------------------------

_PEM = "-----BEGIN " + r"(?:[A-Z0-9]+ )*" + "PRIVATE KEY-----"
PATTERNS = {
    "private key": re.compile(_PEM),
    "token format": re.compile(r"\b(?:ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}|gho_[A-Za-z0-9]{30,}|"
                               r"xox[baprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{10,}|"
                               r"glpat-[A-Za-z0-9_-]{20}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,})"),
    "password literal": re.compile(r"""(?i)(?<![a-z])(?:password|passwd|secret|api_key|token)["']?\s*[:=]\s*["']"""
                                   r"""([^"'\s{}$<>]{6,})["']"""),
    "password in URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@/\s'\"{}$<>*]{3,})@"),
}
#: made-up secrets that tests, doctests and documentation need, each checked by eye: (path, text found)
ALLOWED = {
    ("tests/test_provision_plan.py", 'SECRET = "node-secret-Zx9"'): "fake device secret in a plan test",
    ("tests/test_provision_e2e.py", 'TOKEN = "field-token-1"'): "fake API token for a local test server",
    ("tests/test_alerts_api.py", 'token="s3cret-token"'): "fake API token for the test app",
    ("tests/test_pglite_timescale.py", "postgresql://someone:whatever@"): "wrong-credentials test",
    ("tests/test_pglite_timescale.py", "postgresql://postgres:postgres@"): "PGlite's fixed local login",
    ("tests/support/pglite.py", "postgresql://postgres:postgres@"): "PGlite's fixed local login",
    ("tests/support/pglite.py", 'password = "postgres"'): "PGlite's fixed local login",
    ("tests/test_firmware_pure.py", 'password": "s3cret"'): "fake Wi-Fi password in a config test",
    ("tests/test_alerts_delivery.py", 'secret": "not-the-secret"'): "wrong webhook secret test",
    ("tests/test_alerts_delivery.py", 'SECRET = "whsec_test_0123456789"'): "fake webhook signing key",
    ("tests/fakes/sim.py", 'password": "secret-psk"'): "fake Wi-Fi PSK for simulated nodes",
    ("tests/fakes/sim.py", 'password": "node-secret"'): "fake device secret for simulated nodes",
    ("streetsense/settings.py", "postgresql://u:pw1@"): "doctest",
    ("streetsense/settings.py", "mqtt://user:password@"): "placeholder in a comment",
    ("streetsense/settings.py", "mqtt://a:pw2@"): "doctest",
    ("streetsense/logs.py", "mqtt://dev:s3cret@"): "doctest",
    ("streetsense/logs.py", "postgresql://u:pw@"): "doctest",
    ("streetsense/identity/mosquitto.py", 'PASSWD = "passwd"'): "a file name",
    ("streetsense/embedded.py", "mqtt://user:pass@"): "placeholder in a docstring",
    ("simulators/publisher.py", "mqtt://user:pass@"): "placeholder in a docstring",
    ("gateway/settings.py", "mqtt://user:pass@"): "placeholder in a docstring",
    ("README.md", "mqtt://user:password@"): "placeholder in the documentation",
}
ALLOWED_FILES = {
    "tests/test_secrets_logging.py": "this scanner's own patterns and allow-list",
    "tests/test_data_protection.py": "made-up residents and a made-up pseudonym key",
    "tests/test_mqtt_tenancy.py": "made-up secrets",
}


def scan(text: str) -> list[tuple[str, str]]:
    return [(name, m.group(0)) for name, p in PATTERNS.items() for m in p.finditer(text)]


def test_scanner_finds_what_it_looks_for():
    key = "-----BEGIN " + "EC PRIVATE KEY-----\nMHcCAQEE\n"
    found = {n for n, _ in scan(key + 'db_password = "Sup3rS3cretValue"\npostgresql://app:hunter22@db/x\n'
                                + "ghp_" + "a" * 36)}
    assert found == set(PATTERNS)
    assert scan("password = os.environ['DB_PASSWORD']\nurl = f'mqtt://{user}:{pw}@host'\n") == []


def test_no_secrets_committed():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    hits = []
    for f in filter(None, files.split("\0")):
        p = ROOT / f
        if f in ALLOWED_FILES or not p.is_file() or p.stat().st_size > 2_000_000:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [(f, kind, found) for kind, found in scan(text) if (f, found) not in ALLOWED]
    assert hits == [], "possible secrets committed (remove them, or list a made-up fixture in ALLOWED): " + repr(hits)
