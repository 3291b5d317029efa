"""Ground truth: labelled events with times and entities, as JSONL and a database table.

Every injected or emergent behaviour the models should find (a missed
collection, a bin fire, a pothole, a noise party, a dead battery …) is a
:class:`TruthEvent`.  ``entity`` is what the event is about: the bin's
``asset_id`` for bin behaviour, the ``device_id`` for device and sensor
faults and for site events (air, noise), a feature id ("pothole-0007") for
road features, or the tenant for town-wide episodes; ``details`` always
carries ``device_id`` / ``asset_id`` / ``lat`` / ``lon`` where they apply.

>>> ev = TruthEvent("fire", "hb-000012", "demo-town", 1767225600000, 1767232800000,
...                 {"device_id": "bin-000012", "peak_c": 96.5}, scenario="town")
>>> line = to_json_line(ev)
>>> line.startswith('{"scenario":"town","kind":"fire","entity":"hb-000012"')
True
>>> from_json_line(line) == ev
True
"""

from __future__ import annotations

import io  # noqa: F401  (used by the doctest)
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from simulators.timebase import iso

__all__ = ["TruthEvent", "TruthWriter", "TRUTH_DDL", "TRUTH_KINDS", "to_json_line", "from_json_line",
           "read_jsonl", "write_jsonl", "insert_truth"]

#: Event kinds the simulators emit (see the report / README for meanings).
TRUTH_KINDS = (
    # bins: service and household behaviour
    "collection", "missed_collection", "not_put_out", "not_put_out_2", "overflow",
    # bins: incidents
    "fire", "lid_open", "knocked_over",
    # sensor and device faults (every kind)
    "sensor_stuck", "sensor_noisy", "sensor_drift", "sensor_failure", "dead_battery",
    "offline_burst", "clock_drift",
    # delivery faults (per message)
    "duplicate", "out_of_order", "malformed",
    # air / noise
    "air_episode", "noise_party", "construction_out_of_hours",
    # road features
    "pothole", "casting", "speed_hump",
)

#: The table (the lead adds it to the migrations; tests create it themselves).
TRUTH_DDL = """
CREATE TABLE IF NOT EXISTS truth_events (
    id       bigserial PRIMARY KEY,
    scenario text        NOT NULL,
    kind     text        NOT NULL,
    entity   text        NOT NULL,
    tenant   text        NOT NULL,
    start_ts timestamptz NOT NULL,
    end_ts   timestamptz,
    details  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS truth_events_kind_start ON truth_events (tenant, kind, start_ts);
CREATE INDEX IF NOT EXISTS truth_events_entity_start ON truth_events (tenant, entity, start_ts);
"""


@dataclass(slots=True)
class TruthEvent:
    """One labelled event; times are UTC ms, ``end_ms`` None for instants / still open."""

    kind: str
    entity: str
    tenant: str
    start_ms: int
    end_ms: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    scenario: str = ""
    #: simulated time at which the simulator knew the event (ordering only; not stored)
    at_ms: int = field(default=0, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "kind": self.kind, "entity": self.entity, "tenant": self.tenant,
                "start": iso(self.start_ms), "end": iso(self.end_ms), "start_ms": self.start_ms,
                "end_ms": self.end_ms, "details": self.details}


def to_json_line(ev: TruthEvent) -> str:
    return json.dumps(ev.to_dict(), separators=(",", ":"), sort_keys=False, default=_json_default)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
    except ImportError:   # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def from_json_line(line: str) -> TruthEvent:
    d = json.loads(line)
    return TruthEvent(d["kind"], d["entity"], d["tenant"], int(d["start_ms"]),
                      None if d.get("end_ms") is None else int(d["end_ms"]), d.get("details") or {},
                      d.get("scenario", ""))


def read_jsonl(path: str | Path) -> list[TruthEvent]:
    """All events of a JSONL truth file."""
    with open(path, encoding="utf-8") as f:
        return [from_json_line(ln) for ln in f if ln.strip()]


def write_jsonl(path: str | Path, events: Iterable[TruthEvent]) -> int:
    """Write events to ``path``; returns the count."""
    with TruthWriter(path) as w:
        for ev in events:
            w.write(ev)
        return w.count


class TruthWriter:
    """Streaming JSONL writer (one event per line, in emission order).

    >>> buf = io.StringIO()
    >>> w = TruthWriter(buf)
    >>> w.write(TruthEvent("pothole", "pothole-0001", "t", 0, None, {"lat": 52.9}))
    >>> w.count, buf.getvalue().count("\\n")
    (1, 1)
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, (str, Path)):
            self._f: IO[str] = open(target, "w", encoding="utf-8")
            self._own = True
        else:
            self._f = target
            self._own = False
        self.count = 0

    def write(self, ev: TruthEvent) -> None:
        self._f.write(to_json_line(ev))
        self._f.write("\n")
        self.count += 1

    def write_many(self, events: Iterable[TruthEvent]) -> None:
        for ev in events:
            self.write(ev)

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> "TruthWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def insert_truth(conn: Any, events: Iterable[TruthEvent], scenario: str | None = None,
                 batch: int = 5000) -> int:
    """Insert events into ``truth_events`` with parameterised SQL (psycopg 3).

    ``scenario`` overrides each event's own scenario name.  Runs in the
    caller's transaction (commit is the caller's); returns the row count.
    """
    from psycopg.types.json import Jsonb

    sql = ("INSERT INTO truth_events (scenario, kind, entity, tenant, start_ts, end_ts, details) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s)")
    n = 0
    rows: list[tuple] = []
    with conn.cursor() as cur:
        for ev in events:
            rows.append((scenario if scenario is not None else ev.scenario, ev.kind, ev.entity, ev.tenant,
                         _ts(ev.start_ms), _ts(ev.end_ms),
                         Jsonb(ev.details, dumps=lambda o: json.dumps(o, default=_json_default))))
            if len(rows) >= batch:
                cur.executemany(sql, rows)
                n += len(rows)
                rows = []
        if rows:
            cur.executemany(sql, rows)
            n += len(rows)
    return n


def iter_jsonl(f: IO[str]) -> Iterator[TruthEvent]:
    for ln in f:
        if ln.strip():
            yield from_json_line(ln)

