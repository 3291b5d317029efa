# State kept across deep sleep: counters, timers and staged readings.
#
# On an ESP32 this lives in RTC slow memory (machine.RTC().memory(), 2 KB,
# survives deep sleep but not a power cut); on a Pico it is a RAM buffer that
# lightsleep keeps.  The backing store is passed in (``load()`` -> bytes or
# None, ``save(buf, n)``), so the module is pure.
#
# "Sample often, transmit rarely": readings are first staged here (up to
# ``stage`` records) and written to the flash ring in one append when the
# stage is full, before a transmission, or at once when a threshold fires.
# stage = 0 writes every reading straight to flash.

import struct
from array import array
from micropython import const
from ss.ring import REC, pack

# slots of the int32 array ``v``
BOOTS = const(0)        # wakes since power-on
LAST_SAMPLE = const(1)  # device s of the last sample slot taken
LAST_TX = const(2)      # device s of the last successful transmission
LAST_HEALTH = const(3)  # device s of the last health records
LAST_SYNC = const(4)    # device s of the last NTP/GPS sync
RETRY_AT = const(5)     # no transmission attempt before this (backoff)
FAILS = const(6)        # consecutive failed transmissions
ERRORS = const(7)       # all errors counted since power-on (status "errors")
E_SENSOR = const(8)
E_WIFI = const(9)
E_MQTT = const(10)
NOTIME = const(11)      # readings dropped because the wall time was unknown
PREV_TEMP = const(12)   # centi-degC of the previous sample (spike detection)
URGENT = const(13)      # a threshold fired: transmit at the next chance
RSSI = const(14)        # last Wi-Fi RSSI (dBm)
BAT_MV = const(15)      # last battery reading
ALARMS = const(16)      # threshold flags that are currently raised (edge detection)
POWER_ON = const(17)    # device s of power-on (first valid time), for uptime
NSLOTS = const(20)

_MAGIC = const(0x53535431)   # "SST1"
_HDR = const(8)              # magic u32, n staged u16, check u16


class State:
    def __init__(self, store, stage_max=24):
        self.store = store
        self.v = array("i", [0] * NSLOTS)
        self.stage_max = stage_max
        self.n = 0                      # staged records
        self.cold = True                # no valid state found (power-on)
        self.buf = bytearray(_HDR + NSLOTS * 4 + max(stage_max, 1) * REC)
        self._load()

    def _sum(self, end):
        b = self.buf
        s = 0
        for i in range(_HDR, end):
            s += b[i]
        return s & 0xFFFF

    def _load(self):
        data = self.store.load()
        if not data or len(data) < _HDR + NSLOTS * 4:
            return
        magic, n, chk = struct.unpack_from("<IHH", data, 0)
        end = _HDR + NSLOTS * 4 + n * REC
        if magic != _MAGIC or n > self.stage_max or len(data) < end:
            return
        self.buf[:end] = data[:end]
        if self._sum(end) != chk:
            return
        for i in range(NSLOTS):
            self.v[i] = struct.unpack_from("<i", self.buf, _HDR + 4 * i)[0]
        self.n = n
        self.cold = False

    def save(self):
        b = self.buf
        for i in range(NSLOTS):
            struct.pack_into("<i", b, _HDR + 4 * i, self.v[i])
        end = _HDR + NSLOTS * 4 + self.n * REC
        struct.pack_into("<IHH", b, 0, _MAGIC, self.n, self._sum(end))
        self.store.save(b, end)

    def alarm(self, bit, on):
        """Track a threshold; True only when it is newly crossed (re-arms below)."""
        a = self.v[ALARMS]
        if on:
            self.v[ALARMS] = a | bit
            return not a & bit
        self.v[ALARMS] = a & ~bit
        return False

    def error(self, slot):
        self.v[slot] += 1
        self.v[ERRORS] += 1

    # --- staging -------------------------------------------------------------
    def add(self, ring, mid, q, t, ms=0):
        """Stage one reading; spills to the ring when the stage is full."""
        if self.stage_max == 0:
            ring.append(mid, q, t, ms)
            return
        if self.n >= self.stage_max:
            self.flush(ring)
        pack(self.buf, _HDR + NSLOTS * 4 + self.n * REC, mid, q, t, ms)
        self.n += 1

    def flush(self, ring):
        if self.n:
            off = _HDR + NSLOTS * 4
            ring.write(memoryview(self.buf)[off:off + self.n * REC], self.n)
            self.n = 0
            self.save()     # a crash before this re-stages, never loses
