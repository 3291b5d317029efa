"""The provisioning plan without hardware: exact argv per board, the node config through
the firmware's own validator, labels, parsing what the hardware says, and the dry run."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streetsense.firmware.build import board_arch
from streetsense.provision import config as pc
from streetsense.provision.cli import device_app, generate_device_id
from streetsense.provision.label import make_qr, qr_text, write_label
from streetsense.provision.plan import PROBE, WIPE, Do, Http, ProvisionInputs, Run, Write, provision_plan
from streetsense.provision.runner import board_of, chip_family, last_json

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SECRET = "node-secret-Zx9"
WIFI_PW = "wpa2-passphrase"


def inputs(board: str = "esp32", **kw) -> ProvisionInputs:
    base = dict(board=board, kind="bin_fill", port="/dev/ttyUSB0", tenant="leeds", device_id="bin-k3x9q2",
                secret=SECRET, wifi=(("council-iot", WIFI_PW),), broker_host="mqtt.example.org", broker_port=8883,
                tls=True, ca_pem=CA, api_url="http://api.example.org:8080", workdir=Path("/w"),
                label_dir=Path("/labels"), engineer="alice", asset="BIN-123", lat=53.8, lon=-1.55,
                image=Path("/img/micropython.bin"), firmware="0.1.0")
    base.update(kw)
    return ProvisionInputs(**base)


MP = ("mpremote", "connect", "/dev/ttyUSB0")
TAIL = [  # everything after flashing, for an ESP32 bin node with TLS
    (*MP, "exec", WIPE),
    (*MP, "mip", "install", "umqtt.simple"),
    (*MP, "fs", "cp", "-r", "boot.py", "board.mpy", "contract", "ss", ":/"),
    (*MP, "fs", "cp", "/w/config.json", ":config.json", "+", "fs", "cp", "/w/ca.pem", ":ca.pem"),
    (*MP, "exec", "import ss.selftest as t; t.main(samples=5)"),
    (*MP, "fs", "cp", "/w/config.json", ":config.json"),
    (*MP, "fs", "cp", "main.py", ":main.py"),
    (*MP, "reset"),
]


def test_esp32_plan_exact_commands():
    plan = provision_plan(inputs())
    assert plan.commands() == [
        (*MP, "exec", PROBE),
        ("esptool", "--port", "/dev/ttyUSB0", "chip_id"),
        ("esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "erase_flash"),
        ("esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "write_flash", "-z", "0x1000",
         "/img/micropython.bin"),
        (*MP, "exec", PROBE),
        *TAIL,
    ]
    runs = [s for s in plan.steps if isinstance(s, Run)]
    assert [s.when for s in runs[:5]] == [None, "flash", "flash", "flash", "flash"]
    assert runs[0].check is False and runs[0].capture == "probe"       # a blank board is no error
    assert {s.cwd for s in runs if s.argv[-1] in (":/", ":main.py")} == {"/w/fw"}
    http = [s for s in plan.steps if isinstance(s, Http)]
    assert [(h.method, h.path, h.body["status"]) for h in http] == [
        ("POST", "/devices", "provisioned"), ("PATCH", "/devices/leeds/bin-k3x9q2", "active")]
    assert http[0].body == {"tenant": "leeds", "device_id": "bin-k3x9q2", "kind": "bin_fill", "board": "esp32",
                            "firmware": "0.1.0", "lat": 53.8, "lon": -1.55, "asset_id": "BIN-123",
                            "status": "provisioned"}
    actions = [s.action for s in plan.steps if isinstance(s, Do)]
    assert actions == ["check_port", "decide_flash", "check_chip", "check_micropython", "issue_credential", "build",
                       "check_selftest", "calibrate", "label", "audit"]
    # order that matters: hardware checked before registering, main.py only after the self-test,
    # active only after main.py, reset last
    kinds = [getattr(s, "action", None) or getattr(s, "method", None) or (s.argv[-1] if isinstance(s, Run) else "w")
             for s in plan.steps]
    assert kinds.index("check_micropython") < kinds.index("POST") < kinds.index("issue_credential")
    assert kinds.index("check_selftest") < kinds.index(":main.py") < kinds.index("PATCH")
    assert plan.steps[-1].argv == (*MP, "reset")


def test_esp32s3_uses_its_chip_and_offset():
    cmds = provision_plan(inputs("esp32s3", port="/dev/ttyACM0")).commands()
    assert ("esptool", "--chip", "esp32s3", "--port", "/dev/ttyACM0", "--baud", "460800", "write_flash", "-z", "0x0",
            "/img/micropython.bin") in cmds


@pytest.mark.parametrize("board,board_id", [("picow", "RPI-RP2"), ("pico2w", "RP2350")])
def test_pico_plan_copies_the_uf2_and_never_runs_esptool(board, board_id):
    plan = provision_plan(inputs(board, port="/dev/ttyACM0", image=Path("/img/RPI_PICO_W.uf2"),
                                 uf2_mount=Path("/media/alice/RPI-RP2")))
    mp = ("mpremote", "connect", "/dev/ttyACM0")
    assert plan.commands() == [(*mp, "exec", PROBE), (*mp, "exec", PROBE)] + [
        (*mp, *c[3:]) for c in TAIL]
    flash = [(s.action, s.args) for s in plan.steps if isinstance(s, Do) and s.when == "flash"]
    assert flash == [("wait_mount", {"mount": "/media/alice/RPI-RP2", "timeout": 120}),
                     ("check_uf2_board", {"board": board, "board_id": board_id}),
                     ("copy_uf2", {"image": "/img/RPI_PICO_W.uf2"}),
                     ("wait_port", {"port": "/dev/ttyACM0", "timeout": 60})]
    # a Pico in BOOTSEL has no serial port yet: no port check up front
    assert not [s for s in plan.steps if isinstance(s, Do) and s.action == "check_port"]


def test_flash_modes_and_options():
    never = provision_plan(inputs(flash="never", image=None))
    assert not [c for c in never.commands() if c[0] == "esptool"]
    assert never.commands()[0] == (*MP, "exec", PROBE)
    always = provision_plan(inputs(flash="always"))
    assert always.commands()[0] == ("esptool", "--port", "/dev/ttyUSB0", "chip_id")     # no probe first
    with pytest.raises(ValueError, match="--image"):
        provision_plan(inputs(flash="always", image=None))
    opts = provision_plan(inputs(kind="air", deps_dir=Path("/deps"), ota_pub=Path("/keys/ota.pub"),
                                 selftest_wifi=True, broker_dir=Path("/etc/ss/broker"), samples=7))
    cmds = opts.commands()
    assert (*MP, "fs", "mkdir", ":lib", "+", "fs", "cp", "-r", "umqtt", ":lib/") in cmds
    assert not [c for c in cmds if "mip" in c]
    assert (*MP, "fs", "cp", "/w/config.json", ":config.json", "+", "fs", "cp", "/w/ca.pem", ":ca.pem", "+", "fs",
            "cp", "/keys/ota.pub", ":ota.pub") in cmds
    assert (*MP, "exec", "import ss.selftest as t; t.main(samples=7, wifi=True)") in cmds
    actions = [s.action for s in opts.steps if isinstance(s, Do)]
    assert "calibrate" not in actions and "broker_sync" in actions          # air: nothing to calibrate


def test_build_entries_match_a_real_build(tmp_path):
    from streetsense.firmware.build import build
    from streetsense.provision.plan import build_entries

    for board in ("esp32", "picow"):
        res = build(board, tmp_path / board)
        tops, main = build_entries(board)
        assert sorted(p.name for p in (tmp_path / board).iterdir()) == sorted(tops + [main])
        assert res.arch == board_arch(board)


# --- config ---------------------------------------------------------------------

def test_config_passes_the_firmware_validator():
    plan = provision_plan(inputs(calibration={"full_mm": 250}, cadence={"tx_s": 7200}))
    raw = plan.config
    full = pc.firmware_config().validate(raw)      # the node's own validator, loaded from firmware/ss/config.py
    assert full["mqtt"] == {"host": "mqtt.example.org", "port": 8883, "tls": True, "username": "leeds.bin-k3x9q2",
                            "password": SECRET, "keepalive": 60, "ca": "/ca.pem"}
    assert full["wifi"] == [("council-iot", WIFI_PW)]
    assert full["cadence"]["tx_s"] == 7200 and full["cadence"]["sample_s"] == 600
    assert full["calibration"]["full_mm"] == 250 and full["board"] == "esp32"
    (write,) = [s for s in plan.steps if isinstance(s, Write) and s.path == "/w/config.json"]
    assert write.mode == 0o600 and pc.validate(__import__("json").loads(write.data))["device_id"] == "bin-k3x9q2"
    # the rendered plan never shows a secret
    text = plan.render()
    assert SECRET not in text and WIFI_PW not in text and '"password": "***"' in text


def test_invalid_config_is_refused_with_the_validators_words():
    with pytest.raises(pc.ConfigInvalid, match=r"cadence.tx_s: 5 outside 10..604800"):
        provision_plan(inputs(cadence={"tx_s": 5}))
    with pytest.raises(pc.ConfigInvalid, match=r"calibration.nonsense: unknown setting"):
        provision_plan(inputs(calibration={"nonsense": 1}))
    with pytest.raises(pc.ConfigInvalid, match=r"full_mm: must be less than empty_mm"):
        provision_plan(inputs(calibration={"empty_mm": 300, "full_mm": 400}))
    with pytest.raises(ValueError, match="CA"):
        provision_plan(inputs(ca_pem=None))
    with pytest.raises(pc.ConfigInvalid, match="wifi"):
        provision_plan(inputs(wifi=(("x" * 40, "pw"),)))


def test_calibration_update_is_validated():
    raw = provision_plan(inputs()).config
    assert pc.with_calibration(raw, empty_mm=1100)["calibration"]["empty_mm"] == 1100
    with pytest.raises(pc.ConfigInvalid, match="full_mm"):
        pc.with_calibration(raw, empty_mm=150)                 # below full_mm 200: sensor not mounted right


def test_settings_and_broker_parsing():
    assert pc.parse_settings(["empty_mm=1200", "range=a02yyuw"]) == {"empty_mm": 1200, "range": "a02yyuw"}
    with pytest.raises(ValueError):
        pc.parse_settings(["nokey"])
    with pytest.raises(ValueError, match="credentials"):
        pc.parse_broker("mqtts://user:pw@host")
    assert generate_device_id("bin_fill").startswith("bin-") and len(generate_device_id("air")) == 10
    assert generate_device_id("road") != generate_device_id("road")


# --- what the hardware says ----------------------------------------------------

def test_parsers():
    assert chip_family("esptool v5.0.0\nConnected to ESP32 on /dev/ttyUSB0:\nChip type:          ESP32-D0WD-V3") == "esp32"
    assert chip_family("Detecting chip type... ESP32-S3\nChip is ESP32-S3 (QFN56) (revision v0.2)") == "esp32s3"
    assert board_of({"platform": "rp2", "machine": "Raspberry Pi Pico 2 W with RP2350"}) == "pico2w"
    assert board_of({"platform": "esp32", "machine": "Generic ESP32 module with ESP32"}) == "esp32"
    assert last_json('hw: OSError 19\n{"selftest": 1, "ok": false}\n>>> ', "selftest") == {"selftest": 1, "ok": False}
    assert last_json("garbage", "selftest") is None


# --- labels -----------------------------------------------------------------------

def png_modules(path: Path, scale: int, border: int) -> list[list[int]]:
    """Decode a greyscale PNG (stdlib only) back into QR modules (1 = dark)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(typ + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert ctype in (0, 3) and interlace == 0
    raw = zlib.decompress(idat)
    stride = (w * depth + 7) // 8
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - 1] if x else 0
            b, c = prev[x], (prev[x - 1] if x else 0)
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc_ = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc_ else b if pb <= pc_ else c)) & 0xFF
        rows.append(line)
        prev = line
    def px(x, y):
        bit = (rows[y][x * depth // 8] >> (8 - depth - (x * depth) % 8)) & ((1 << depth) - 1)
        return bit
    n = w // scale - 2 * border
    dark = px(0, 0) ^ 1                                     # the quiet zone is light
    return [[1 if px((border + c) * scale + scale // 2, (border + r) * scale + scale // 2) == dark else 0
             for c in range(n)] for r in range(n)]


def test_label_svg_and_png(tmp_path):
    lab = write_label(tmp_path, "leeds", "bin-k3x9q2", "BIN-123 <A&B>", kind="bin_fill")
    assert lab.text == qr_text("leeds", "bin-k3x9q2", "BIN-123 <A&B>") == "ss://leeds/bin-k3x9q2?asset=BIN-123%20%3CA%26B%3E"
    root = ET.parse(lab.svg).getroot()                        # well-formed, escaped
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["bin-k3x9q2", "asset BIN-123 <A&B>", "leeds · bin_fill"]
    assert root.find("{http://www.w3.org/2000/svg}svg") is not None   # the QR code itself
    # PNG: signature, size, and the very modules of the QR code for the label text
    qr = make_qr(lab.text)
    mods = png_modules(lab.png, 8, 4)
    assert len(mods) == qr.symbol_size(scale=1, border=0)[0]
    assert mods == [[1 if v else 0 for v in row] for row in qr.matrix]
    # and not the matrix of some other text
    assert mods != [[1 if v else 0 for v in row] for row in make_qr(qr_text("leeds", "bin-k3x9q3", "BIN-123 <A&B>")).matrix]


# --- dry run ------------------------------------------------------------------------

def test_dry_run_prints_everything_and_touches_nothing(tmp_path, monkeypatch):
    """No process, file, HTTP call or database: fake tools would log a call, the API URL and
    database point nowhere, and the working directory stays empty."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "called"
    for tool in ("mpremote", "esptool"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho \"$0 $@\" >> {called}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA)
    image = tmp_path / "mp.bin"
    image.write_bytes(b"\xe9" * 64)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setenv("STREETSENSE_WIFI_PASSWORD", WIFI_PW)
    res = CliRunner().invoke(device_app, [
        "provision", "--board", "esp32", "--kind", "bin_fill", "--port", "/dev/ttyUSB9", "--tenant", "leeds",
        "--asset", "BIN-123", "--lat", "53.8", "--lon", "-1.55", "--wifi-ssid", "council-iot",
        "--broker", "mqtts://mqtt.example.org", "--ca", str(ca), "--image", str(image),
        "--api-url", "http://127.0.0.1:9", "--database-url", "postgresql://nobody@127.0.0.1:9/none",
        "--broker-dir", str(tmp_path / "broker"), "--label-dir", str(tmp_path / "labels"),
        "--engineer", "alice", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = res.output
    for needle in ("esptool --port /dev/ttyUSB9 chip_id", "erase_flash", "write_flash -z 0x1000",
                   "mpremote connect /dev/ttyUSB9 mip install umqtt.simple", "POST http://127.0.0.1:9/devices",
                   "PATCH http://127.0.0.1:9/devices/leeds/bin-", "issue_credential", "broker_sync", "label",
                   "import ss.selftest as t; t.main(samples=5)", "mpremote connect /dev/ttyUSB9 reset",
                   "dry run: nothing was executed"):
        assert needle in out, needle
    assert WIFI_PW not in out
    assert not called.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # no labels/, broker/, workdir
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--board", "arduino"], "--board must be one of"),
    (["--kind", "toaster"], "--kind must be one of"),
    (["--device-id", "Bad_Id"], "--device-id"),
    (["--broker", "mqtts://u:p@h"], "must not carry credentials"),
    (["--ca", "/nonexistent/ca.crt"], "not found"),
    (["--image", "/nonexistent/mp.bin"], "image /nonexistent/mp.bin not found"),
    (["--cadence", "tx_s=5"], "cadence.tx_s: 5 outside"),
])
def test_cli_input_errors(tmp_path, args, message):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA)
    base = {"--board": "esp32", "--kind": "bin_fill", "--port": "/dev/ttyUSB0", "--tenant": "leeds",
            "--wifi-ssid": "x", "--broker": "mqtts://h", "--ca": str(ca), "--engineer": "alice"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["provision", "--dry-run"] + [x for kv in base.items() for x in kv]
    res = CliRunner().invoke(device_app, argv)
    assert res.exit_code != 0
    assert message in res.output, res.output


def test_pico_image_must_be_uf2(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA)
    img = tmp_path / "fw.bin"
    img.write_bytes(b"x")
    res = CliRunner().invoke(device_app, ["provision", "--dry-run", "--board", "picow", "--kind", "air", "--port",
                                          "/dev/ttyACM0", "--tenant", "leeds", "--wifi-ssid", "x", "--broker",
                                          "mqtts://h", "--ca", str(ca), "--image", str(img), "--engineer", "a"])
    assert res.exit_code == 1 and "must be a .uf2 file" in res.output


def test_inputs_are_frozen_and_secrets_hidden():
    i = inputs()
    assert SECRET not in repr(i) and WIFI_PW not in repr(i)
    with pytest.raises(Exception):
        i.port = "x"  # type: ignore[misc]
    assert replace(i, port="/dev/ttyUSB1").port == "/dev/ttyUSB1"
