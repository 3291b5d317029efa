# DFRobot A02YYUW waterproof ultrasonic ranger, UART (9600 8N1).
#
# The sensor streams 4-byte frames ~every 100 ms: 0xFF, distance high, low
# (mm, already temperature compensated by the sensor), checksum = low byte of
# the sum of the first three.  read_mm() collects ``pings`` good frames and
# returns their median (-1 = none).

import time
from array import array
from ss import fill


def parse(buf, off):
    """Distance (mm) of the frame at buf[off:off+4], or -1 when it is not one."""
    if buf[off] != 0xFF:
        return -1
    if (0xFF + buf[off + 1] + buf[off + 2]) & 0xFF != buf[off + 3]:
        return -1
    return buf[off + 1] << 8 | buf[off + 2]


class A02YYUW:
    def __init__(self, uart, pings=5, sleep_ms=None):
        self.uart = uart
        self.pings = pings
        self._sleep = sleep_ms or time.sleep_ms
        self._rx = bytearray(64)
        self._buf = array("i", [0] * pings)
        self.errors = 0

    def read_mm(self, temp_c100=2000):
        rx = self._rx
        buf = self._buf
        n = 0
        tries = 0
        while n < self.pings and tries < self.pings * 3:
            tries += 1
            self._sleep(110)
            k = self.uart.readinto(rx) or 0
            i = 0
            while i + 4 <= k and n < self.pings:
                d = parse(rx, i)
                if d < 0:
                    i += 1                   # resynchronise on the next 0xFF
                    continue
                buf[n] = d
                n += 1
                i += 4
        if n == 0:
            self.errors += 1
            return -1
        return fill.median(buf, n)
