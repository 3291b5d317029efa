"""Provisioning as a pure plan: inputs in, a list of steps out, nothing touched.

``provision_plan(inputs)`` returns every command (exact argv), file write, HTTP
call and local action needed to turn a board on a USB port into a registered,
credentialed, self-tested node.  ``streetsense.provision.runner`` executes a
plan; ``--dry-run`` prints it.  Steps can depend on what earlier steps found
(``when``: a fact such as "flash", set by the runner from the probe), so one
plan covers "MicroPython already there" and "flash it first".

Order, and why:

1. preflight: port present; probe MicroPython (``mpremote exec``) - is it there,
   which board is it; decide whether to flash (``--flash auto|always|never``)
2. flash (only when needed): ESP32 - ``esptool chip_id`` (refuse a chip that
   is not ``--board``), ``erase_flash``, ``write_flash``; Pico - wait for the
   RPI-RP2 / RP2350 drive, check its Board-ID, copy the UF2, wait for the port;
   then probe again
3. register (API POST /devices, status provisioned) and issue the MQTT
   credential (registry database) - only now, after the hardware checked out
4. wipe the node's filesystem (an old identity's ring buffer and config must
   never leak into the new one), ``mip install umqtt.simple``, upload the
   firmware built for the board's architecture - everything but ``main.py``,
   so a reset meanwhile leaves the node at the REPL, not running half-installed
5. config.json (validated by the firmware's own validator) and the CA
6. on-device self-test; bin_fill: the median range becomes calibration.empty_mm
7. ``main.py``; API PATCH status active; broker files + reload; label; audit;
   ``mpremote reset`` starts the node
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from streetsense.provision import config as pc

BOARDS = ("esp32", "esp32s3", "picow", "pico2w")
ESP = {"esp32": ("esp32", "0x1000"), "esp32s3": ("esp32s3", "0x0")}      # esptool --chip, image offset
UF2 = {"picow": "RPI-RP2", "pico2w": "RP2350"}                           # BOOTSEL drive Board-ID
FLASH_MODES = ("auto", "always", "never")
MIN_MICROPYTHON = (1, 23)
DEPS = ("umqtt.simple",)

# MicroPython snippets run with ``mpremote exec``
PROBE = ('import sys,os,json;print(json.dumps({"impl":sys.implementation.name,'
         '"version":".".join(str(v) for v in sys.implementation.version[:3]),"platform":sys.platform,'
         '"machine":getattr(sys.implementation,"_machine",None) or os.uname().machine}))')
WIPE = ('import os\n'
        'def rm(p):\n'
        ' if os.stat(p)[0]&0x4000:\n'
        '  for n in os.listdir(p):rm(p+"/"+n)\n'
        '  os.rmdir(p)\n'
        ' else:os.remove(p)\n'
        'for n in os.listdir("/"):\n'
        ' try:rm("/"+n)\n'
        ' except OSError as e:print("kept","/"+n,e)\n'
        'print("wiped")\n')


@dataclass(frozen=True)
class Run:
    """An external program (esptool, mpremote)."""
    argv: tuple[str, ...]
    why: str
    cwd: str | None = None
    when: str | None = None          # run only when this fact is true
    capture: str | None = None       # keep stdout as this fact
    check: bool = True               # a non-zero exit stops the provisioning
    retries: int = 0                 # e.g. the first connection after a flash
    timeout: float = 600.0

    def show(self) -> str:
        return ("(in " + self.cwd + ") " if self.cwd else "") + shlex.join(self.argv)


@dataclass(frozen=True)
class Write:
    """A local file (mode from the start; secrets are removed with the work dir)."""
    path: str
    data: bytes = field(repr=False)
    why: str
    mode: int = 0o600
    preview: str | None = None       # printable form (secrets redacted)
    when: str | None = None

    def show(self) -> str:
        return f"{self.path} ({self.mode:04o}, {len(self.data)} bytes)" + (f": {self.preview}" if self.preview else "")


@dataclass(frozen=True)
class Http:
    """A call to the StreetSense API (the runner adds the bearer token)."""
    method: str
    path: str
    body: dict | None
    why: str
    expect: tuple[int, ...] = (200,)
    resume: bool = False             # POST /devices: 409 on a device still "provisioned" continues
    when: str | None = None

    def show(self, base: str = "") -> str:
        return f"{self.method} {base}{self.path}" + (f" {json.dumps(self.body)}" if self.body is not None else "")


@dataclass(frozen=True)
class Do:
    """A local action of the runner (checks, waits, build, registry database, label)."""
    action: str
    args: dict[str, Any]
    why: str
    when: str | None = None

    def show(self) -> str:
        return self.action + " " + " ".join(f"{k}={v}" for k, v in self.args.items() if v is not None)


Step = Union[Run, Write, Http, Do]


@dataclass(frozen=True)
class ProvisionInputs:
    board: str
    kind: str
    port: str
    tenant: str
    device_id: str
    secret: str = field(repr=False)
    wifi: tuple[tuple[str, str], ...] = field(repr=False)
    broker_host: str
    broker_port: int
    tls: bool
    api_url: str
    workdir: Path
    label_dir: Path
    engineer: str
    ca_pem: bytes | None = field(default=None, repr=False)
    asset: str | None = None
    lat: float | None = None
    lon: float | None = None
    image: Path | None = None
    flash: str = "auto"
    uf2_mount: Path | None = None
    deps_dir: Path | None = None
    ota_pub: Path | None = None
    calibration: dict = field(default_factory=dict)
    cadence: dict = field(default_factory=dict)
    sensors: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    calibrate: bool = True
    samples: int = 5
    selftest_wifi: bool = False
    broker_dir: Path | None = None
    reload_cmd: str | None = None
    label_url: str | None = None
    firmware: str = field(default_factory=pc.firmware_version)
    mpremote: str = "mpremote"
    esptool: str = "esptool"
    baud: int = 460800

    @property
    def profile(self) -> str:
        return pc.PROFILES[self.board]

    @property
    def username(self) -> str:
        return f"{self.tenant}.{self.device_id}"


@dataclass(frozen=True)
class RotationInputs:
    """``device rotate-credentials --port``: a new secret onto a node at hand."""
    tenant: str
    device_id: str
    port: str
    workdir: Path
    engineer: str
    secret: str = field(repr=False)
    broker_dir: Path | None = None
    reload_cmd: str | None = None
    mpremote: str = "mpremote"
    api_url: str = ""


@dataclass(frozen=True)
class Plan:
    inputs: ProvisionInputs | RotationInputs
    steps: tuple[Step, ...]
    config: dict = field(repr=False)       # the raw config.json written before the self-test
    title: str = ""

    def commands(self) -> list[tuple[str, ...]]:
        """Every external command's argv, in order."""
        return [s.argv for s in self.steps if isinstance(s, Run)]

    def render(self) -> str:
        i = self.inputs
        out = [self.title]
        for n, s in enumerate(self.steps, 1):
            cond = f"[if {s.when}] " if s.when else ""
            if isinstance(s, Run):
                kind, what = "run", s.show()
            elif isinstance(s, Write):
                kind, what = "write", s.show()
            elif isinstance(s, Http):
                kind, what = "http", s.show(i.api_url.rstrip("/"))
            else:
                kind, what = "do", s.show()
            out.append(f"{n:3d}. {kind:<5} {cond}{what}\n       # {s.why}")
        return "\n".join(out)


