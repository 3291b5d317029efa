"""Local time for a tenant (IANA zone, daylight saving included), cached per UTC hour.

>>> lt = LocalTime("Europe/London")
>>> t = 1782864000000                 # 2026-07-01T00:00Z, BST
>>> lt.hour(t), lt.weekday(t)         # 01:00 local on a Wednesday
(1, 2)
>>> lt.at_local(lt.local_day(t), 7.5) - t     # 07:30 BST = 06:30Z
23400000
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

__all__ = ["LocalTime", "MIN_MS", "HOUR_MS", "DAY_MS", "WEEK_MS"]

MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


class LocalTime:
    """Local clock of one zone; picklable (the cache is rebuilt after loading)."""

    def __init__(self, tz: str = "Europe/London") -> None:
        self.tz = tz
        self._cache: dict[int, int] = {}
        self._zone = None

    def __getstate__(self) -> dict:
        return {"tz": self.tz}

    def __setstate__(self, st: dict) -> None:
        self.tz = st["tz"]
        self._cache = {}
        self._zone = None

    def offset_ms(self, t_ms: int) -> int:
        h = t_ms // HOUR_MS
        off = self._cache.get(h)
        if off is None:
            if self.tz.upper() == "UTC":
                off = 0
            else:
                if self._zone is None:
                    self._zone = ZoneInfo(self.tz)
                dt = datetime.fromtimestamp(h * 3600, tz=timezone.utc).astimezone(self._zone)
                off = int((dt.utcoffset() or timedelta(0)).total_seconds() * 1000)
            if len(self._cache) > 20000:
                self._cache.clear()
            self._cache[h] = off
        return off

    def local_ms(self, t_ms: int) -> int:
        return t_ms + self.offset_ms(t_ms)

    def local_day(self, t_ms: int) -> int:
        """Days since 1970-01-01 in local time."""
        return self.local_ms(t_ms) // DAY_MS

    def hour(self, t_ms: int) -> int:
        return (self.local_ms(t_ms) // HOUR_MS) % 24

    def hour_frac(self, t_ms: int) -> float:
        return (self.local_ms(t_ms) % DAY_MS) / HOUR_MS

    def weekday(self, t_ms: int) -> int:
        """Monday = 0."""
        return (self.local_ms(t_ms) // DAY_MS + 3) % 7

    def hour_of_week(self, t_ms: int) -> int:
        loc = self.local_ms(t_ms)
        return ((loc // DAY_MS + 3) % 7) * 24 + (loc // HOUR_MS) % 24

    def day_start(self, local_day: int) -> int:
        """UTC ms of local midnight starting ``local_day``."""
        guess = local_day * DAY_MS
        return guess - self.offset_ms(guess)

    def at_local(self, local_day: int, hour: float) -> int:
        """UTC ms of local ``hour`` (fractional) on ``local_day``."""
        return self.day_start(local_day) + int(hour * HOUR_MS)

    @staticmethod
    def week_index(local_day: int) -> int:
        """Monday-start week number (the registry's fortnightly parity convention)."""
        return (local_day + 3) // 7
