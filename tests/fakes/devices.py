# Register-level models of the sensors, driven by world.py.  Used by the fake
# ``machine`` buses; the drivers under test speak their real protocols to them.

import math
import struct
import world

i2c = {}      # address -> model
uart = {}     # UART id -> model
mic = None


def pin_changed(pin, v):
    pass


def crc8(b, off=0, n=2):
    c = 0xFF
    for i in range(off, off + n):
        c ^= b[i]
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _word(out, off, v):
    out[off] = v >> 8
    out[off + 1] = v & 0xFF
    out[off + 2] = crc8(out, off, 2)


# --- I2C ----------------------------------------------------------------------
class SHT3x:
    def __init__(self):
        self.out = bytearray(6)
        self.corrupt = False

    def command(self, b):
        if b[0] == 0x24 and b[1] == 0x00:
            rt = int((world.temperature() + 45) * 65535 / 175 + 0.5)
            rh = int(world.rh * 65535 / 100 + 0.5)
            _word(self.out, 0, rt)
            _word(self.out, 3, rh)
            if self.corrupt:
                self.out[2] ^= 1

    def read(self, reg, buf):
        buf[:] = self.out[:len(buf)]

    def write(self, reg, buf):
        pass


class _Accel:
    def __init__(self):
        self.regs = {}
        self.next = 0           # FIFO: index of the next sample handed out
        self.fifo = False

    def _produced(self):
        return world.now_ms * world.accel_hz // 1000

    def _pending(self, cap):
        p = self._produced() - self.next
        if p > cap:
            self.next = self._produced() - cap
            p = cap
        return p

    def _xyz(self):
        if world.accel_fn is not None:
            if self.fifo:
                v = world.accel_fn(self.next)
                self.next += 1
                return v
            return world.accel_fn(self._produced())
        return world.tilt

    def write(self, reg, buf):
        self.regs[reg] = buf[0]

    def command(self, b):
        pass


class LIS3DH(_Accel):
    def read(self, reg, buf):
        reg &= 0x7F
        if reg == 0x0F:
            buf[0] = 0x33
        elif reg == 0x2F:
            self.fifo = self.regs.get(0x2E, 0) & 0x80 != 0
            buf[0] = self._pending(32)
        elif reg == 0x28:
            x, y, z = self._xyz()
            for k, v in enumerate((x, y, z)):
                raw = (int(v / 2) << 4) & 0xFFFF
                buf[2 * k] = raw & 0xFF
                buf[2 * k + 1] = raw >> 8
        else:
            buf[0] = self.regs.get(reg, 0)


class ADXL345(_Accel):
    def read(self, reg, buf):
        if reg == 0x00:
            buf[0] = 0xE5
        elif reg == 0x39:
            self.fifo = self.regs.get(0x38, 0) & 0x80 != 0
            buf[0] = self._pending(32)
        elif reg == 0x32:
            x, y, z = self._xyz()
            for k, v in enumerate((x, y, z)):
                raw = int(round(v / 3.9)) & 0xFFFF
                buf[2 * k] = raw & 0xFF
                buf[2 * k + 1] = raw >> 8
        else:
            buf[0] = self.regs.get(reg, 0)


class VL53L1X:
    def __init__(self):
        self.config = None
        self.cleared = 0
        self.status = 9

    def read(self, reg, buf):
        if reg == 0x010F:
            buf[0], buf[1] = 0xEA, 0xCC
        elif reg == 0x0030:
            buf[0] = 0x01
        elif reg == 0x0031:
            buf[0] = 0x01 if self.config else 0x00
        elif reg == 0x0089:
            for i in range(len(buf)):
                buf[i] = 0
            buf[0] = self.status
            d = world.distance()
            buf[13], buf[14] = d >> 8, d & 0xFF

    def write(self, reg, buf):
        if reg == 0x2D:
            self.config = bytes(buf)
        elif reg == 0x0086:
            self.cleared += 1

    def command(self, b):
        pass


