"""The node's ``/config.json``, built on the host and checked by the firmware's own validator.

``firmware/ss/config.py`` is loaded under CPython straight from its file (it
imports only ``json``), so a config the CLI writes is exactly one the node
accepts at boot: same defaults, same limits, same error messages.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
FW_CONFIG = REPO / "firmware" / "ss" / "config.py"
FW_INIT = REPO / "firmware" / "ss" / "__init__.py"
CA_DEVICE_PATH = "/ca.pem"
# board given to the CLI -> firmware board profile (firmware/boards/<profile>.py)
PROFILES = {"esp32": "esp32", "esp32s3": "esp32", "picow": "picow", "pico2w": "pico2w"}


class ConfigInvalid(ValueError):
    """The firmware's validator refused the config (message lists every problem)."""


@lru_cache(maxsize=1)
def firmware_config() -> ModuleType:
    """``firmware/ss/config.py`` as a CPython module (not on sys.path, no side effects)."""
    spec = importlib.util.spec_from_file_location("streetsense_firmware_config", FW_CONFIG)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def firmware_version() -> str:
    m = re.search(r'^VERSION\s*=\s*"([^"]+)"', FW_INIT.read_text(), re.M)
    if not m:
        raise RuntimeError(f"no VERSION in {FW_INIT}")
    return m.group(1)


def parse_broker(url: str) -> tuple[str, int, bool]:
    """``mqtts://host[:port]`` (TLS, 8883) or ``mqtt://host[:port]`` (1883) or ``host[:port]`` (TLS).

    >>> parse_broker("mqtts://mqtt.example.org"), parse_broker("10.0.0.5:1884"), parse_broker("mqtt://h")
    (('mqtt.example.org', 8883, True), ('10.0.0.5', 1884, True), ('h', 1883, False))
    """
    if "://" not in url:
        url = "mqtts://" + url
    p = urlsplit(url)
    if p.scheme not in ("mqtt", "mqtts", "ssl", "tcp"):
        raise ValueError(f"broker must be mqtts://host[:port] or mqtt://host[:port], got {url!r}")
    if p.username or p.password:
        raise ValueError("the broker URL must not carry credentials: each node gets its own")
    if not p.hostname:
        raise ValueError(f"no host in broker URL {url!r}")
    tls = p.scheme in ("mqtts", "ssl")
    return p.hostname, p.port or (8883 if tls else 1883), tls


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["empty_mm=1200", "mic_dbfs=-26.5"]`` -> {"empty_mm": 1200, "mic_dbfs": -26.5} (JSON values).

    >>> parse_settings(["empty_mm=1200", "mic_dbfs=-26.5", "range=a02yyuw", "co2=null"])
    {'empty_mm': 1200, 'mic_dbfs': -26.5, 'range': 'a02yyuw', 'co2': None}
    """
    out: dict[str, Any] = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise ValueError(f"want KEY=VALUE, got {p!r}")
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def node_config(*, tenant: str, device_id: str, kind: str, board: str, wifi: list[tuple[str, str]],
                broker_host: str, broker_port: int, tls: bool, username: str, password: str,
                ca_path: str | None = CA_DEVICE_PATH, calibration: dict | None = None,
                cadence: dict | None = None, sensors: dict | None = None, thresholds: dict | None = None,
                fmt: str | None = None) -> dict[str, Any]:
    """The raw config (what goes into /config.json), validated by the firmware's validator."""
    fw = firmware_config()
    if kind not in fw.KINDS:
        raise ConfigInvalid(f"kind: must be one of {', '.join(fw.KINDS)}")
    raw: dict[str, Any] = {
        "tenant": tenant, "device_id": device_id, "kind": kind, "board": board,
        "wifi": [{"ssid": s, "password": p} for s, p in wifi],
        "mqtt": {"host": broker_host, "port": broker_port, "tls": tls, "username": username, "password": password},
        # explicit, so the label and the registry say what the node runs with
        "cadence": {**fw.CADENCE[kind], **(cadence or {})},
        "calibration": dict(calibration or {}),
    }
    if tls:
        if not ca_path:
            raise ConfigInvalid("mqtt.ca: a TLS node must pin the broker CA")
        raw["mqtt"]["ca"] = ca_path
    if sensors:
        raw["sensors"] = dict(sensors)
    if thresholds:
        raw["thresholds"] = dict(thresholds)
    if fmt:
        raw["format"] = fmt
    validate(raw)
    return raw


def validate(raw: dict[str, Any]) -> dict[str, Any]:
    """The complete config the node would run with, or ConfigInvalid."""
    fw = firmware_config()
    try:
        return fw.validate(copy.deepcopy(raw))
    except fw.ConfigError as e:
        raise ConfigInvalid(str(e)) from None


def with_calibration(raw: dict[str, Any], **cal: Any) -> dict[str, Any]:
    """A copy of ``raw`` with calibration values set (validated)."""
    out = copy.deepcopy(raw)
    out.setdefault("calibration", {}).update(cal)
    validate(out)
    return out


def to_bytes(raw: dict[str, Any]) -> bytes:
    return (json.dumps(raw, separators=(",", ":"), sort_keys=True) + "\n").encode()


def redacted(raw: dict[str, Any]) -> dict[str, Any]:
    """For printing: Wi-Fi and MQTT passwords replaced by ``***``."""
    out = copy.deepcopy(raw)
    for w in out.get("wifi", []):
        if w.get("password"):
            w["password"] = "***"
    if out.get("mqtt", {}).get("password"):
        out["mqtt"]["password"] = "***"
    return out
