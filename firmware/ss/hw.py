# Hardware bring-up: buses and drivers from the board profile and the config.
#
# The only runtime module besides net.py that imports ``machine``.  A sensor
# that does not answer at boot is left as None and counted as a sensor error;
# the node keeps running with what it has.

import machine

_ram = bytearray(0)          # Pico: state kept in RAM across lightsleep


class RTCStore:
    """ESP32: RTC slow memory, kept through deep sleep."""

    def __init__(self):
        self.rtc = machine.RTC()

    def load(self):
        try:
            return self.rtc.memory()
        except (OSError, AttributeError):
            return None

    def save(self, buf, n):
        self.rtc.memory(memoryview(buf)[:n])


class RAMStore:
    """Pico: lightsleep keeps RAM; a reset starts afresh."""

    def load(self):
        return bytes(_ram) if _ram else None

    def save(self, buf, n):
        global _ram
        if len(_ram) != n:
            _ram = bytearray(n)
        _ram[:] = memoryview(buf)[:n]


def _set_rtc(unix_s):
    import time
    tm = time.gmtime(unix_s)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


class HW:
    def __init__(self, cfg, clock, board):
        self.cfg = cfg
        self.clock = clock
        if clock.rtc_hook is None:
            clock.rtc_hook = _set_rtc
        self.b = board
        self.config_path = "/config.json"
        self.errors = 0
        self.store = RTCStore() if board.SLEEP == "deep" else RAMStore()
        self.wdt = None
        self._i2c = None
        self.range = self.accel = self.climate = self.pm = self.co2 = None
        self.mic = self.gps = None
        self.battery = None
        sen = cfg["sensors"]
        cal = cfg["calibration"]
        kind = cfg["kind"]
        sl = clock.sleep_ms
        if kind == "bin_fill":
            self.range = self._try(self._range, sen["range"], cal["pings"])
        if kind in ("bin_fill", "road") and sen.get("accel"):
            hz = cal["accel_hz"] if kind == "road" else 10
            self.accel = self._try(self._accel, sen["accel"], hz)
        if sen.get("climate"):
            self.climate = self._try(self._climate, sen["climate"])
        if kind == "air":
            self.pm = self._try(self._pm, sen["pm"])
            if sen.get("co2"):
                from ss.drivers.scd4x import SCD4x
                self.co2 = self._try(lambda: SCD4x(self.i2c(), sleep_ms=sl))
        if kind == "noise":
            self.mic = self._try(self._mic, cal["mic_rate"])
        if kind == "road":
            from ss.drivers.gps import GPS
            self.gps = self._try(lambda: GPS(self._uart(board.UART_GPS)))
        self.battery = self._try(self._battery, cal["bat_ratio"])

    def _try(self, f, *args):
        try:
            return f(*args)
        except (OSError, ValueError) as e:
            print("hw:", e)
            self.errors += 1
            return None

    # --- buses ---------------------------------------------------------------
    def i2c(self):
        if self._i2c is None:
            p = self.b.I2C
            self._i2c = machine.I2C(p["id"], scl=machine.Pin(p["scl"]), sda=machine.Pin(p["sda"]),
                                    freq=p["freq"])
        return self._i2c

    def _uart(self, p):
        return machine.UART(p["id"], baudrate=p["baud"], tx=machine.Pin(p["tx"]),
                            rx=machine.Pin(p["rx"]), timeout=0)

    # --- drivers -------------------------------------------------------------
    def _range(self, name, pings):
        sl = self.clock.sleep_ms
        if name == "jsn_sr04t":
            from ss.drivers.jsn_sr04t import JSNSR04T
            return JSNSR04T(machine.Pin(self.b.TRIG, machine.Pin.OUT),
                            machine.Pin(self.b.ECHO, machine.Pin.IN), pings, sleep_ms=sl)
        if name == "a02yyuw":
            from ss.drivers.a02yyuw import A02YYUW
            return A02YYUW(self._uart(self.b.UART_RANGE), pings, sleep_ms=sl)
        from ss.drivers.vl53l1x import VL53L1X
        return VL53L1X(self.i2c(), pings=pings, sleep_ms=sl)

    def _accel(self, name, hz):
        if name == "lis3dh":
            from ss.drivers.lis3dh import LIS3DH
            return LIS3DH(self.i2c(), hz=hz)
        from ss.drivers.adxl345 import ADXL345
        return ADXL345(self.i2c(), hz=hz)

    def _climate(self, name):
        sl = self.clock.sleep_ms
        if name == "sht3x":
            from ss.drivers.sht3x import SHT3x
            return SHT3x(self.i2c(), sleep_ms=sl)
        from ss.drivers.bme280 import BME280
        return BME280(self.i2c(), sleep_ms=sl)

    def _pm(self, name):
        sl = self.clock.sleep_ms
        if name == "pms5003":
            from ss.drivers.pms5003 import PMS5003
            pin = getattr(self.b, "PMS_SET", None)
            return PMS5003(self._uart(self.b.UART_PM),
                           machine.Pin(pin, machine.Pin.OUT) if pin is not None else None, sleep_ms=sl)
        from ss.drivers.sds011 import SDS011
        return SDS011(self._uart(self.b.UART_PM), sleep_ms=sl)

    def _mic(self, fs):
        from ss.drivers.i2s_mic import I2SMic
        p = self.b.I2S
        block = fs // 32
        i2s = machine.I2S(p["id"], sck=machine.Pin(p["sck"]), ws=machine.Pin(p["ws"]),
                          sd=machine.Pin(p["sd"]), mode=machine.I2S.RX, bits=32,
                          format=machine.I2S.MONO, rate=fs, ibuf=block * 4 * 4)
        return I2SMic(i2s, block)

    def _battery(self, ratio):
        from ss.drivers.battery import Battery
        p = self.b.VBAT
        adc = machine.ADC(machine.Pin(p["pin"]))
        if p.get("atten"):
            adc.atten(machine.ADC.ATTN_11DB)       # ESP32: full 0..3.3 V range
        return Battery(adc, ratio or p["ratio"], prepare=getattr(self.b, "vbat_prepare", None))

    # --- services ------------------------------------------------------------
    def battery_mv(self):
        if self.battery is None:
            return 0
        try:
            return self.battery.read_mv()
        except OSError:
            return 0

    def wifi(self, nets, seed):
        from ss.net import WiFi
        return WiFi(nets, self.clock, seed, self.feed)

    def ntp(self, host, clock):
        from ss.net import ntp_sync
        return ntp_sync(host, clock)

    def start_wdt(self, ms):
        self.wdt = machine.WDT(timeout=min(ms, self.b.WDT_MAX_MS))

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def sleep(self, ms):
        """Deep sleep (ESP32: does not return) or lightsleep in watchdog-sized steps."""
        if self.b.SLEEP == "deep":
            machine.deepsleep(ms)
        step = self.b.WDT_MAX_MS // 2
        while ms > 0:
            d = step if ms > step else ms
            self.feed()
            machine.lightsleep(d)
            ms -= d
        self.feed()
