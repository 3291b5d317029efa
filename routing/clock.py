"""The time axis of one plan day: computed in real (UTC) seconds, shown in the council's local time.

A plan is for one local calendar ``day`` in a named zone (``Europe/London``).
The solver's clock is the number of *elapsed* seconds since that day's local
midnight, so travel and service times add up on every day, including the two
days a year the clocks change.  Wall-clock inputs (a shift from 06:00, no
high-street lifts after 09:30) are converted with :meth:`DayClock.at_local_h`;
outputs are shown to the crew as local ``HH:MM`` (:meth:`DayClock.hhmm`) and
stored as UTC instants (:meth:`DayClock.utc_iso`).

On 2026-03-29 the clocks in London go forward at 01:00 UTC, so 06:00 local is
five hours after local midnight:

>>> c = DayClock(Date(2026, 3, 29), "Europe/London")
>>> c.at_local_h(6.0) / 3600, c.hhmm(5 * 3600), c.utc_iso(5 * 3600)
(5.0, '06:00', '2026-03-29T05:00:00Z')
>>> c.length_s / 3600
23.0
>>> c.seconds(datetime(2026, 3, 29, 11, 0))                # a naive time is local wall-clock time
36000
>>> autumn = DayClock(Date(2026, 10, 25), "Europe/London")  # back at 01:00 UTC: 06:00 local is 7 h in
>>> autumn.at_local_h(6.0) / 3600, autumn.hhmm(7 * 3600)
(7.0, '06:00')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date as Date, datetime, time as Time, timedelta, timezone
from functools import cached_property
from zoneinfo import ZoneInfo

__all__ = ["DayClock"]


@dataclass(frozen=True)
class DayClock:
    """Local calendar ``day`` in zone ``tz``; times are seconds elapsed since its local midnight."""

    day: Date
    tz: str = "Europe/London"

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @cached_property
    def origin(self) -> datetime:
        """Local midnight of ``day`` as a UTC instant."""
        return datetime.combine(self.day, Time(0), tzinfo=self.zone).astimezone(timezone.utc)

    @property
    def length_s(self) -> int:
        """Seconds in this local day (82,800 / 86,400 / 90,000)."""
        nxt = datetime.combine(self.day + timedelta(days=1), Time(0), tzinfo=self.zone).astimezone(timezone.utc)
        return int((nxt - self.origin).total_seconds())

    def at_local_h(self, h: float) -> int:
        """Elapsed seconds at local wall-clock hour ``h`` of the day (``h`` may pass 24).  A wall time the
        clocks skip (01:30 on the spring-forward day) is read with the offset before the change."""
        wall = datetime.combine(self.day, Time(0)) + timedelta(seconds=round(h * 3600))
        return int((wall.replace(tzinfo=self.zone).astimezone(timezone.utc) - self.origin).total_seconds())

    def utc(self, s: float) -> datetime:
        return self.origin + timedelta(seconds=int(round(s)))

    def utc_iso(self, s: float) -> str:
        return self.utc(s).strftime("%Y-%m-%dT%H:%M:%SZ")

    def local(self, s: float) -> datetime:
        return self.utc(s).astimezone(self.zone)

    def hhmm(self, s: float) -> str:
        """Local wall-clock ``HH:MM`` (what the crew sees)."""
        return self.local(s).strftime("%H:%M")

    def seconds(self, t: datetime) -> int:
        """Elapsed seconds of ``t`` on this day; a naive ``t`` is local wall-clock time."""
        if t.tzinfo is None:
            t = t.replace(tzinfo=self.zone)
        return int((t - self.origin).total_seconds())
