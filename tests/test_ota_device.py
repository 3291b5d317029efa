"""OTA on the node, under the real MicroPython interpreter (WebAssembly port) with fakes.

Whole nodes run in simulated time (as in test_firmware_node_day): every reset
runs the real ``firmware/boot.py`` (which picks the bundle through
``ss.ota.boot``), then ``ss.app.main`` with the agent attached.  Bundles are
real signed bundles built by ``streetsense.ota.bundle`` (portable bytecode,
since the interpreter cannot load xtensa/arm code), served by a web server
inside the interpreter: the WebAssembly port has no ``socket`` module, so the
node's HTTP client (``ss.ota.http_get``, the same code that talks to a real
socket) gets a fake socket that answers from the files mapped under /srv.
The same client is run against a real ``http.server`` in test_ota_http.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streetsense.firmware import build as fw
from streetsense.ota import bundle as B
from streetsense.ota import keys as K
from tests.support.micropython import FIRMWARE, firmware_files, micropython_available, run_micropython
from tests.test_firmware_node_day import T0, Pub, delivered

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]

URL = "http://ota.example.org:8080/"


# --- bundles ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def council(tmp_path_factory):
    d = tmp_path_factory.mktemp("key")
    K.generate(d / "council.pem")
    return K.load_private(d / "council.pem")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, council):
    """Signed bundles per board: 0.2.0 good, 0.3.0 whose app dies at import."""
    root = tmp_path_factory.mktemp("srv")
    out = {}
    for board in ("esp32", "picow"):
        files, arch = B.firmware_files(board, "0.2.0", arch="bytecode")
        out[board, "0.2.0"] = B.make_bundle(files, root / board / "0.2.0", council, board=board,
                                            version="0.2.0", arch=arch)
        bad, _ = B.firmware_files(board, "0.3.0", arch="bytecode")
        src = root / "crash_app.py"
        src.write_text((FIRMWARE / "ss" / "app.py").read_text()
                       + "\nraise RuntimeError('0.3.0 dies at import')\n")
        fw.compile_file(src, root / "crash_app.mpy", None, "ss/app.py")
        bad["ss/app.mpy"] = (root / "crash_app.mpy").read_bytes()
        out[board, "0.3.0"] = B.make_bundle(bad, root / board / "0.3.0", council, board=board,
                                            version="0.3.0", arch=arch)
    # ESP32 with a MicroPython image each: one that boots, one that crashes before Python runs
    good_img = b"\xe9" + bytes(range(256)) * 80                          # 20 KB
    bad_img = b"\xe9BAD" + bytes(range(256)) * 60
    out["img", "0.2.0"] = B.make_bundle(files_of(out["esp32", "0.2.0"]), root / "img" / "0.2.0", council,
                                        board="esp32", version="0.2.0", arch="bytecode", image=good_img)
    out["img", "0.3.0"] = B.make_bundle(files_of(out["esp32", "0.2.0"], version="0.3.0"),
                                        root / "img" / "0.3.0", council, board="esp32", version="0.3.0",
                                        arch="bytecode", image=bad_img)
    out["root"] = root
    return out


def files_of(b: B.Bundle, version: str | None = None) -> dict[str, bytes]:
    files = {p: (b.path / "files" / p).read_bytes() for p in b.manifest["files"]}
    if version:
        files["ss/__init__.mpy"] = _init_mpy(version)
    return files


def _init_mpy(version: str) -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "__init__.py"
        src.write_text(B._with_version((FIRMWARE / "ss" / "__init__.py").read_text(), version))
        fw.compile_file(src, Path(tmp) / "i.mpy", None, "ss/__init__.py")
        return (Path(tmp) / "i.mpy").read_bytes()


def notice(bundles, key, rid) -> str:
    b = bundles[key]
    board, ver = key
    return json.dumps(b.notice(f"{URL}{board}/{ver}/", rid))


# --- the harness (MicroPython side) -------------------------------------------------------

HARNESS = r'''
import sys, json, gc, world, devices, sim, machine
from umqtt.simple import BROKER

BASE_PATH = list(sys.path)
CAUSE = [machine.PWRON_RESET]
SOFT_RESET = 5
WDT_RESET = 3
ESP_IMAGE = False          # run the fake ESP32 bootloader at every reset
CFG_T = "ss/v1/leeds/binfill-0001/"


class Reset(BaseException):
    pass


def _reset():
    raise Reset()


machine.reset = _reset
machine.reset_cause = lambda: CAUSE[0]


def evt(*a):
    print("EVT", world.now_ms, json.dumps(a))


# --- the bundle web server: answers from /srv (the port has no sockets) ---
HTTP = []
HTTP_BAD = {}              # path -> bytes served instead of the file


class FakeSock:
    def __init__(self):
        self.req = b""
        self.out = b""
        self.pos = 0

    def settimeout(self, t):
        pass

    def sendall(self, b):
        self.req += b
        if b"\r\n\r\n" in self.req:
            path = self.req.split(b" ")[1].decode()
            HTTP.append(path)
            body = HTTP_BAD.get(path)
            if body is None:
                try:
                    with open("/srv" + path, "rb") as f:
                        body = f.read()
                except OSError:
                    body = None
            if body is None:
                self.out = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            else:
                self.out = ("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                            "Content-Length: %d\r\n\r\n" % len(body)).encode() + body

    def recv(self, n):
        if not world.wifi_ok():
            raise OSError(113)
        c = self.out[self.pos:self.pos + n]
        self.pos += len(c)
        world.advance(len(c) // 50)          # ~50 KB/s
        return c

    def close(self):
        pass


def http_connect(host, port, timeout):
    if not world.wifi_ok():
        raise OSError(113)
    assert (host, port) == ("ota.example.org", 8080), (host, port)
    return FakeSock()


# --- resets: boot.py, then main.py with the agent attached ---
with open("/boot.py") as f:
    BOOT_SRC = f.read()


class Crash(Exception):
    pass


def boot_py():
    import micropython as real

    class M:                 # this port's micropython lacks alloc_emergency_exception_buf
        alloc_emergency_exception_buf = staticmethod(lambda n: None)
        const = staticmethod(real.const)
    sys.modules["micropython"] = M
    try:
        exec(BOOT_SRC, {"__name__": "__main__"})
    finally:
        del sys.modules["micropython"]


def node_boot():
    sim.forget_firmware()
    sys.path[:] = BASE_PATH
    if ESP_IMAGE:
        import esp32
        lab = esp32.bootloader()
        evt("image", lab)
        if esp32.image(lab, 4) == b"\xe9BAD":
            raise Crash("image " + lab + " panics before Python starts")
    boot_py()
    from fakeclock import FakeClock
    from umqtt.simple import MQTTClient
    import ss.app
    import ss.node
    import ss.ota
    import ss
    evt("boot", ss.VERSION, sys.path[0], CAUSE[0])
    ss.ota.CONNECT = http_connect
    init = ss.node.Node.__init__

    def hooked(self, *a, **k):
        init(self, *a, **k)
        ss.ota.attach(self)          # the one line ss.app.main gets (see streetsense/ota/README.md)
    ss.node.Node.__init__ = hooked
    board = __import__("board")
    return ss.app.main(clock=FakeClock(), board=board, client_cls=MQTTClient, config_path=sim.CONFIG)


def run(end_s):
    world.end_ms = end_s * 1000
    boots = 0
    while True:
        boots += 1
        try:
            node_boot()
            return boots
        except world.DeepSleep as e:
            CAUSE[0] = machine.DEEPSLEEP_RESET
            try:
                world.advance(e.ms)
            except world.StopSim:
                return boots
        except Reset:
            evt("reset")
            CAUSE[0] = SOFT_RESET
            world.wdt_timeout = 0
            try:
                world.advance(200)
            except world.StopSim:
                return boots
        except world.StopSim:
            return boots
        except Exception as e:
            # MicroPython stops at the REPL; the trial watchdog resets the chip
            evt("crash", repr(e))
            CAUSE[0] = WDT_RESET
            world.wdt_timeout = 0
            try:
                world.advance(30000)
            except world.StopSim:
                return boots


def state():
    try:
        with open("/active") as f:
            return json.load(f)
    except OSError:
        return None


def publish_notice(n):
    def f():
        evt("notice", json.loads(n)["version"])
        BROKER.retained[CFG_T + "cmd"] = n.encode()
    return f
'''


@dataclass
class Out:
    pubs: list[Pub] = field(default_factory=list)
    events: list[tuple[int, list]] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    text: str = ""

    def on(self, channel: str) -> list[Pub]:
        return [p for p in self.pubs if p.topic.endswith("/" + channel)]

    def acks(self) -> list[dict]:
        return [json.loads(p.payload) for p in self.on("ack")]

    def ota_acks(self) -> list[tuple]:
        return [(a["ota"], a["state"]) for a in self.acks() if "ota" in a]

    def fw(self) -> list[str]:
        """Firmware version of each status message, consecutive repeats folded."""
        out: list[str] = []
        for p in self.on("status"):
            v = json.loads(p.payload)["fw"]
            if not out or out[-1] != v:
                out.append(v)
        return out

    def ev(self, kind: str) -> list[list]:
        return [e for _, e in self.events if e[0] == kind]


def run_node(script: str, bundles, board: str, council, timeout: float = 200) -> Out:
    files = firmware_files(board)
    files["/boot.py"] = FIRMWARE / "boot.py"
    files["/srv"] = bundles["root"]
    pub = Path(bundles["root"]) / "ota.pub"
    pub.write_text("# council key\n" + K.public_bytes(council).hex() + "\n")
    files["/ota.pub"] = pub
    text = run_micropython(HARNESS + script, files, timeout=timeout)
    out = Out(text=text)
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "PUB":
            p = line.split(" ")
            out.pubs.append(Pub(int(p[1]), p[2], p[3] == "1", bytes.fromhex(p[4])))
        elif parts[0] == "EVT":
            out.events.append((int(parts[1]), json.loads(parts[2])))
        elif parts[0] == "RESULT":
            out.result = json.loads(line[7:])
    assert out.result, text[-3000:]
    return out


# --- ESP32 bin node: a tampered file, then a good update, then one that crashes ----------

ESP32_DAY = r'''
devices.standard("bin_fill")
sim.write_config(sim.base_config("bin_fill", cadence={"sample_s": 600, "tx_s": 3600}))
world.at(1800, publish_notice(N1))
HTTP_BAD["/esp32/0.2.0/files/ss/node.mpy"] = b"\x4d\x06 not the signed file"
def fix():
    HTTP_BAD.clear()
    evt("fixed")
world.at(5400, fix)
world.at(4 * 3600, publish_notice(N2))
wakes = run(8 * 3600)
ring, stage = sim.leftovers(24)
import os
print("RESULT", json.dumps({"wakes": wakes, "state": state(), "http": HTTP, "bites": world.wdt_bites,
      "ring": ring, "stage": stage, "a": sorted(os.listdir("/a")), "b": sorted(os.listdir("/b"))}))
'''


@pytest.fixture(scope="module")
def esp32_day(bundles, council):
    script = (f"N1 = {notice(bundles, ('esp32', '0.2.0'), 7)!r}\n"
              f"N2 = {notice(bundles, ('esp32', '0.3.0'), 8)!r}\n" + ESP32_DAY)
    return run_node(script, bundles, "esp32", council)


def test_tampered_file_is_never_switched_to(esp32_day):
    acks = esp32_day.acks()
    first_fail = next(a for a in acks if a.get("state") == "failed")
    assert first_fail["ota"] == "0.2.0" and first_fail["error"] == "hash mismatch: ss/node.mpy"
    assert first_fail["final"] is False and first_fail["tries"] == 1 and first_fail["fw"] == "0.1.0"
    # no reset and no other firmware until the server was fixed
    fixed = next(t for t, e in esp32_day.events if e[0] == "fixed")
    first_reset = next(t for t, e in esp32_day.events if e[0] == "reset")
    assert first_reset > fixed
    assert all(e[1] == "0.1.0" for t, e in esp32_day.events if e[0] == "boot" and t < first_reset)


def test_update_resumes_and_boots_into_the_new_bundle(esp32_day, bundles):
    http = esp32_day.result["http"]
    files = sorted(bundles["esp32", "0.2.0"].manifest["files"])
    n1 = [p for p in http if p.startswith("/esp32/0.2.0/files/")]
    # first try stops at the tampered file; the second fetches only what was missing
    assert len(n1) == len(files) + 1
    assert sorted(set(n1)) == [f"/esp32/0.2.0/files/{f}" for f in files]
    assert n1.count("/esp32/0.2.0/files/ss/node.mpy") == 2
    assert esp32_day.ota_acks()[:5] == [("0.2.0", "downloading"), ("0.2.0", "failed"),
                                        ("0.2.0", "downloading"), ("0.2.0", "staged"), ("0.2.0", "running")]
    boots = esp32_day.ev("boot")
    first_b = next(e for e in boots if e[1] == "0.2.0")
    assert first_b[2] == "/a" and first_b[3] == 5                 # after the reset, from slot a
    running = next(a for a in esp32_day.acks() if a.get("state") == "running")
    assert running["fw"] == "0.2.0" and running["id"] == 7


def test_crashing_bundle_falls_back_after_three_boots(esp32_day, bundles):
    http = esp32_day.result["http"]
    n2 = [p for p in http if p.startswith("/esp32/0.3.0/files/")]
    # everything but the changed files is copied from slot a on the node
    assert sorted(n2) == ["/esp32/0.3.0/files/ss/__init__.mpy", "/esp32/0.3.0/files/ss/app.mpy"]
    crashes = esp32_day.ev("crash")
    assert len(crashes) == 3 and all("dies at import" in c[1] for c in crashes)
    assert esp32_day.ota_acks()[5:] == [("0.3.0", "downloading"), ("0.3.0", "staged"), ("0.3.0", "rolled_back")]
    rb = esp32_day.acks()[-1]
    assert rb["ok"] is False and rb["fw"] == "0.2.0" and rb["id"] == 8 and "3 boots" in rb["error"]
    st = esp32_day.result["state"]
    assert st["slot"] == "a" and st["version"] == "0.2.0" and not st["trial"] and "8:0.3.0" in st["bad"]
    assert esp32_day.fw() == ["0.1.0", "0.2.0"]                  # 0.3.0 never published anything
    assert "manifest.json" in esp32_day.result["a"] and "ss" in esp32_day.result["b"]


def test_readings_survive_the_updates(esp32_day):
    d = delivered(esp32_day, "binfill-0001", "bin_fill")           # decodes every pack like the backend
    got = sorted(t for m, t in d.readings if m == "fill")
    slots = [(t // 1000 - T0) // 600 for t in got]
    left = (esp32_day.result["ring"] + esp32_day.result["stage"]) // 4
    assert len(got) + left == 8 * 6 and slots == list(range(len(got)))       # slots 0:00 .. 7:50
    assert esp32_day.result["bites"] == 0                          # downloads feed the watchdog


# --- Pico W: a crashing bundle falls back to the factory install; then a good one -----------

PICO = r'''
devices.standard("bin_fill")
sim.write_config(sim.base_config("bin_fill", cadence={"sample_s": 600, "tx_s": 1800}))
world.at(600, publish_notice(N2))
world.at(2 * 3600, publish_notice(N1))
COUNTS = []
def probe():
    COUNTS.append(state())
world.at(2 * 3600 - 60, probe)
wakes = run(4 * 3600)
print("RESULT", json.dumps({"wakes": wakes, "state": state(), "mid": COUNTS, "bites": world.wdt_bites}))
'''


@pytest.fixture(scope="module")
def pico_day(bundles, council):
    script = (f"N1 = {notice(bundles, ('picow', '0.2.0'), 21)!r}\n"
              f"N2 = {notice(bundles, ('picow', '0.3.0'), 20)!r}\n" + PICO)
    return run_node(script, bundles, "picow", council)


def test_pico_crashing_bundle_falls_back_to_factory(pico_day):
    assert pico_day.ota_acks()[:3] == [("0.3.0", "downloading"), ("0.3.0", "staged"), ("0.3.0", "rolled_back")]
    assert len(pico_day.ev("crash")) == 3
    mid = pico_day.result["mid"][0]
    assert mid["slot"] == "" and mid["version"] == "0.1.0" and "20:0.3.0" in mid["bad"]
    boots = pico_day.ev("boot")
    assert [b[1] for b in boots[:2]] == ["0.1.0", "0.1.0"]
    # the trial boots: counted through 4, then the factory install again
    assert pico_day.result["bites"] == 0


def test_pico_good_bundle_runs_from_slot_a(pico_day):
    assert pico_day.ota_acks()[3:] == [("0.2.0", "downloading"), ("0.2.0", "staged"), ("0.2.0", "running")]
    st = pico_day.result["state"]
    assert st["slot"] == "a" and st["version"] == "0.2.0" and not st.get("trial")
    assert pico_day.fw() == ["0.1.0", "0.2.0"]
    last = pico_day.ev("boot")[-1]
    assert last[1] == "0.2.0" and last[2] == "/a"


# --- ESP32 MicroPython image: A/B app partitions with the bootloader's rollback ------------

IMAGE = r'''
ESP_IMAGE = True
import esp32
devices.standard("bin_fill")
sim.write_config(sim.base_config("bin_fill", cadence={"sample_s": 600, "tx_s": 3600}))
world.at(1800, publish_notice(N1))
HTTP_BAD["/img/0.2.0/files/micropython.bin"] = b"\xe9" + bytes(20480)
def fix():
    HTTP_BAD.clear()
world.at(5400, fix)
MID = []
world.at(3 * 3600, lambda: MID.append([state(), dict(esp32.ota_state), esp32.boot_label]))
world.at(3 * 3600 + 60, publish_notice(N2))
wakes = run(6 * 3600)
print("RESULT", json.dumps({"wakes": wakes, "state": state(), "mid": MID, "ota": esp32.ota_state,
      "boot": esp32.boot_label, "log": [x for x in esp32.log if x[0] != "boot"]}))
'''


@pytest.fixture(scope="module")
def image_day(bundles, council):
    n1 = json.dumps(bundles["img", "0.2.0"].notice(f"{URL}img/0.2.0/", 30))
    n2 = json.dumps(bundles["img", "0.3.0"].notice(f"{URL}img/0.3.0/", 31))
    return run_node(f"N1 = {n1!r}\nN2 = {n2!r}\n" + IMAGE, bundles, "esp32", council)


def test_image_update_marked_valid_after_first_publish(image_day):
    acks = image_day.ota_acks()
    assert acks[:5] == [("0.2.0", "downloading"), ("0.2.0", "failed"), ("0.2.0", "downloading"),
                        ("0.2.0", "staged"), ("0.2.0", "running")]
    fail = next(a for a in image_day.acks() if a.get("state") == "failed")
    assert fail["error"] == "image: hash mismatch in ota_1"
    st, ota, boot = image_day.result["mid"][0]
    assert ota["ota_1"] == "valid" and boot == "ota_1" and st["slot"] == "a" and not st.get("trial")
    # marked valid in the wake that first published, before any further reset (no rollback between)
    assert image_day.result["log"][:2] == [["set_boot", "ota_1"], ["valid", "ota_1"]]


def test_bad_image_rolled_back_by_the_bootloader(image_day):
    assert image_day.ota_acks()[5:] == [("0.3.0", "downloading"), ("0.3.0", "staged"), ("0.3.0", "rolled_back")]
    rb = image_day.acks()[-1]
    assert rb["error"] == "image rolled back to ota_1" and rb["fw"] == "0.2.0"
    assert ["rollback", "ota_1"] in image_day.result["log"]
    assert image_day.result["ota"]["ota_0"] == "aborted" and image_day.result["boot"] == "ota_1"
    st = image_day.result["state"]
    assert st["slot"] == "a" and st["version"] == "0.2.0" and "image" not in st
    assert len(image_day.ev("crash")) == 1 and image_day.fw() == ["0.1.0", "0.2.0"]


# --- the pure parts and the verifier's speed under MicroPython ------------------------------

PURE = r'''
import time, json, binascii, hashlib
from ss import ota
PUB = binascii.unhexlify(PUB_HEX)
with open("/m/manifest.json", "rb") as f:
    RAW = f.read()
with open("/m/manifest.sig") as f:
    SIG = json.load(f)["sig"]
t = time.ticks_ms()
ota.check_signature(RAW, SIG, [PUB])
ms = time.ticks_diff(time.ticks_ms(), t)
times = []
for i in range(3):
    t = time.ticks_ms()
    assert ota.verify(PUB, ota.signed_message(RAW), binascii.unhexlify(SIG))
    times.append(time.ticks_diff(time.ticks_ms(), t))
t = time.ticks_ms()
for i in range(10):
    ota.sha512(b"x" * 104)
sha_ms = time.ticks_diff(time.ticks_ms(), t) / 10
def rejected(raw, sig, keys):
    try:
        ota.check_signature(raw, sig, keys)
    except ota.OTAError as e:
        return str(e)
    return None
tampered = RAW.replace(b'"size":', b'"size": ', 1)
wrong = binascii.unhexlify("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
flipped = SIG[:10] + ("0" if SIG[10] != "0" else "1") + SIG[11:]
bigs = SIG[:64] + "ff" * 32
res = {"first_ms": ms, "ms": times, "sha512_ms": sha_ms,
       "tampered": rejected(tampered, SIG, [PUB]), "wrong_key": rejected(RAW, SIG, [wrong]),
       "flipped": rejected(RAW, flipped, [PUB]), "s_too_big": rejected(RAW, bigs, [PUB]),
       "two_keys": rejected(RAW, SIG, [wrong, PUB]), "no_keys": rejected(RAW, SIG, [])}
m = ota.parse_manifest(RAW, "esp32")
res["files"] = len(m["files"])
for bad in (b'{"format": "x"}', RAW.replace(b'"ss/app.mpy"', b'"../app.mpy"'), RAW.replace(b'"board":"esp32"', b'"board":"picow"')):
    try:
        ota.parse_manifest(bad, "esp32")
        res.setdefault("parsed_bad", []).append(1)
    except ota.OTAError as e:
        res.setdefault("manifest_errors", []).append(str(e))
# decide(): the boot counter
st = {"slot": "b", "version": "2", "trial": 1, "prev": "a", "prev_version": "1", "key": "9:2"}
seq = []
for deep in (False, False, True, False, False):
    slot, new = ota.decide(st, deep)
    seq.append([slot, new.get("boots", 0), new.get("wakes", 0), new.get("trial")])
    st = new
res["decide"] = seq
res["report"] = st["report"]
print("RESULT", json.dumps(res))
'''


def test_pure_parts_and_verification_time_under_micropython(bundles, council):
    b = bundles["esp32", "0.2.0"]
    files = firmware_files("esp32")
    files["/m"] = b.path
    out = run_micropython(f"PUB_HEX = {K.public_bytes(council).hex()!r}\n" + PURE, files, timeout=120)
    res = json.loads(re.search(r"^RESULT (.*)$", out, re.M).group(1))
    assert res["tampered"] == res["wrong_key"] == res["flipped"] == res["s_too_big"] == \
        "signature: not by a trusted key"
    assert res["two_keys"] is None and res["no_keys"].startswith("no OTA key")
    assert res["files"] == len(b.manifest["files"]) and "parsed_bad" not in res
    assert res["manifest_errors"] == ["manifest: format is not ss-ota-1", "manifest: bad path '../app.mpy'",
                                      "manifest: built for picow, this is esp32"]
    assert res["decide"] == [["b", 1, 0, 1], ["b", 2, 0, 1], ["b", 2, 1, 1], ["b", 3, 1, 1], ["a", 0, 0, 0]]
    assert res["report"]["state"] == "rolled_back" and res["report"]["ota"] == "2"
    # Figures for the record (WebAssembly MicroPython on this host)
    print(f"\nEd25519 verify under MicroPython (wasm): first {res['first_ms']} ms, then {res['ms']} ms; "
          f"sha512 of one block {res['sha512_ms']:.1f} ms")
    assert max(res["ms"]) < 2000
