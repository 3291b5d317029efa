"""Device lookup for the ingest worker: (tenant, device id) -> (pk, kind, status).

Loaded whole at start and reloaded on a miss, at most once per ``min_reload_s``,
so a flood from unknown devices cannot hammer the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import NamedTuple

import psycopg


class DeviceInfo(NamedTuple):
    pk: int
    kind: str
    status: str


class DeviceRegistry:
    def __init__(self, connect: Callable[[], AbstractContextManager[psycopg.Connection]],
                 min_reload_s: float = 1.0) -> None:
        self._connect = connect
        self._min_reload_s = min_reload_s
        self._devices: dict[tuple[str, str], DeviceInfo] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        with self._connect() as conn, conn.transaction():
            rows = conn.execute("SELECT tenant, device_id, id, kind, status FROM devices").fetchall()
        self._devices = {(t, d): DeviceInfo(pk, k, s) for t, d, pk, k, s in rows}
        self._loaded_at = time.monotonic()

    def get(self, tenant: str, device_id: str) -> DeviceInfo | None:
        info = self._devices.get((tenant, device_id))
        if info is None and time.monotonic() - self._loaded_at >= self._min_reload_s:
            with self._lock:
                if time.monotonic() - self._loaded_at >= self._min_reload_s:
                    self.reload()
            info = self._devices.get((tenant, device_id))
        return info

    def __len__(self) -> int:
        return len(self._devices)