class SCD4x:
    def __init__(self):
        self.out = bytearray(9)
        self.running = False

    def command(self, b):
        cmd = b[0] << 8 | b[1]
        if cmd == 0x21B1:
            self.running = True
        elif cmd == 0x3F86:
            self.running = False
        elif cmd == 0xE4B8:
            _word(self.out, 0, 0x8006 if self.running else 0x8000)
        elif cmd == 0xEC05:
            _word(self.out, 0, world.co2)
            _word(self.out, 3, int((world.temperature() + 45) * 65535 / 175 + 0.5))
            _word(self.out, 6, int(world.rh * 65535 / 100 + 0.5))

    def read(self, reg, buf):
        buf[:] = self.out[:len(buf)]

    def write(self, reg, buf):
        pass


class BME280:
    # Temperature calibration and reading from the worked example in Bosch's
    # BMP280 datasheet (section 3.12: 25.08 degC); humidity words typical of a part.
    CALIB_T = (27504, 26435, -1000)
    CALIB_H = (75, 362, 0, 324, 50, 30)        # H1..H6
    adc_t = 519888
    adc_h = 30154

    def __init__(self):
        self.regs = {}

    def read(self, reg, buf):
        if reg == 0xD0:
            buf[0] = 0x60
        elif reg == 0x88:
            struct.pack_into("<Hhh", buf, 0, *self.CALIB_T)
        elif reg == 0xA1:
            buf[0] = self.CALIB_H[0]
        elif reg == 0xE1:
            h1, h2, h3, h4, h5, h6 = self.CALIB_H
            struct.pack_into("<hB", buf, 0, h2, h3)
            buf[3] = (h4 >> 4) & 0xFF
            buf[4] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
            buf[5] = (h5 >> 4) & 0xFF
            buf[6] = h6 & 0xFF
        elif reg == 0xF7:
            t = self.adc_t
            buf[0], buf[1], buf[2] = 0x50, 0, 0
            buf[3], buf[4], buf[5] = t >> 12, (t >> 4) & 0xFF, (t & 0x0F) << 4
            buf[6], buf[7] = self.adc_h >> 8, self.adc_h & 0xFF

    def write(self, reg, buf):
        self.regs[reg] = buf[0]

    def command(self, b):
        pass


# --- UART ---------------------------------------------------------------------
class _Stream:
    def __init__(self):
        self.q = bytearray()
        self.written = []

    def pending(self):
        self._produce()
        return len(self.q)

    def _produce(self):
        pass

    def tx(self, buf):
        self._produce()
        n = min(len(buf), len(self.q))
        buf[:n] = self.q[:n]
        self.q = self.q[n:]
        return n

    def rx(self, b):
        self.written.append(bytes(b))
        self.command(bytes(b))

    def command(self, b):
        pass


def pms_frame(pm1, pm25, pm10):
    words = [pm1, pm25, pm10, pm1, pm25, pm10, 900, 300, 60, 8, 2, 1, 0]
    f = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        f += bytes((w >> 8, w & 0xFF))
    s = sum(f)
    f += bytes((s >> 8 & 0xFF, s & 0xFF))
    return f


class PMS5003(_Stream):
    def __init__(self):
        _Stream.__init__(self)
        self.awake = True
        self.passive = False
        self.requests = 0

    def command(self, b):
        if b == b"\x42\x4d\xe1\x00\x00\x01\x70":
            self.passive = True
        elif b == b"\x42\x4d\xe4\x00\x00\x01\x73":
            self.awake = False
        elif b == b"\x42\x4d\xe4\x00\x01\x01\x74":
            self.awake = True
        elif b == b"\x42\x4d\xe2\x00\x00\x01\x71" and self.awake:
            self.requests += 1
            pm1, pm25, pm10 = world.particulates()
            self.q += b"\x00\x42"              # line noise before the frame
            self.q += pms_frame(pm1, pm25, pm10)


def sds_frame(pm25x10, pm10x10):
    f = bytearray((0xAA, 0xC0, pm25x10 & 0xFF, pm25x10 >> 8, pm10x10 & 0xFF, pm10x10 >> 8, 0x12, 0x34, 0, 0xAB))
    f[8] = sum(f[2:8]) & 0xFF
    return f


class SDS011(_Stream):
    def command(self, b):
        if len(b) == 19 and b[2] == 4:
            pm1, pm25, pm10 = world.particulates()
            self.q += sds_frame(int(pm25 * 10), int(pm10 * 10))


