# ST VL53L1X time-of-flight ranger (I2C, 16-bit register addresses).
#
# Initialisation follows ST's ultra-lite driver: check the model id, load the
# 91-byte default configuration at 0x2D (which also starts ranging), then poll
# the data-ready bit and read the crosstalk-corrected range.  Light, not
# sound: no temperature compensation; for bins with a lid gap or foam that
# defeats ultrasound.

import time
from array import array
from micropython import const
from ss import fill

ADDR = const(0x29)
_MODEL_ID = const(0x010F)
_GPIO_HV_MUX_CTRL = const(0x0030)
_GPIO_TIO_HV_STATUS = const(0x0031)
_INT_CLEAR = const(0x0086)
_MODE_START = const(0x0087)
_RESULT = const(0x0089)          # range status .. 17 bytes, range at +13
DEFAULT_CONFIG = bytes((
    0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x02, 0x08, 0x00, 0x08, 0x10, 0x01, 0x01, 0x00,
    0x00, 0x00, 0x00, 0xFF, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x0B, 0x00,
    0x00, 0x02, 0x0A, 0x21, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0xC8, 0x00, 0x00,
    0x38, 0xFF, 0x01, 0x00, 0x08, 0x00, 0x00, 0x01, 0xDB, 0x0F, 0x01, 0xF1, 0x0D, 0x01,
    0x68, 0x00, 0x80, 0x08, 0xB8, 0x00, 0x00, 0x00, 0x00, 0x0F, 0x89, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x0F, 0x0D, 0x0E, 0x0E, 0x00, 0x00, 0x02, 0xC7, 0xFF,
    0x9B, 0x00, 0x00, 0x00, 0x01, 0x01, 0x40,
))


class VL53L1X:
    def __init__(self, i2c, addr=ADDR, pings=5, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self.pings = pings
        self._sleep = sleep_ms or time.sleep_ms
        self._r = bytearray(17)
        self._b1 = bytearray(1)
        self._buf = array("i", [0] * pings)
        self.errors = 0
        self.status = 0
        if self._rd16(_MODEL_ID) != 0xEACC:
            raise OSError("VL53L1X not found")
        i2c.writeto_mem(addr, 0x2D, DEFAULT_CONFIG, addrsize=16)

    def _rd8(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1, addrsize=16)
        return self._b1[0]

    def _rd16(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, memoryview(self._r)[:2], addrsize=16)
        return self._r[0] << 8 | self._r[1]

    def _wr8(self, reg, v):
        self._b1[0] = v
        self.i2c.writeto_mem(self.addr, reg, self._b1, addrsize=16)

    def ready(self):
        pol = 0 if self._rd8(_GPIO_HV_MUX_CTRL) & 0x10 else 1
        return (self._rd8(_GPIO_TIO_HV_STATUS) & 1) == pol

    def range_mm(self):
        for _ in range(20):
            if self.ready():
                break
            self._sleep(10)
        else:
            return -1
        r = self._r
        self.i2c.readfrom_mem_into(self.addr, _RESULT, r, addrsize=16)
        self._wr8(_INT_CLEAR, 0x01)
        self.status = r[0] & 0x1F
        if self.status != 9:             # 9 = range valid
            return -1
        return r[13] << 8 | r[14]

    def read_mm(self, temp_c100=2000):
        buf = self._buf
        n = 0
        for _ in range(self.pings):
            d = self.range_mm()
            if d > 0:
                buf[n] = d
                n += 1
        if n == 0:
            self.errors += 1
            return -1
        return fill.median(buf, n)
