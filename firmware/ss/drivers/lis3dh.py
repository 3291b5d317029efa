# ST LIS3DH accelerometer (I2C), +-4 g high-resolution mode (2 mg/digit).
#
# read(out) fills out[0..2] with x, y, z in mg.  For the road node the FIFO
# runs in stream mode at ``hz`` (100/200/400 Hz) and read_fifo() drains up to
# 32 samples per call, so the sampling rate is set by the sensor's clock, not
# by how promptly the asyncio task comes round.

from micropython import const

ADDR = const(0x18)
_WHO_AM_I = const(0x0F)
_CTRL1 = const(0x20)
_CTRL4 = const(0x23)
_CTRL5 = const(0x24)
_OUT_X_L = const(0x28)
_FIFO_CTRL = const(0x2E)
_FIFO_SRC = const(0x2F)
_ODR = {1: 0x1, 10: 0x2, 25: 0x3, 50: 0x4, 100: 0x5, 200: 0x6, 400: 0x7}


class LIS3DH:
    def __init__(self, i2c, addr=ADDR, hz=10):
        self.i2c = i2c
        self.addr = addr
        self._b = bytearray(6)
        self._b1 = bytearray(1)
        if self._rd(_WHO_AM_I) != 0x33:
            raise OSError("LIS3DH not found")
        self.hz = hz
        self._wr(_CTRL1, _ODR[hz] << 4 | 0x07)     # ODR, normal mode, XYZ on
        self._wr(_CTRL4, 0x98)                     # BDU, +-4 g, high resolution
        self.fifo = False

    def _rd(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    def _wr(self, reg, v):
        self._b1[0] = v
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def _sample(self, out, off):
        b = self._b
        self.i2c.readfrom_mem_into(self.addr, _OUT_X_L | 0x80, b)
        for k in range(3):
            v = b[2 * k] | b[2 * k + 1] << 8
            if v & 0x8000:
                v -= 0x10000
            out[off + k] = (v >> 4) * 2            # 12-bit left-justified, 2 mg/digit

    def read(self, out):
        self._sample(out, 0)

    def start_fifo(self):
        self._wr(_CTRL5, 0x40)                     # FIFO enable
        self._wr(_FIFO_CTRL, 0x80)                 # stream mode
        self.fifo = True

    def read_fifo(self, out, maxn):
        """Drain up to maxn samples into out (x, y, z interleaved, mg); returns n."""
        n = self._rd(_FIFO_SRC) & 0x1F
        if n > maxn:
            n = maxn
        for i in range(n):
            self._sample(out, 3 * i)
        return n

    def off(self):
        self._wr(_CTRL1, 0x00)
