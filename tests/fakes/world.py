# The simulated world the fakes share (MicroPython side of the tests).
#
# Time is kept as ms since T0 (a small int for weeks).  The node's RTC can
# be off (unsynced after power-on: it starts in 2000) until NTP or GPS sets it.


T0 = 1767225600            # 2026-01-01T00:00:00Z, simulated start (Unix s)
now_ms = 0
end_ms = 1 << 29           # StopSim when simulated time passes this
rtc_off_s = 946684800 - T0 # device RTC = true time + offset (starts at 2000-01-01)
rtc_mem = b""
wdt_timeout = 0            # 0 = no watchdog running
wdt_last = 0
wdt_bites = 0
outages = []               # [(start_s, end_s)] of simulated time without Wi-Fi
ssid = "council-iot"
rssi = -67
vbat_mv = 3900
temp_c = 18.0              # air temperature (a function of time if temp_fn set)
temp_fn = None
rh = 55.0
distance_mm = 800          # range sensors' target
distance_fn = None
tilt = (0, 0, 1000)        # static acceleration, mg
pm = (5, 9, 14)            # ug/m3 pm1, pm2.5, pm10
pm_fn = None
co2 = 612
tone = None                # (freq Hz, dB SPL) for the microphone
accel_fn = None            # road: f(sample_index) -> (x, y, z) mg
accel_hz = 100
gps_fn = None              # road: f(t_s) -> (lat_str, NS, lon_str, EW, knots_str)
sleeps = []                # (kind, ms) of every deep/light sleep requested
actions = []               # [(t_s, fn)] run once when simulated time reaches t_s
log = []


class StopSim(BaseException):
    pass


class DeepSleep(BaseException):
    def __init__(self, ms):
        self.ms = ms


def true_unix():
    return T0 + now_ms // 1000


def at(t_s, fn):
    actions.append((t_s, fn))
    actions.sort(key=lambda a: a[0])


def run_actions():
    while actions and actions[0][0] * 1000 <= now_ms:
        actions.pop(0)[1]()


def advance(ms):
    global now_ms, wdt_bites, wdt_last
    if ms < 0:
        ms = 0
    now_ms += ms
    if wdt_timeout and now_ms - wdt_last > wdt_timeout:
        wdt_bites += 1
        wdt_last = now_ms
    if actions:
        run_actions()
    if now_ms >= end_ms:
        raise StopSim()


def wifi_ok():
    s = now_ms // 1000
    for a, b in outages:
        if a <= s < b:
            return False
    return True


def temperature():
    return temp_fn(now_ms // 1000) if temp_fn else temp_c


def distance():
    return distance_fn(now_ms // 1000) if distance_fn else distance_mm


def particulates():
    return pm_fn(now_ms // 1000) if pm_fn else pm


def power_loss():
    """RTC memory and the RTC's time are gone; flash stays.  The next boot is cold."""
    global rtc_mem, wdt_timeout, rtc_off_s, power_losses
    rtc_mem = b""
    wdt_timeout = 0
    rtc_off_s = 946684800 - true_unix()
    power_losses += 1


power_losses = 0
