# Wi-Fi station bring-up with backoff, RSSI, and NTP time sync.

import network
from ss.sched import Backoff

_POLL_MS = 100


class WiFi:
    def __init__(self, nets, clock, seed=0, feed=None):
        self.nets = nets
        self.clock = clock
        self.feed = feed or (lambda: None)
        self.backoff = Backoff(500, 8000, seed)
        self.wlan = None
        self.fails = 0

    def _wlan(self):
        if self.wlan is None:
            self.wlan = network.WLAN(network.STA_IF)
        return self.wlan

    def connected(self):
        return self.wlan is not None and self.wlan.isconnected()

    async def up(self, timeout_ms=20000):
        """Join the first configured network that answers; False after timeout_ms."""
        w = self._wlan()
        if w.isconnected():
            return True
        w.active(True)
        clock = self.clock
        t0 = clock.ticks_ms()
        self.backoff.reset()
        i = 0
        while clock.ticks_diff(clock.ticks_ms(), t0) < timeout_ms:
            ssid, pw = self.nets[i % len(self.nets)]
            i += 1
            try:
                w.connect(ssid, pw)
            except OSError:
                pass
            t1 = clock.ticks_ms()
            while clock.ticks_diff(clock.ticks_ms(), t1) < 5000:
                if w.isconnected():
                    self.backoff.reset()
                    return True
                self.feed()
                await clock.asleep_ms(_POLL_MS)
            try:
                w.disconnect()
            except OSError:
                pass
            await clock.asleep_ms(self.backoff.next_ms())
        self.fails += 1
        return False

    def rssi(self):
        try:
            return self._wlan().status("rssi")
        except (OSError, ValueError, TypeError):
            return 0

    def down(self):
        if self.wlan is not None:
            try:
                self.wlan.disconnect()
            except OSError:
                pass
            self.wlan.active(False)


def ntp_sync(host, clock):
    """Set the RTC from NTP and rebase the clock; False on failure."""
    import ntptime
    ntptime.host = host
    try:
        ntptime.settime()
    except (OSError, OverflowError, IndexError):
        return False
    clock.rebase()
    return clock.valid
