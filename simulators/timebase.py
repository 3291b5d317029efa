"""Simulated time: UTC milliseconds, local clock and sun times for the town.

All simulator times are integer UTC milliseconds.  Behaviour (rounds, rush
hours, parties) follows the town's *local* time, including daylight saving.

>>> clk = LocalClock("Europe/London")
>>> t = parse_start("2026-07-01")
>>> clk.offset_s(t)                       # BST
3600
>>> clk.hour(t), clk.weekday(t)           # 01:00 local on a Wednesday
(1, 2)
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["DAY_MS", "HOUR_MS", "MIN_MS", "LocalClock", "parse_start", "default_start", "iso", "sun_times_h"]

MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def parse_start(s: str | int | float | datetime) -> int:
    """ISO date/time (naive = UTC), datetime or epoch ms -> UTC ms.

    >>> parse_start("2026-01-01T00:00:00Z")
    1767225600000
    """
    if isinstance(s, (int, float)):
        return int(s)
    if isinstance(s, datetime):
        dt = s
    else:
        txt = s.strip().replace("Z", "+00:00")
        dt = datetime.fromisoformat(txt)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def default_start(days: float, speed: float, now_ms: int | None = None) -> int:
    """Start time when none is given.

    Real time (``speed == 1``) starts now.  Accelerated runs start at a UTC
    midnight ``days`` before today, so every simulated reading lies in the
    past when it is published (the backend rejects readings from the future).
    """
    now = now_ms if now_ms is not None else int(datetime.now(timezone.utc).timestamp() * 1000)
    if speed == 1:
        return now - now % 1000
    midnight = now - now % DAY_MS
    return midnight - int(math.ceil(days)) * DAY_MS


def iso(ms: int | None) -> str | None:
    """UTC ms -> ISO 8601 with millisecond precision.

    >>> iso(1767225600500)
    '2026-01-01T00:00:00.500Z'
    """
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class LocalClock:
    """Local time of the town (an IANA zone or a fixed ``UTC+h`` offset)."""

    def __init__(self, tz: str = "Europe/London") -> None:
        self.tz_name = tz
        self._fixed: int | None = None
        if tz.upper().startswith("UTC") and len(tz) > 3:
            self._fixed = int(round(float(tz[3:]) * 3600))
        elif tz.upper() == "UTC":
            self._fixed = 0
        self._zone = None if self._fixed is not None else ZoneInfo(tz)

    def offset_s(self, t_ms: int) -> int:
        """UTC offset in seconds at ``t_ms`` (cached per UTC hour)."""
        if self._fixed is not None:
            return self._fixed
        return self._offset_hour(int(t_ms) // HOUR_MS)

    @lru_cache(maxsize=4096)
    def _offset_hour(self, h: int) -> int:
        dt = datetime.fromtimestamp(h * 3600, tz=timezone.utc).astimezone(self._zone)
        off = dt.utcoffset() or timedelta(0)
        return int(off.total_seconds())

    def local_ms(self, t_ms: int) -> int:
        return int(t_ms) + self.offset_s(t_ms) * 1000

    def hour(self, t_ms: int) -> int:
        return (self.local_ms(t_ms) // HOUR_MS) % 24

    def hour_frac(self, t_ms: int) -> float:
        return (self.local_ms(t_ms) % DAY_MS) / HOUR_MS

    def weekday(self, t_ms: int) -> int:
        """Monday = 0 (1970-01-01 was a Thursday)."""
        return (self.local_ms(t_ms) // DAY_MS + 3) % 7

    def local_day(self, t_ms: int) -> int:
        """Days since 1970-01-01 in local time."""
        return self.local_ms(t_ms) // DAY_MS

    def day_start_utc(self, local_day: int) -> int:
        """UTC ms of local midnight starting ``local_day``."""
        guess = local_day * DAY_MS
        return guess - self.offset_s(guess) * 1000

    def at_local(self, local_day: int, hour: float) -> int:
        """UTC ms of ``hour`` (local, may be fractional) on ``local_day``."""
        t = self.day_start_utc(local_day) + int(hour * HOUR_MS)
        return t

    def day_of_year(self, t_ms: int) -> int:
        return datetime.fromtimestamp(self.local_ms(t_ms) / 1000, tz=timezone.utc).timetuple().tm_yday

    # vectorised helpers --------------------------------------------------
    def hours_array(self, t_ms: np.ndarray, ref_ms: int) -> np.ndarray:
        """Local fractional hour for an array of times near ``ref_ms`` (one offset)."""
        off = self.offset_s(ref_ms) * 1000
        return ((t_ms + off) % DAY_MS) / HOUR_MS

    def weekday_array(self, t_ms: np.ndarray, ref_ms: int) -> np.ndarray:
        off = self.offset_s(ref_ms) * 1000
        return ((t_ms + off) // DAY_MS + 3) % 7


def sun_times_h(lat: float, day_of_year: int) -> tuple[float, float]:
    """Approximate local *solar* sunrise and sunset hours (no DST, no equation of time).

    >>> r, s = sun_times_h(52.95, 172)     # midsummer, English Midlands
    >>> 3.5 < r < 4.2 and 19.8 < s < 20.5
    True
    """
    decl = -23.44 * math.cos(2 * math.pi * (day_of_year + 10) / 365.0)
    x = -math.tan(math.radians(lat)) * math.tan(math.radians(decl))
    x = min(1.0, max(-1.0, x))
    half = math.degrees(math.acos(x)) / 15.0
    return 12.0 - half, 12.0 + half
