"""Execute a provisioning plan: subprocess for esptool/mpremote, httpx for the API,
the registry database for credentials and audit, local files for the rest.

Thin on purpose: every decision that can be made from the inputs is in the plan
(``streetsense.provision.plan``); the runner only does what a step says and
turns what the hardware reports (probe, chip id, self-test line) into facts and
clear errors.  Secrets live in a private work directory that is removed at the
end, success or not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from streetsense.provision import config as pc
from streetsense.provision.plan import MIN_MICROPYTHON, Http, Plan, Run, Write


class ProvisionError(RuntimeError):
    """Provisioning stopped; the message says why and what to do."""


# --- what the hardware says ---------------------------------------------------

_CHIP = re.compile(r"(?:Chip is|Chip type:|Detecting chip type\.\.\.|Connected to)\s+(ESP32[-\w]*)")


def chip_family(esptool_output: str) -> str | None:
    """esptool's chip name -> board family: ESP32-D0WD-V3 -> esp32, ESP32-S3 -> esp32s3.

    >>> chip_family("Detecting chip type... ESP32\\nChip is ESP32-D0WD-V3 (revision v3.1)")
    'esp32'
    >>> chip_family("Connected to ESP32-S3 on /dev/ttyACM0:\\nChip type:          ESP32-S3 (QFN56)")
    'esp32s3'
    >>> chip_family("Chip is ESP32-C3 (QFN32)"), chip_family("A fatal error occurred")
    ('esp32c3', None)
    """
    names = _CHIP.findall(esptool_output)
    if not names:
        return None
    name = names[-1].upper()
    m = re.match(r"ESP32-(S2|S3|C2|C3|C5|C6|C61|H2|P4)\b", name)
    return "esp32" + m.group(1).lower() if m else "esp32"


def board_of(probe: dict) -> str:
    """The board a MicroPython probe describes: esp32, esp32s3, picow, pico2w, or what it is instead.

    >>> board_of({"platform": "rp2", "machine": "Raspberry Pi Pico W with RP2040"})
    'picow'
    >>> board_of({"platform": "rp2", "machine": "Raspberry Pi Pico with RP2040"})
    'pico (no Wi-Fi)'
    >>> board_of({"platform": "esp32", "machine": "Generic ESP32S3 module with ESP32S3"})
    'esp32s3'
    """
    plat = probe.get("platform")
    mach = str(probe.get("machine") or "").upper()
    if plat == "esp32":
        m = re.search(r"ESP32-?(S2|S3|C2|C3|C5|C6|H2|P4)", mach)
        return "esp32" + m.group(1).lower() if m else "esp32"
    if plat == "rp2":
        if "RP2350" in mach:
            return "pico2w" if re.search(r"PICO 2 W\b", mach) else "rp2350 (no Wi-Fi)"
        return "picow" if re.search(r"PICO W\b", mach) else "pico (no Wi-Fi)"
    return f"{plat or 'unknown'} ({probe.get('machine')})"


def last_json(text: str, key: str) -> dict | None:
    """The last line of ``text`` that is a JSON object holding ``key``."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and key in obj:
                return obj
    return None


