# Analog Devices ADXL345 accelerometer (I2C), +-4 g full resolution (3.9 mg/LSB).
# Same interface as lis3dh.LIS3DH: read(out) in mg, FIFO stream for the road node.

from micropython import const

ADDR = const(0x53)
_DEVID = const(0x00)
_BW_RATE = const(0x2C)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)
_FIFO_CTL = const(0x38)
_FIFO_STATUS = const(0x39)
_RATE = {25: 0x8, 50: 0x9, 100: 0xA, 200: 0xB, 400: 0xC, 800: 0xD, 1600: 0xE, 10: 0x7}


class ADXL345:
    def __init__(self, i2c, addr=ADDR, hz=10):
        self.i2c = i2c
        self.addr = addr
        self._b = bytearray(6)
        self._b1 = bytearray(1)
        if self._rd(_DEVID) != 0xE5:
            raise OSError("ADXL345 not found")
        self.hz = hz
        self._wr(_BW_RATE, _RATE[hz])
        self._wr(_DATA_FORMAT, 0x09)               # full resolution, +-4 g
        self._wr(_POWER_CTL, 0x08)                 # measure
        self.fifo = False

    def _rd(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    def _wr(self, reg, v):
        self._b1[0] = v
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def _sample(self, out, off):
        b = self._b
        self.i2c.readfrom_mem_into(self.addr, _DATAX0, b)
        for k in range(3):
            v = b[2 * k] | b[2 * k + 1] << 8
            if v & 0x8000:
                v -= 0x10000
            out[off + k] = (v * 39 + (5 if v >= 0 else -5)) // 10

    def read(self, out):
        self._sample(out, 0)

    def start_fifo(self):
        self._wr(_FIFO_CTL, 0x80)                  # stream mode
        self.fifo = True

    def read_fifo(self, out, maxn):
        n = self._rd(_FIFO_STATUS) & 0x3F
        if n > maxn:
            n = maxn
        for i in range(n):
            self._sample(out, 3 * i)
        return n

    def off(self):
        self._wr(_POWER_CTL, 0x00)
