"""Gateway configuration: ``STREETSENSE_GATEWAY_*`` environment variables over defaults.

One flat settings class; the service and the CLI read nothing else.

>>> s = GatewaySettings(_env_file=None, tenant="leeds", gateway_id="gw-1", devices="bin-1, bin-2")
>>> s.devices, s.queue_file.name, s.local_service_url
(['bin-1', 'bin-2'], 'queue.sqlite3', 'mqtt://127.0.0.1:11883')
>>> GatewaySettings(_env_file=None, tenant="leeds", gateway_id="gw-1", max_bytes=10**7).refuse_at_bytes
9000000
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_gateway_id() -> str:
    """The host name folded into a contract identifier (``[a-z0-9-]``, <= 64)."""
    s = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:64]
    return s or "gateway"


def default_sntp_port() -> int:
    """123 when we may bind it (root), else 1123."""
    return 123 if os.geteuid() == 0 else 1123


class GatewaySettings(BaseSettings):
    """Everything the gateway needs; every field is ``STREETSENSE_GATEWAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="STREETSENSE_GATEWAY_", extra="ignore")

    #: Tenant whose device topics this gateway carries (``ss/v1/<tenant>/…``).
    tenant: str = "demo"
    #: This gateway's id (contract identifier); also its MQTT client ids and health topic.
    gateway_id: str = Field(default_factory=_default_gateway_id)
    #: Central broker, ``mqtt://user:pass@host:1883`` or ``mqtts://…``.
    central_url: str = "mqtt://127.0.0.1:1883"

    #: Where the queue, the local broker's files and health.json live.
    data_dir: Path = Path("var/gateway")
    #: SQLite queue file (default ``<data_dir>/queue.sqlite3``).
    queue_path: Path | None = None
    #: Bound on the queue's live data on disk (bytes of SQLite pages in use, >= 1 MiB).
    max_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    #: Close the device listener (refuse devices) at this fraction of max_bytes ...
    refuse_fraction: float = 0.9
    #: ... and open it again once the queue is back under this fraction.
    resume_fraction: float = 0.7
    #: Backlog drain rate in messages per second (0 = as fast as the central broker acks).
    drain_rate: float = 500.0
    #: QoS 1 messages in flight to the central broker (bounds duplicates after a crash).
    inflight: int = 200
    #: Per-device rate limit: readings per second of device time (0 = off), and bucket size.
    rate_readings_per_s: float = 20.0
    rate_burst: int = 2000
    #: Intake group commit: commit after this many messages or this many ms, whichever first.
    commit_max: int = 500
    commit_ms: float = 10.0
    #: SQLite ``synchronous`` for appends (FULL: acked messages survive a power cut).
    synchronous: str = "FULL"

    #: Run the local Mosquitto ourselves (False: use ``local_url`` as is, no refusal).
    manage_broker: bool = True
    #: Device listener of the local broker.
    local_bind: str = "0.0.0.0"
    local_port: int = 1883
    #: Loopback listener the gateway service itself uses (never exposed to devices).
    local_service_port: int = 11883
    #: An existing local broker when ``manage_broker`` is False.
    local_url: str | None = None
    #: Per-device credentials and ACL (from the identity module); devices anonymous when unset.
    password_file: Path | None = None
    acl_file: Path | None = None
    #: MQTT 5 Receive Maximum of the gateway's local session (unacked messages in hand).
    receive_maximum: int = 1000
    #: Leave the local broker running when the gateway stops (devices keep publishing into it).
    keep_broker: bool = False

    #: Devices behind this gateway known in advance (comma separated); others are learnt.
    devices: Annotated[list[str], NoDecode] = []
    #: Relay cfg/cmd for every device of the tenant (``+``) instead of per known device.
    relay_all: bool = False

    #: SNTP server (RFC 4330): port (default 123 as root, else 1123), bind address; 0 = off.
    sntp_port: int = Field(default_factory=default_sntp_port)
    sntp_bind: str = "0.0.0.0"
    #: Claim a synchronised clock even when the kernel does not say so (e.g. GPS/RTC set).
    sntp_assume_synced: bool = False

    #: Health: retained JSON on the central broker every this many seconds.
    health_interval_s: float = 10.0
    #: Prometheus metrics port (0 = off).
    metrics_port: int = 0

    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("devices", mode="before")
    @classmethod
    def _split_devices(cls, v: object) -> object:
        if isinstance(v, str):
            return [d.strip() for d in v.split(",") if d.strip()]
        return v

    @field_validator("synchronous")
    @classmethod
    def _sync(cls, v: str) -> str:
        v = v.upper()
        if v not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        return v

    @property
    def queue_file(self) -> Path:
        return self.queue_path or self.data_dir / "queue.sqlite3"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "mosquitto"

    @property
    def local_service_url(self) -> str:
        return self.local_url or f"mqtt://127.0.0.1:{self.local_service_port}"

    @property
    def refuse_at_bytes(self) -> int:
        return int(self.max_bytes * self.refuse_fraction)

    @property
    def resume_at_bytes(self) -> int:
        return int(self.max_bytes * self.resume_fraction)
