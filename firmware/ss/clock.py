# Node time base.
#
# Internal timestamps are "device seconds": Unix seconds minus EPOCH
# (2020-01-01T00:00:00Z).  That stays a small int on 32-bit ports until 2054,
# so stamping a reading never allocates a long int; Unix time (a long int on
# an ESP32) is only formed when a pack is encoded.  Between syncs the time is
# carried by ticks_ms(), rebased at every wake and at least every hour.
#
# All firmware code sleeps and reads time through a Clock, so the tests can
# hand the node a simulated clock (tests/fakes/fakeclock.py).

import time
import asyncio

EPOCH = 1577836800          # 2020-01-01T00:00:00Z in Unix seconds
_REBASE_MS = 3600000        # ticks wrap after 2**29 ms on some ports; rebase well before


class Clock:
    def __init__(self):
        self.s = 0          # last stamp(): device seconds ...
        self.ms = 0         # ... and milliseconds within that second
        self.valid = False  # wall time known (NTP, GPS or a kept RTC)
        self._base = 0      # device ms-in-second offset at _t0 is folded into _b_ms
        self._b_ms = 0
        self._t0 = 0
        self.rtc_hook = None    # set by ss.hw: writes the hardware RTC
        self.rebase()

    # --- primitives (overridden by the simulated clock) -------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def unix(self):
        """(unix_seconds, ms) from the hardware RTC; called only when rebasing."""
        try:
            ns = time.time_ns()
            return ns // 1000000000, (ns // 1000000) % 1000
        except AttributeError:
            return int(time.time()), 0

    def set_rtc(self, unix_s):
        """Set the hardware RTC (after a GPS fix) through rtc_hook; NTP sets it itself."""
        if self.rtc_hook is not None:
            self.rtc_hook(unix_s)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    async def asleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    # --- derived -----------------------------------------------------------
    def rebase(self):
        t, ms = self.unix()
        self._t0 = self.ticks_ms()
        self._base = t - EPOCH
        self._b_ms = ms
        self.valid = self._base > 0

    def set_unix(self, unix_s, ms=0):
        """Wall time from an outside source (GPS fix): keep it and set the RTC."""
        self.set_rtc(unix_s)
        self._t0 = self.ticks_ms()
        self._base = unix_s - EPOCH
        self._b_ms = ms
        self.valid = self._base > 0

    def stamp(self):
        """Read the time into self.s / self.ms without allocating; returns self.s."""
        d = self.ticks_diff(self.ticks_ms(), self._t0)
        if d >= _REBASE_MS:
            self.rebase()
            d = self.ticks_diff(self.ticks_ms(), self._t0)
        d += self._b_ms
        self.s = self._base + d // 1000
        self.ms = d % 1000
        return self.s

    def now(self):
        """Device seconds (Unix - EPOCH)."""
        return self.stamp()