def _version(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", s)[:3])


MOUNT_LABELS = ("RPI-RP2", "RP2350")


def default_mount_roots() -> list[Path]:
    user = os.environ.get("USER", "")
    return [Path("/media") / user, Path("/run/media") / user, Path("/media"), Path("/mnt"), Path("/Volumes")]


# --- the runner -----------------------------------------------------------------

@dataclass
class Context:
    """What the runner needs besides the plan (and tests replace)."""
    api_token: str | None = None
    database_url: str | None = None
    echo: Callable[[str], None] = print
    env: dict[str, str] | None = None
    mount_roots: Sequence[Path] = field(default_factory=default_mount_roots)
    poll_s: float = 0.5
    retry_delay_s: float = 2.0
    audit_file: Path | None = None


class Runner:
    def __init__(self, plan: Plan, ctx: Context | None = None) -> None:
        self.plan = plan
        self.i = plan.inputs
        self.ctx = ctx or Context()
        self.facts: dict[str, Any] = {}
        self.done: list[str] = []

    # --- driving ---
    def execute(self) -> dict[str, Any]:
        """Run every step; returns the facts (selftest, label, credential ...).  Raises ProvisionError."""
        work = Path(self.i.workdir)
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)
        http = httpx.Client(base_url=self.i.api_url.rstrip("/"), timeout=30,
                            headers={"Authorization": f"Bearer {self.ctx.api_token}"} if self.ctx.api_token else {})
        self._http = http
        try:
            n = len(self.plan.steps)
            for k, step in enumerate(self.plan.steps, 1):
                if step.when and not self.facts.get(step.when):
                    continue
                self.ctx.echo(f"[{k}/{n}] {step.why}")
                if isinstance(step, Run):
                    self._run(step)
                elif isinstance(step, Write):
                    self._write(step)
                elif isinstance(step, Http):
                    self._http_call(step)
                else:
                    getattr(self, "_do_" + step.action)(**step.args)
                self.done.append(step.why)
            return self.facts
        except ProvisionError as e:
            self._audit_failure(str(e))
            raise
        finally:
            http.close()
            shutil.rmtree(work, ignore_errors=True)      # config.json holds the node's secrets

    # --- step kinds ---
    def _run(self, s: Run) -> None:
        attempts = s.retries + 1
        for attempt in range(attempts):
            try:
                r = subprocess.run(list(s.argv), cwd=s.cwd, capture_output=True, text=True, timeout=s.timeout,
                                   env=self.ctx.env)
            except FileNotFoundError:
                raise ProvisionError(f"{s.argv[0]} is not installed (pip install {s.argv[0]})") from None
            except subprocess.TimeoutExpired:
                if attempt + 1 < attempts:
                    time.sleep(self.ctx.retry_delay_s)
                    continue
                raise ProvisionError(f"`{s.show()}` did not finish within {s.timeout:.0f} s") from None
            if r.returncode == 0 or not s.check:
                break
            if attempt + 1 < attempts:
                time.sleep(self.ctx.retry_delay_s)
                continue
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            raise ProvisionError(f"`{s.show()}` failed (exit {r.returncode}): " + " | ".join(tail))
        if s.capture:
            self.facts[s.capture] = {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

    def _write(self, s: Write) -> None:
        p = Path(s.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, s.mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), s.mode)
            f.write(s.data)

    def _http_call(self, s: Http) -> None:
        try:
            r = self._http.request(s.method, s.path, json=s.body)
        except httpx.HTTPError as e:
            raise ProvisionError(f"API at {self.i.api_url} unreachable: {e}") from None
        if r.status_code in s.expect:
            self.facts["registered"] = True
            self.facts[f"http_{s.method.lower()}"] = r.json() if r.content else None
            return
        detail = _detail(r)
        if r.status_code == 401:
            raise ProvisionError("the API refused the token (--api-token / STREETSENSE_API_TOKEN)")
        if s.resume and r.status_code == 409:
            g = self._http.get(f"/devices/{self.i.tenant}/{self.i.device_id}")
            dev = g.json() if g.status_code == 200 else {}
            if dev.get("status") == "provisioned" and dev.get("kind") == self.i.kind:
                self.ctx.echo(f"    {self.i.tenant}/{self.i.device_id} is registered but not active yet: continuing")
                self.facts["registered"] = True
                self.facts["resumed"] = True
                return
            raise ProvisionError(f"device {self.i.tenant}/{self.i.device_id} already exists "
                                 f"({dev.get('status', '?')}, {dev.get('kind', '?')}): choose another --device-id, "
                                 "or retire it first")
        if r.status_code == 404 and s.method == "POST":
            raise ProvisionError(f"unknown tenant {self.i.tenant!r} ({detail})")
        if r.status_code == 422 and "asset" in detail:
            raise ProvisionError(f"asset {self.i.asset!r} is not in tenant {self.i.tenant}'s asset register: "
                                 f"register the asset first ({detail})")
        raise ProvisionError(f"{s.method} {s.path} answered {r.status_code}: {detail}")

    # --- actions ---
    def _do_check_port(self, port: str) -> None:
        if not os.path.exists(port):
            present = sorted(str(p) for p in Path("/dev").glob("tty[UA][SC][BM]*")) if Path("/dev").exists() else []
            raise ProvisionError(f"serial port {port} not found: is the node plugged in (data cable, not "
                                 f"charge-only)? Ports present: {', '.join(present) or 'none'}")

    def _probe(self) -> dict | None:
        got = self.facts.get("probe")
        if not got or got["rc"] != 0:
            return None
        p = last_json(got["out"], "platform")
        return p if p and p.get("impl") == "micropython" else None

    def _do_decide_flash(self, mode: str, image: str | None, board: str) -> None:
        probe = self._probe() if mode != "always" else None
        if probe is not None:
            self.facts["found"] = probe
            found = board_of(probe)
            if found != board:
                raise ProvisionError(f"wrong board: --board {board}, but the node on {self.i.port} is "
                                     f"{found} ({probe.get('machine')})")
        old = probe is not None and _version(probe.get("version", "0")) < MIN_MICROPYTHON
        if mode == "always":
            flash = True
        elif mode == "never":
            flash = False
            if probe is None:
                err = (self.facts.get("probe") or {}).get("err", "").strip().splitlines()[-1:]
                raise ProvisionError(f"no MicroPython answered on {self.i.port} ({' '.join(err) or 'no reply'}); "
                                     "flash it: --image PATH (and --flash auto or always)")
        else:
            flash = probe is None or old
        if flash and not image:
            why = "MicroPython is too old" if old else f"no MicroPython answered on {self.i.port}"
            raise ProvisionError(f"{why}: pass --image PATH with the MicroPython image for {board} "
                                 "(.bin for ESP32, .uf2 for Pico)")
        self.facts["flash"] = flash
        self.ctx.echo("    flashing MicroPython" if flash else
                      f"    MicroPython {probe.get('version') if probe else '?'} already there: not flashing")

    def _do_check_chip(self, board: str) -> None:
        got = self.facts.get("chip") or {}
        fam = chip_family(got.get("out", "") + got.get("err", ""))
        if fam is None:
            raise ProvisionError(f"esptool could not identify the chip on {self.i.port}: hold BOOT while "
                                 "pressing EN/RESET and try again")
        if fam != board:
            raise ProvisionError(f"wrong board: --board {board}, but esptool found an {fam.upper()} on "
                                 f"{self.i.port}; nothing was written")
        self.facts["chip_family"] = fam

    def _do_wait_mount(self, mount: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            cands = [Path(mount)] if mount else [r / lab for r in self.ctx.mount_roots for lab in MOUNT_LABELS]
            for c in cands:
                if (c / "INFO_UF2.TXT").is_file():
                    self.facts["mount"] = str(c)
                    return
            if time.monotonic() > deadline:
                where = mount or ", ".join(str(c) for c in cands[:4]) + " ..."
                raise ProvisionError(f"no Pico BOOTSEL drive (INFO_UF2.TXT) appeared at {where} within "
                                     f"{timeout:.0f} s: hold BOOTSEL while plugging the board in (or --uf2-mount)")
            time.sleep(self.ctx.poll_s)

    def _do_check_uf2_board(self, board: str, board_id: str) -> None:
        info = (Path(self.facts["mount"]) / "INFO_UF2.TXT").read_text(errors="replace")
        m = re.search(r"^Board-ID:\s*(\S+)", info, re.M)
        found = m.group(1) if m else "unknown"
        if found != board_id:
            other = {"RPI-RP2": "an RP2040 (Pico W)", "RP2350": "an RP2350 (Pico 2 W)"}.get(found, found)
            raise ProvisionError(f"wrong board: --board {board} expects Board-ID {board_id}, but the drive is "
                                 f"{other}; nothing was copied")

    def _do_copy_uf2(self, image: str | None) -> None:
        src = Path(image or "")
        with open(src, "rb") as f:
            if f.read(4) != b"UF2\n":
                raise ProvisionError(f"{src} is not a UF2 image")
        dst = Path(self.facts["mount"]) / src.name
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            shutil.copyfileobj(fi, fo)
            fo.flush()
            os.fsync(fo.fileno())

    def _do_wait_port(self, port: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(port):
            if time.monotonic() > deadline:
                raise ProvisionError(f"{port} did not appear within {timeout:.0f} s after flashing")
            time.sleep(self.ctx.poll_s)

    def _do_check_micropython(self, board: str, min_version: str) -> None:
        probe = self._probe()
        if probe is None:
            raise ProvisionError(f"no MicroPython answered on {self.i.port} after flashing")
        found = board_of(probe)
        if found != board:
            raise ProvisionError(f"wrong board: --board {board}, but the node on {self.i.port} is {found} "
                                 f"({probe.get('machine')})")
        if _version(probe.get("version", "0")) < _version(min_version):
            raise ProvisionError(f"MicroPython {probe.get('version')} is too old (needs {min_version}+): "
                                 "reflash with --flash always --image PATH")
        self.facts["micropython"] = probe

    def _store(self):
        from streetsense.identity.credentials import IdentityStore

        if not self.ctx.database_url:
            raise ProvisionError("credentials and the audit log live in the registry database: "
                                 "pass --database-url or set DATABASE_URL")
        return IdentityStore.connect(self.ctx.database_url)

    def _do_issue_credential(self, tenant: str, device_id: str, username: str) -> None:
        from streetsense.identity.credentials import IdentityError

        try:
            with self._store() as store:
                issued = store.issue_device_credential(tenant, device_id, self.i.engineer, secret=self.i.secret,
                                                       reason="provision")
        except IdentityError as e:
            raise ProvisionError(str(e)) from None
        self.facts["credential"] = {"username": issued.username, "replaced": issued.replaced}

    def _do_check_node_config(self, path: str, tenant: str, device_id: str) -> None:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ProvisionError(f"the node's config.json is unreadable ({e}): provision it again") from None
        if (raw.get("tenant"), raw.get("device_id")) != (tenant, device_id):
            raise ProvisionError(f"the node on {self.i.port} is {raw.get('tenant')}/{raw.get('device_id')}, "
                                 f"not {tenant}/{device_id}: nothing was changed")

    def _do_rotate_credential(self, tenant: str, device_id: str) -> None:
        from streetsense.identity.credentials import IdentityError

        try:
            with self._store() as store:
                issued = store.issue_device_credential(tenant, device_id, self.i.engineer, secret=self.i.secret,
                                                       reason="rotate", details={"via": "usb", "port": self.i.port})
        except IdentityError as e:
            raise ProvisionError(str(e)) from None
        self.facts["credential"] = {"username": issued.username, "replaced": issued.replaced}
        self.facts["rotated"] = True

    def _do_patch_config(self, src: str, dst: str) -> None:
        raw = json.loads(Path(src).read_text())
        raw.setdefault("mqtt", {})["password"] = self.i.secret
        raw["mqtt"]["username"] = f"{self.i.tenant}.{self.i.device_id}"
        try:
            pc.validate(raw)
        except pc.ConfigInvalid as e:
            raise ProvisionError(f"the node's config does not validate ({e}): provision it again") from None
        self._write(Write(dst, pc.to_bytes(raw), "new config"))

    def _do_build(self, board: str, out: str) -> None:
        from streetsense.firmware.build import BuildError, build

        try:
            res = build(board, Path(out))
        except BuildError as e:
            raise ProvisionError(f"firmware build failed: {e}") from None
        self.facts["build"] = {"arch": res.arch, "files": len(res.files), "bytes": res.total}

    def _do_check_selftest(self, device_id: str) -> None:
        got = self.facts.get("selftest") or {}
        res = last_json(got.get("out", ""), "selftest")
        if res is None:
            tail = (got.get("err") or got.get("out") or "").strip().splitlines()[-3:]
            raise ProvisionError("the self-test printed no result: " + (" | ".join(tail) or "no output"))
        self.facts["selftest_result"] = res
        if res.get("device_id") not in (None, device_id):
            raise ProvisionError(f"the self-test ran with device id {res.get('device_id')}, expected {device_id}")
        if not res.get("ok"):
            failed = [c for c in res.get("checks", []) if c.get("status") == "fail"]
            why = "; ".join(f"{c['name']}: {c.get('detail') or c.get('value')}" for c in failed)
            raise ProvisionError(f"self-test failed ({why}); the device stays 'provisioned' - fix it and run "
                                 "the same command again")
        for c in res.get("checks", []):
            self.ctx.echo(f"    {c['status']:<4} {c['name']}: {c.get('detail') or c.get('value')}")

    def _do_calibrate(self, config: str) -> None:
        res = self.facts.get("selftest_result") or {}
        empty = res.get("empty_mm")
        if not empty:
            raise ProvisionError("the self-test gave no empty-bin distance to calibrate with")
        raw = json.loads(Path(config).read_text())
        try:
            raw = pc.with_calibration(raw, empty_mm=int(empty))
        except pc.ConfigInvalid as e:
            raise ProvisionError(f"measured empty distance {empty} mm does not fit the calibration ({e}): "
                                 "is the bin empty and the sensor mounted at the top?") from None
        Path(config).write_bytes(pc.to_bytes(raw))
        self.facts["calibration"] = {"empty_mm": int(empty), "readings_mm": res.get("readings_mm"),
                                     "full_mm": raw["calibration"].get("full_mm")}
        self.ctx.echo(f"    calibration.empty_mm = {empty} (median of {res.get('readings_mm')})")

    def _do_broker_sync(self, dir: str, reload_cmd: str | None) -> None:  # noqa: A002
        import shlex

        from streetsense.identity import mosquitto as m

        with self._store() as store:
            res = m.sync(store, Path(dir), reload_command=shlex.split(reload_cmd) if reload_cmd else None)
        self.facts["broker"] = res.__dict__
        if res.changed and not res.reloaded:
            self.ctx.echo(f"    broker files in {dir} updated but the broker was not signalled: reload it")

    def _do_label(self, dir: str, url: str | None) -> None:  # noqa: A002
        from streetsense.provision.label import write_label

        lab = write_label(Path(dir), self.i.tenant, self.i.device_id, self.i.asset, kind=self.i.kind, base_url=url)
        self.facts["label"] = {"text": lab.text, "svg": str(lab.svg), "png": str(lab.png)}
        self.ctx.echo(f"    label {lab.svg} / {lab.png}")

    def _do_audit(self, action: str) -> None:
        from streetsense.provision.audit import provision_details, write_local

        details = provision_details(self.i, self.facts)
        with self._store() as store:
            store.audit(self.i.engineer, action, self.i.tenant, self.i.device_id, details)
        write_local(self.ctx.audit_file, self.i.engineer, action, self.i.tenant, self.i.device_id, details)

    def _audit_failure(self, reason: str) -> None:
        """A failed provisioning after registration is audited too (best effort)."""
        if not self.facts.get("registered") or not self.ctx.database_url:
            return
        from streetsense.provision.audit import provision_details, write_local

        details = {**provision_details(self.i, self.facts), "error": reason}
        try:
            with self._store() as store:
                store.audit(self.i.engineer, "device.provision_failed", self.i.tenant, self.i.device_id, details)
        except Exception:  # noqa: BLE001 - never mask the real error
            pass
        write_local(self.ctx.audit_file, self.i.engineer, "device.provision_failed", self.i.tenant,
                    self.i.device_id, details)


def _detail(r: httpx.Response) -> str:
    try:
        d = r.json().get("detail")
    except ValueError:
        return r.text[:200]
    return d if isinstance(d, str) else json.dumps(d)[:300]


def execute(plan: Plan, ctx: Context | None = None) -> dict[str, Any]:
    return Runner(plan, ctx).execute()
