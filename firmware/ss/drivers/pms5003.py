# Plantower PMS5003 particulate sensor (UART 9600 8N1), passive mode.
#
# Frame (32 bytes): 0x42 0x4D, length 28 (u16 BE), 13 data words (u16 BE),
# checksum = u16 BE sum of the 30 bytes before it.  Words 3..5 are PM1.0 /
# PM2.5 / PM10 in ug/m3 under atmospheric conditions (words 0..2 are the
# "CF=1" factory values).  Passive mode: the node asks for one frame after
# the fan has run ``warmup_ms`` (30 s for stable readings) and puts the sensor
# to sleep in between, which saves the fan and ~60 mA.

import time
from micropython import const

FRAME = const(32)
CMD_PASSIVE = b"\x42\x4d\xe1\x00\x00\x01\x70"
CMD_READ = b"\x42\x4d\xe2\x00\x00\x01\x71"
CMD_SLEEP = b"\x42\x4d\xe4\x00\x00\x01\x73"
CMD_WAKE = b"\x42\x4d\xe4\x00\x01\x01\x74"


def command(cmd, data):
    """7-byte command frame: 42 4D cmd dataH dataL checksum(u16 BE)."""
    b = bytearray(7)
    b[0], b[1], b[2], b[3], b[4] = 0x42, 0x4D, cmd, data >> 8, data & 0xFF
    s = sum(b[:5])
    b[5], b[6] = s >> 8, s & 0xFF
    return b


def parse(buf, off, out):
    """Check the frame at buf[off:]; store PM1/PM2.5/PM10 (atmospheric) in out[0..2].

    Returns True for a well-formed frame with a good checksum.
    """
    if len(buf) - off < FRAME or buf[off] != 0x42 or buf[off + 1] != 0x4D:
        return False
    if (buf[off + 2] << 8 | buf[off + 3]) != 28:
        return False
    s = 0
    for i in range(off, off + 30):
        s += buf[i]
    if s & 0xFFFF != (buf[off + 30] << 8 | buf[off + 31]):
        return False
    for k in range(3):
        j = off + 10 + 2 * k
        out[k] = buf[j] << 8 | buf[j + 1]
    return True


class PMS5003:
    def __init__(self, uart, set_pin=None, warmup_ms=30000, sleep_ms=None):
        self.uart = uart
        self.set_pin = set_pin
        self.warmup_ms = warmup_ms
        self._sleep = sleep_ms or time.sleep_ms
        self._rx = bytearray(2 * FRAME)
        self.pm = [0, 0, 0]            # pm1, pm2.5, pm10 in ug/m3
        self.errors = 0
        uart.write(CMD_PASSIVE)

    def wake(self):
        if self.set_pin is not None:
            self.set_pin.value(1)
        self.uart.write(CMD_WAKE)

    def sleep(self):
        self.uart.write(CMD_SLEEP)
        if self.set_pin is not None:
            self.set_pin.value(0)

    def read(self, tries=3):
        """Request a frame and parse it; True when self.pm was updated."""
        rx = self._rx
        for _ in range(tries):
            while self.uart.any():                   # drop stale bytes
                self.uart.readinto(rx)
            self.uart.write(CMD_READ)
            self._sleep(100)
            n = self.uart.readinto(rx) or 0
            for off in range(0, n - FRAME + 1):
                if parse(rx, off, self.pm):
                    return True
        self.errors += 1
        return False
