# Nova Fitness SDS011 particulate sensor (UART 9600 8N1), query mode.
#
# Data frame (10 bytes): AA C0 pm25L pm25H pm10L pm10H id1 id2 checksum AB,
# checksum = low byte of the sum of bytes 2..7, values in 0.1 ug/m3.
# Commands are 19 bytes: AA B4 cmd data[12] FF FF checksum AB.

import time
from micropython import const

FRAME = const(10)


def command(cmd, d0=0, d1=0):
    b = bytearray(19)
    b[0], b[1], b[2], b[3], b[4] = 0xAA, 0xB4, cmd, d0, d1
    b[15], b[16] = 0xFF, 0xFF
    b[17] = sum(b[2:17]) & 0xFF
    b[18] = 0xAB
    return b


CMD_QUERY_MODE = command(2, 1, 1)       # report mode: set, query
CMD_QUERY = command(4)
CMD_SLEEP = command(6, 1, 0)
CMD_WAKE = command(6, 1, 1)


def parse(buf, off, out):
    """PM2.5 and PM10 in 0.1 ug/m3 into out[0], out[1]; True if the frame is good."""
    if len(buf) - off < FRAME or buf[off] != 0xAA or buf[off + 1] != 0xC0 or buf[off + 9] != 0xAB:
        return False
    s = 0
    for i in range(off + 2, off + 8):
        s += buf[i]
    if s & 0xFF != buf[off + 8]:
        return False
    out[0] = buf[off + 2] | buf[off + 3] << 8
    out[1] = buf[off + 4] | buf[off + 5] << 8
    return True


class SDS011:
    def __init__(self, uart, warmup_ms=30000, sleep_ms=None):
        self.uart = uart
        self.warmup_ms = warmup_ms
        self._sleep = sleep_ms or time.sleep_ms
        self._rx = bytearray(3 * FRAME)
        self.pm10x = [0, 0]            # pm2.5, pm10 in 0.1 ug/m3
        self.pm = [0, 0, 0]            # pm1 (not measured: 0), pm2.5, pm10 in ug/m3
        self.has_pm1 = False
        self.errors = 0
        uart.write(CMD_QUERY_MODE)

    def wake(self):
        self.uart.write(CMD_WAKE)

    def sleep(self):
        self.uart.write(CMD_SLEEP)

    def read(self, tries=3):
        rx = self._rx
        for _ in range(tries):
            while self.uart.any():
                self.uart.readinto(rx)
            self.uart.write(CMD_QUERY)
            self._sleep(200)
            n = self.uart.readinto(rx) or 0
            for off in range(0, n - FRAME + 1):
                if parse(rx, off, self.pm10x):
                    self.pm[1] = self.pm10x[0]
                    self.pm[2] = self.pm10x[1]
                    return True
        self.errors += 1
        return False