def build_entries(profile: str) -> tuple[list[str], str]:
    """Top-level names of the built firmware (besides main.py), and main.py's name.

    From the manifest alone (no build needed): files keep their first path part,
    compiled files end in .mpy.
    """
    from streetsense.firmware.build import SOURCE_ONLY, manifest

    tops: list[str] = []
    for dev, _src in manifest(profile):
        if dev == "main.py":
            continue
        name = dev if dev in SOURCE_ONLY else dev[:-3] + ".mpy"
        top = name.split("/", 1)[0]
        if top not in tops:
            tops.append(top)
    return tops, "main.py"


def _config(i: ProvisionInputs) -> dict:
    return pc.node_config(
        tenant=i.tenant, device_id=i.device_id, kind=i.kind, board=i.board, wifi=list(i.wifi),
        broker_host=i.broker_host, broker_port=i.broker_port, tls=i.tls, username=i.username, password=i.secret,
        ca_path=pc.CA_DEVICE_PATH if i.tls else None, calibration=i.calibration, cadence=i.cadence,
        sensors=i.sensors, thresholds=i.thresholds)


def provision_plan(i: ProvisionInputs) -> Plan:
    """Every step, for one board on one port.  Raises ValueError / ConfigInvalid on bad inputs."""
    if i.board not in BOARDS:
        raise ValueError(f"--board must be one of {', '.join(BOARDS)}")
    if i.flash not in FLASH_MODES:
        raise ValueError(f"--flash must be one of {', '.join(FLASH_MODES)}")
    if i.flash == "always" and i.image is None:
        raise ValueError("--flash always needs --image (the MicroPython image for the board)")
    if i.tls and not i.ca_pem:
        raise ValueError("TLS needs the broker CA (--ca or --pki-dir): nodes pin it")
    raw = _config(i)                       # validated now: a bad config stops before anything runs
    esp = i.board in ESP
    mp = (i.mpremote, "connect", i.port)
    work = Path(i.workdir)
    fw_dir = work / "fw"
    steps: list[Step] = []

    # 1. preflight
    if esp or i.flash == "never":
        steps.append(Do("check_port", {"port": i.port}, "the node's USB serial port is present"))
    if i.flash != "always":
        steps.append(Run((*mp, "exec", PROBE), "is MicroPython running, on which board?", capture="probe",
                         check=False, timeout=30))
    steps.append(Do("decide_flash", {"mode": i.flash, "image": str(i.image) if i.image else None,
                                     "board": i.board},
                    "flash only when needed (auto) - and refuse a board that is not --board"))
    # 2. flash (listed only when it can happen: an image given and --flash not never)
    can_flash = i.flash != "never" and i.image is not None
    if not can_flash:
        pass
    elif esp:
        chip, offset = ESP[i.board]
        steps += [
            Run((i.esptool, "--port", i.port, "chip_id"), "which chip is on the port?", when="flash",
                capture="chip", timeout=60),
            Do("check_chip", {"board": i.board}, "the detected chip must be --board", when="flash"),
            Run((i.esptool, "--chip", chip, "--port", i.port, "erase_flash"), "erase the whole flash",
                when="flash", timeout=180),
            Run((i.esptool, "--chip", chip, "--port", i.port, "--baud", str(i.baud), "write_flash", "-z", offset,
                 str(i.image)), "write the MicroPython image", when="flash", timeout=300),
        ]
    else:
        steps += [
            Do("wait_mount", {"mount": str(i.uf2_mount) if i.uf2_mount else None, "timeout": 120},
               "hold BOOTSEL while plugging in: wait for the RPI-RP2 / RP2350 drive", when="flash"),
            Do("check_uf2_board", {"board": i.board, "board_id": UF2[i.board]},
               "the drive's INFO_UF2.TXT Board-ID must match --board", when="flash"),
            Do("copy_uf2", {"image": str(i.image) if i.image else None}, "copy the UF2: the board flashes and reboots",
               when="flash"),
            Do("wait_port", {"port": i.port, "timeout": 60}, "MicroPython's USB serial port appears", when="flash"),
        ]
    if can_flash:
        steps.append(Run((*mp, "exec", PROBE), "MicroPython answers after flashing", when="flash", capture="probe",
                         retries=5, timeout=30))
    steps += [
        Do("check_micropython", {"board": i.board, "min_version": ".".join(map(str, MIN_MICROPYTHON))},
           "MicroPython of a recent enough version on the right board"),
    ]
    # 3. registry
    steps += [
        Http("POST", "/devices", {"tenant": i.tenant, "device_id": i.device_id, "kind": i.kind, "board": i.board,
                                  "firmware": i.firmware, "lat": i.lat, "lon": i.lon, "asset_id": i.asset,
                                  "status": "provisioned"},
             "register the device (provisioned until the self-test passes)", expect=(201,), resume=True),
        Do("issue_credential", {"tenant": i.tenant, "device_id": i.device_id, "username": i.username},
           "new MQTT credential; only its hash is stored (an earlier one is revoked)"),
    ]
    # 4. files onto the node
    tops, main = build_entries(i.profile)
    steps += [
        Do("build", {"board": i.profile, "out": str(fw_dir)}, "compile the firmware with mpy-cross for the board"),
        Run((*mp, "exec", WIPE), "wipe the filesystem: no earlier identity, ring buffer or config survives",
            timeout=120),
    ]
    if i.deps_dir is not None:
        steps.append(Run((*mp, "fs", "mkdir", ":lib", "+", "fs", "cp", "-r", "umqtt", ":lib/"),
                         "install umqtt.simple from the local copy", cwd=str(i.deps_dir), timeout=120))
    else:
        steps.append(Run((*mp, "mip", "install", *DEPS), "install the firmware's dependency umqtt.simple",
                         timeout=300))
    steps.append(Run((*mp, "fs", "cp", "-r", *tops, ":/"), "upload the firmware (main.py comes last)",
                     cwd=str(fw_dir), timeout=600))
    # 5. config and CA
    cfg_path = work / "config.json"
    steps.append(Write(str(cfg_path), pc.to_bytes(raw), "the node's config (contains its secrets)",
                       preview=json.dumps(pc.redacted(raw), sort_keys=True)))
    uploads = ["fs", "cp", str(cfg_path), ":config.json"]
    if i.tls:
        ca_path = work / "ca.pem"
        steps.append(Write(str(ca_path), i.ca_pem or b"", "the broker CA the node pins", mode=0o644))
        uploads += ["+", "fs", "cp", str(ca_path), ":" + pc.CA_DEVICE_PATH.lstrip("/")]
    if i.ota_pub is not None:
        uploads += ["+", "fs", "cp", str(i.ota_pub), ":ota.pub"]
    steps.append(Run((*mp, *uploads), "upload config.json" + (", the CA" if i.tls else "")
                     + (" and the OTA key" if i.ota_pub else ""), timeout=120))
    # 6. self-test and calibration
    call = f"t.main(samples={int(i.samples)}" + (", wifi=True" if i.selftest_wifi else "") + ")"
    steps += [
        Run((*mp, "exec", "import ss.selftest as t; " + call), "on-device self-test", capture="selftest",
            check=False, timeout=180),
        Do("check_selftest", {"device_id": i.device_id}, "every check passed"),
    ]
    if i.kind == "bin_fill" and i.calibrate:
        steps += [
            Do("calibrate", {"config": str(cfg_path)}, "the bin is empty now: its median range is calibration.empty_mm"),
            Run((*mp, "fs", "cp", str(cfg_path), ":config.json"), "upload the calibrated config", timeout=120),
        ]
    # 7. go live
    steps += [
        Run((*mp, "fs", "cp", main, ":main.py"), "install main.py: the node runs from the next reset",
            cwd=str(fw_dir), timeout=120),
        Http("PATCH", f"/devices/{i.tenant}/{i.device_id}", {"status": "active", "firmware": i.firmware},
             "self-test passed: the device is active", expect=(200,)),
    ]
    if i.broker_dir is not None:
        steps.append(Do("broker_sync", {"dir": str(i.broker_dir), "reload_cmd": i.reload_cmd},
                        "regenerate the broker's passwd/acl and reload it: the node may connect"))
    steps += [
        Do("label", {"dir": str(i.label_dir), "url": i.label_url}, "QR label (SVG and PNG) with device id and asset"),
        Do("audit", {"action": "device.provision"}, "who provisioned what, when"),
        Run((*mp, "reset"), "start the node", timeout=60),
    ]
    return Plan(i, tuple(steps), raw, f"Provisioning plan for {i.tenant}/{i.device_id}: {i.kind} on {i.board} "
                                      f"at {i.port} (firmware {i.firmware}, flash {i.flash})")