class A02YYUW(_Stream):
    def __init__(self):
        _Stream.__init__(self)
        self.last = world.now_ms

    def _produce(self):
        while world.now_ms - self.last >= 100:
            self.last += 100
            d = world.distance()
            h, l = d >> 8, d & 0xFF
            self.q += bytes((0xFF, h, l, (0xFF + h + l) & 0xFF))
            if len(self.q) > 256:
                self.q = self.q[-256:]


def nmea(body):
    x = 0
    for c in body.encode():
        x ^= c
    return ("$%s*%02X\r\n" % (body, x)).encode()


class GPSModule(_Stream):
    def __init__(self):
        _Stream.__init__(self)
        self.last_s = -1

    def _produce(self):
        s = world.now_ms // 1000
        if s == self.last_s or world.gps_fn is None:
            return
        self.last_s = s
        lat, ns, lon, ew, knots = world.gps_fn(s)
        u = world.true_unix()
        tm = _gmtime(u)
        hms = "%02d%02d%02d.00" % (tm[3], tm[4], tm[5])
        dmy = "%02d%02d%02d" % (tm[2], tm[1], tm[0] % 100)
        self.q += nmea("GPRMC,%s,A,%s,%s,%s,%s,%s,0.0,%s,,,A" % (hms, lat, ns, lon, ew, knots, dmy))
        self.q += nmea("GPGGA,%s,%s,%s,%s,%s,1,09,0.9,45.3,M,47.0,M,," % (hms, lat, ns, lon, ew))
        if len(self.q) > 1024:
            self.q = self.q[-1024:]


def _gmtime(u):
    days, sod = divmod(u, 86400)
    # civil_from_days (H. Hinnant)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return (y, m, d, sod // 3600, sod // 60 % 60, sod % 60)


# --- I2S microphone -------------------------------------------------------------
class Mic:
    """Tone at world.tone = (Hz, dB SPL) (or world.tone_fn(t_s)), INMP441 scaling:
    a 94 dB SPL sine reads -26 dBFS, i.e. peak = 32768 * 10**((L - 120) / 20)."""

    def __init__(self):
        self.rate = 16000
        self.key = None
        self.table = None
        self.pos = 0
        self.frac = 0
        self.blocks = 0

    def _table(self, f, db):
        n = self.rate // _gcd(self.rate, int(f)) if f else 1
        amp = 32768 * 10 ** ((db - 120) / 20.0)
        if amp > 32767:
            amp = 32767
        self.table = [int(round(amp * math.sin(2 * math.pi * f * i / self.rate))) for i in range(n)]
        self.key = (f, db)
        self.pos = 0

    def fill(self, buf):
        t = getattr(world, "tone_fn", None)
        tone = t(world.now_ms // 1000) if t else (world.tone or (1000, 60.0))
        if tone != self.key:
            self._table(*tone)
        tab = self.table
        m = len(tab)
        p = self.pos
        n = len(buf) // 2
        for k in range(n):
            buf[2 * k] = 0
            buf[2 * k + 1] = tab[p]
            p += 1
            if p == m:
                p = 0
        self.pos = p
        self.blocks += 1
        self.frac += n * 1000
        ms = self.frac // self.rate
        self.frac -= ms * self.rate
        world.advance(ms)
        return 4 * n


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def echo_us(timeout_us):
    """JSN-SR04T echo for world.distance() at the real speed of sound."""
    c = 331.3 + 0.606 * world.temperature()
    us = int(2 * world.distance() / 1000.0 / c * 1e6 + 0.5)
    return us if us < timeout_us else -2


def standard(kind):
    """Wire up the sensors a standard node of ``kind`` carries."""
    global mic
    i2c.clear()
    uart.clear()
    i2c[0x44] = SHT3x()
    if kind == "bin_fill":
        i2c[0x18] = LIS3DH()
    elif kind == "air":
        uart[1] = PMS5003()
        i2c[0x62] = SCD4x()
    elif kind == "noise":
        mic = Mic()
    elif kind == "road":
        i2c[0x18] = LIS3DH()
        uart[0] = GPSModule()
        uart[2] = uart[0]
