# Fake ``machine`` module: the firmware's buses talk to the models in devices.py.

import world
import devices

_pins = {}


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None, alt=-1):
        self.id = id
        if value is not None:
            _pins[id] = value

    def value(self, v=None):
        if v is None:
            return _pins.get(self.id, 0)
        _pins[self.id] = 1 if v else 0
        devices.pin_changed(self.id, _pins[self.id])

    def init(self, *a, **k):
        pass

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000):
        self.id = id

    def _dev(self, addr):
        d = devices.i2c.get(addr)
        if d is None:
            raise OSError(19)          # ENODEV: no ACK
        return d

    def scan(self):
        return sorted(devices.i2c)

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        self._dev(addr).read(reg, buf)

    def readfrom_mem(self, addr, reg, n, addrsize=8):
        b = bytearray(n)
        self._dev(addr).read(reg, b)
        return bytes(b)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).write(reg, buf)

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).command(buf)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        self._dev(addr).read(None, buf)


class UART:
    def __init__(self, id, baudrate=9600, tx=None, rx=None, timeout=0, **kw):
        self.dev = devices.uart.get(id)
        if self.dev is None:
            raise OSError(19)

    def write(self, buf):
        self.dev.rx(buf)
        return len(buf)

    def any(self):
        return self.dev.pending()

    def readinto(self, buf, n=-1):
        return self.dev.tx(buf)

    def read(self, n=-1):
        b = bytearray(256)
        k = self.dev.tx(b)
        return bytes(b[:k]) if k else None


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        pass

    def atten(self, a):
        pass

    def read_uv(self):
        return world.vbat_mv * 1000 // 2      # behind a 1:2 divider

    def read_u16(self):
        return world.vbat_mv * 65535 // 3 // 3300


class I2S:
    RX = 0
    TX = 1
    MONO = 0
    STEREO = 1

    def __init__(self, id, sck=None, ws=None, sd=None, mode=0, bits=32, format=0, rate=16000, ibuf=4096):
        self.rate = rate
        self.mic = devices.mic
        self.mic.rate = rate

    def readinto(self, buf):
        return self.mic.fill(buf)

    def deinit(self):
        pass


class RTC:
    def memory(self, data=None):
        if data is None:
            return world.rtc_mem
        world.rtc_mem = bytes(data)

    def datetime(self, dt=None):
        return (2026, 1, 1, 3, 0, 0, 0, 0)


class WDT:
    def __init__(self, id=0, timeout=5000):
        world.wdt_timeout = timeout
        world.wdt_last = world.now_ms

    def feed(self):
        world.wdt_last = world.now_ms


def time_pulse_us(pin, level, timeout_us=1000000):
    return devices.echo_us(timeout_us)


def deepsleep(ms=0):
    world.sleeps.append(("deep", ms))
    world.wdt_timeout = 0               # a deep-sleep wake is a reset
    raise world.DeepSleep(ms)


def lightsleep(ms=0):
    world.sleeps.append(("light", ms))
    world.advance(ms)


def reset():
    raise world.DeepSleep(0)


def reset_cause():
    return 4 if world.sleeps else 1


def unique_id():
    return b"\x01\x02\x03\x04\x05\x06"


def freq(f=None):
    return 240000000


DEEPSLEEP_RESET = 4
PWRON_RESET = 1
