# Sensirion SCD40/SCD41 CO2 sensor (I2C, 16-bit commands, CRC-8 per word).
#
# Periodic measurement (one reading every 5 s) for mains-powered air nodes;
# the SCD41 also has single-shot (measure_single_shot, 5 s) for battery nodes.
# Results: co2 in ppm, t in 0.01 degC, rh in 0.1 %RH.

import time
from micropython import const
from ss.drivers.sht3x import crc8

ADDR = const(0x62)
_START = const(0x21B1)
_STOP = const(0x3F86)
_READ = const(0xEC05)
_READY = const(0xE4B8)
_SINGLE = const(0x219D)


class SCD4x:
    def __init__(self, i2c, addr=ADDR, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self._sleep = sleep_ms or time.sleep_ms
        self._cmd = bytearray(2)
        self._b = bytearray(9)
        self.co2 = 0
        self.t = 0
        self.rh = 0
        self.errors = 0

    def _send(self, cmd):
        self._cmd[0] = cmd >> 8
        self._cmd[1] = cmd & 0xFF
        self.i2c.writeto(self.addr, self._cmd)

    def start(self):
        self._send(_START)

    def stop(self):
        self._send(_STOP)
        self._sleep(500)

    def single_shot(self):
        self._send(_SINGLE)

    def ready(self):
        self._send(_READY)
        self._sleep(1)
        b = memoryview(self._b)[:3]
        self.i2c.readfrom_into(self.addr, b)
        return crc8(b, 0, 2) == b[2] and ((b[0] << 8 | b[1]) & 0x07FF) != 0

    def read(self):
        b = self._b
        try:
            self._send(_READ)
            self._sleep(1)
            self.i2c.readfrom_into(self.addr, b)
        except OSError:
            self.errors += 1
            return False
        for i in (0, 3, 6):
            if crc8(b, i, 2) != b[i + 2]:
                self.errors += 1
                return False
        self.co2 = b[0] << 8 | b[1]
        self.t = -4500 + (3500 * (b[3] << 8 | b[4]) + 6553) // 13107
        self.rh = (200 * (b[6] << 8 | b[7]) + 6553) // 13107
        return True
