"""What the engine consumes: readings, device status, registry rows, clock ticks, crew reports, verdicts.

All times are UTC milliseconds.  A plain 6-tuple ``(tenant, device_id, kind,
metric, time_ms, value)`` is accepted wherever a :class:`Reading` is.

Registry rows (:class:`DeviceInfo`) carry the asset as a dict.  For a bin the
keys follow ``simulators.fleet.BinAsset`` and the schedule: ``asset_id``,
``bin_kind`` (household|street), ``capacity_l``, ``depth_m``,
``frequency_weeks`` (1|2), ``round_days`` (Monday = 0), ``week_parity``
(fortnightly bins are due in weeks with ``((local_day + 3) // 7) % 2 ==
parity``, ``local_day`` = days since 1970-01-01 in local time, i.e. weeks
counted from Monday 1969-12-29), ``round_id``, ``slot_h``, ``edge_id``
(street segment), ``household_id``, ``expected_fill_per_day`` and the
round's window ``window_start_h`` / ``window_end_h`` (local hours).  Air and
noise sites carry ``site_type``; road vehicles carry ``vehicle_type``.

>>> r = as_reading(("demo-town", "bin-000001", "bin_fill", "fill", 1767225600000, 0.5))
>>> r.metric, r.value
('fill', 0.5)
>>> Status("t", "bin-1", 1767225600000, "sleeping", 1767247200000).next_wake_ms
1767247200000
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "Reading",
    "Status",
    "DeviceInfo",
    "Tick",
    "CrewReport",
    "Verdict",
    "as_reading",
    "status_from_payload",
    "CREW_OUTCOMES",
]


class Reading(NamedTuple):
    tenant: str
    device_id: str
    kind: str  #: bin_fill | air | noise | road
    metric: str
    time_ms: int
    value: float


class Status(NamedTuple):
    """A device status message (retained; also the MQTT last will)."""

    tenant: str
    device_id: str
    time_ms: int  #: the device's own timestamp (or receive time)
    state: str  #: online | sleeping | offline
    next_wake_ms: int = 0  #: the device's announced next wake (0 = always connected / unknown)
    bat_v: float | None = None
    rssi: float | None = None
    buffered: int = 0
    errors: int = 0
    received_ms: int | None = None


class DeviceInfo(NamedTuple):
    """Registry row: device -> asset (and its schedule)."""

    tenant: str
    device_id: str
    kind: str
    lat: float | None
    lon: float | None
    asset: dict[str, Any]


class Tick(NamedTuple):
    """Clock tick: lets silence and missed-window judgements happen without new data."""

    now_ms: int


#: crew report outcomes
CREW_OUTCOMES = ("collected", "not_out", "blocked")


class CrewReport(NamedTuple):
    """A crew's report for one bin (from the in-cab app): collected / not_out / blocked."""

    tenant: str
    asset_id: str
    time_ms: int
    outcome: str
    note: str = ""


class Verdict(NamedTuple):
    """An operator's verdict on an alert: ``true_positive`` True or False."""

    tenant: str
    alert_kind: str
    entity: str
    true_positive: bool
    time_ms: int | None = None


def as_reading(ev: Any) -> Reading:
    if isinstance(ev, Reading):
        return ev
    t, d, k, m, ts, v = ev
    return Reading(t, d, k, m, int(ts), float(v))


def status_from_payload(
    tenant: str, device_id: str, payload: bytes, received_ms: int | None = None
) -> Status:
    """Parse a contract v1 status payload (``contract.v1.encode_status``) into a :class:`Status`.

    >>> from contract import v1
    >>> p = v1.encode_status("sleeping", "0.3.0", 1767225600, 1767247200, 3612, -67, 0, 0)
    >>> s = status_from_payload("t", "bin-000001", p)
    >>> s.state, s.next_wake_ms, s.bat_v
    ('sleeping', 1767247200000, 3.612)
    """
    import json

    d = json.loads(payload)
    nw = int(d.get("next_wake") or 0)
    t = int(d.get("t") or 0) * 1000
    return Status(
        tenant,
        device_id,
        t if t else int(received_ms or 0),
        str(d.get("state", "online")),
        nw * 1000 if nw else 0,
        d.get("bat_v"),
        d.get("rssi"),
        int(d.get("buffered") or 0),
        int(d.get("errors") or 0),
        received_ms,
    )
