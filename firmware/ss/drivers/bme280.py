# Bosch BME280 temperature / humidity (/ pressure, unused) over I2C.
#
# Forced mode, x1 oversampling: one conversion per read(), then the sensor
# sleeps.  Compensation is Bosch's integer code from the datasheet (section
# 4.2.3); t in 0.01 degC, rh in 0.1 %RH.

import time
from micropython import const

ADDR = const(0x76)
_ID = const(0xD0)
_CALIB_T = const(0x88)
_CALIB_H1 = const(0xA1)
_CALIB_H2 = const(0xE1)
_CTRL_HUM = const(0xF2)
_CTRL_MEAS = const(0xF4)
_DATA = const(0xF7)


def _s16(b, i):
    v = b[i] | b[i + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


class BME280:
    def __init__(self, i2c, addr=ADDR, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self._sleep = sleep_ms or time.sleep_ms
        self._b = bytearray(8)
        self._c = bytearray(26)
        self._b1 = bytearray(1)
        self.t = 0
        self.rh = 0
        self.errors = 0
        i2c.readfrom_mem_into(addr, _ID, self._b1)
        if self._b1[0] not in (0x60, 0x58):        # BME280 / BMP280 (no humidity)
            raise OSError("BME280 not found")
        self.has_rh = self._b1[0] == 0x60
        c = self._c
        i2c.readfrom_mem_into(addr, _CALIB_T, memoryview(c)[:6])
        self.T1 = c[0] | c[1] << 8
        self.T2 = _s16(c, 2)
        self.T3 = _s16(c, 4)
        if self.has_rh:
            i2c.readfrom_mem_into(addr, _CALIB_H1, self._b1)
            self.H1 = self._b1[0]
            i2c.readfrom_mem_into(addr, _CALIB_H2, memoryview(c)[:7])
            self.H2 = _s16(c, 0)
            self.H3 = c[2]
            e4, e5, e6 = c[3], c[4], c[5]
            self.H4 = (e4 - 256 if e4 & 0x80 else e4) << 4 | (e5 & 0x0F)
            self.H5 = (e6 - 256 if e6 & 0x80 else e6) << 4 | e5 >> 4
            self.H6 = c[6] - 256 if c[6] & 0x80 else c[6]

    def _wr(self, reg, v):
        self._b1[0] = v
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def read(self):
        b = self._b
        try:
            self._wr(_CTRL_HUM, 0x01)               # humidity x1
            self._wr(_CTRL_MEAS, 0x25)              # temp x1, pressure x1, forced
            self._sleep(10)
            self.i2c.readfrom_mem_into(self.addr, _DATA, b)
        except OSError:
            self.errors += 1
            return False
        adc_t = b[3] << 12 | b[4] << 4 | b[5] >> 4
        adc_h = b[6] << 8 | b[7]
        if adc_t == 0x80000:                        # measurement skipped
            self.errors += 1
            return False
        v1 = (((adc_t >> 3) - (self.T1 << 1)) * self.T2) >> 11
        x = (adc_t >> 4) - self.T1
        v2 = (((x * x) >> 12) * self.T3) >> 14
        t_fine = v1 + v2
        self.t = (t_fine * 5 + 128) >> 8
        if self.has_rh:
            v = t_fine - 76800
            v = (((((adc_h << 14) - (self.H4 << 20) - (self.H5 * v)) + 16384) >> 15) *
                 (((((((v * self.H6) >> 10) * (((v * self.H3) >> 11) + 32768)) >> 10) + 2097152) *
                   self.H2 + 8192) >> 14))
            v = v - (((((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4)
            v = 0 if v < 0 else (419430400 if v > 419430400 else v)
            self.rh = ((v >> 12) * 10 + 512) >> 10      # %RH * 1024 -> 0.1 %RH
        return True