def rotation_plan(r: RotationInputs) -> Plan:
    """Rotate a node's MQTT credential over USB: read its config, check it is the node meant,
    rotate in the registry, write the new secret, reload the broker, restart the node."""
    mp = (r.mpremote, "connect", r.port)
    work = Path(r.workdir)
    current, new = work / "current.json", work / "config.json"
    steps: list[Step] = [
        Do("check_port", {"port": r.port}, "the node's USB serial port is present"),
        Run((*mp, "fs", "cp", ":config.json", str(current)), "read the node's config", timeout=120),
        Do("check_node_config", {"path": str(current), "tenant": r.tenant, "device_id": r.device_id},
           "the node on the port is the device named"),
        Do("rotate_credential", {"tenant": r.tenant, "device_id": r.device_id},
           "new MQTT credential; the old one is revoked"),
        Do("patch_config", {"src": str(current), "dst": str(new)},
           "the node's config with the new secret (validated by the firmware's validator)"),
        Run((*mp, "fs", "cp", str(new), ":config.json"), "upload the new config", timeout=120),
    ]
    if r.broker_dir is not None:
        steps.append(Do("broker_sync", {"dir": str(r.broker_dir), "reload_cmd": r.reload_cmd},
                        "regenerate the broker's passwd/acl and reload it: the old secret stops working"))
    steps.append(Run((*mp, "reset"), "restart the node with the new secret", timeout=60))
    return Plan(r, tuple(steps), {}, f"Credential rotation for {r.tenant}/{r.device_id} at {r.port}")
