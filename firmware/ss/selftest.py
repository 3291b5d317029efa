# On-device self-test, run over USB by the provisioning CLI:
#
#     mpremote exec "import ss.selftest as t; t.main()"
#
# Checks the config (ss.config's validator), that every configured sensor
# answers and reads within a plausible range, the battery voltage, that the
# flash ring buffer takes a write and reads it back, and optionally Wi-Fi
# (joins a configured network, RSSI).  Prints exactly one JSON line,
#
#     {"selftest": 1, "ok": true, "fw": "0.1.0", ..., "checks": [...]}
#
# which the CLI parses (other output, e.g. "hw: ..." from ss.hw, may precede
# it).  A bin_fill node also reports the median of several range readings as
# "empty_mm": the CLI stores it as calibration.empty_mm (the bin is empty at
# installation).
#
# Pure part: LIMITS, judge(), median(), result().  Hardware part: run(),
# through ss.hw.HW and the drivers, like the node itself.  Never raises: an
# unexpected error is a failed "internal" check in the printed result.

import json
from ss import VERSION

PASS = "pass"
FAIL = "fail"
SKIP = "skip"

# Plausible readings of a working sensor at an install site, in the units the
# drivers report: mm, 0.01 degC, 0.1 %RH, mg, ug/m3, ppm, mV.
LIMITS = {
    "range_mm": (50, 7500),
    "temp_c100": (-3000, 7000),
    "rh_x10": (0, 1000),
    "accel_mg": (700, 1300),         # |a| at rest is 1 g
    "pm_ug": (0, 1000),
    "co2_ppm": (300, 10000),
    "bat_mv": (3000, 15000),
}

SAMPLES = 5              # range readings for the empty-bin median
RING_ROOT = "/selftest-ring"


def median(values):
    """Median of a list of ints (the lower middle for an even count's pair mean)."""
    v = sorted(values)
    n = len(v)
    if n == 0:
        return None
    if n & 1:
        return v[n // 2]
    return (v[n // 2 - 1] + v[n // 2]) // 2


def judge(name, value, limit, detail=None):
    """One check: value within LIMITS[limit] (None = the sensor did not answer)."""
    c = {"name": name, "status": FAIL, "value": value}
    if value is None:
        c["detail"] = detail or "no reading"
        return c
    lo, hi = LIMITS[limit]
    if lo <= value <= hi:
        c["status"] = PASS
    else:
        c["detail"] = "%s outside %s..%s" % (value, lo, hi)
    if detail and c["status"] == PASS:
        c["detail"] = detail
    return c


def check(name, ok, value=None, detail=None):
    c = {"name": name, "status": PASS if ok else FAIL, "value": value}
    if detail:
        c["detail"] = detail
    return c


def skip(name, detail):
    return {"name": name, "status": SKIP, "value": None, "detail": detail}


def result(cfg, board_name, checks, extra=None):
    """The result object: ok when no check failed."""
    ok = True
    for c in checks:
        if c["status"] == FAIL:
            ok = False
    r = {"selftest": 1, "ok": ok, "fw": VERSION, "board": board_name,
         "tenant": cfg.get("tenant") if cfg else None,
         "device_id": cfg.get("device_id") if cfg else None,
         "kind": cfg.get("kind") if cfg else None,
         "failed": [c["name"] for c in checks if c["status"] == FAIL],
         "checks": checks}
    if extra:
        for k in extra:
            r[k] = extra[k]
    return r


# --- hardware ----------------------------------------------------------------

def _range(hw, temp, samples):
    got = []
    for _ in range(samples):
        d = hw.range.read_mm(temp)
        if d > 0:
            got.append(d)
    lo, hi = LIMITS["range_mm"]
    good = [d for d in got if lo <= d <= hi]
    m = median(good)
    enough = len(good) * 2 > samples
    c = judge("range", m if enough else None, "range_mm",
              ("%d of %d readings valid" if enough else "too few echoes: %d of %d readings valid")
              % (len(good), samples))
    c["readings"] = got
    return c, (m if c["status"] == PASS else None)


def _climate(hw):
    s = hw.climate
    if not s.read():
        return [check("climate", False, None, "no valid measurement (bus or CRC error)")]
    out = [judge("temperature", s.t, "temp_c100")]
    if getattr(s, "has_rh", True):
        out.append(judge("humidity", s.rh, "rh_x10"))
    return out


def _accel(hw):
    from array import array
    from ss import fill
    xyz = array("i", [0, 0, 0])
    try:
        hw.accel.read(xyz)
    except OSError as e:
        return check("accelerometer", False, None, "read failed: %s" % e)
    g = int((xyz[0] * xyz[0] + xyz[1] * xyz[1] + xyz[2] * xyz[2]) ** 0.5 + 0.5)
    c = judge("accelerometer", g, "accel_mg", "tilt %d.%d deg" % divmod(fill.tilt_deg10(xyz[0], xyz[1], xyz[2]), 10))
    c["xyz"] = [xyz[0], xyz[1], xyz[2]]
    return c


def _pm(hw, clock, warmup_ms):
    pm = hw.pm
    pm.wake()
    clock.sleep_ms(warmup_ms)
    ok = pm.read()
    pm.sleep()
    if not ok:
        return check("particulates", False, None, "no frame from the sensor")
    v = pm.pm[1]
    return judge("particulates", v, "pm_ug", "pm2.5 %d ug/m3" % v)


def _co2(hw, clock):
    s = hw.co2
    try:
        s.start()
        for _ in range(12):
            clock.sleep_ms(500)
            if s.ready():
                break
        ok = s.read()
        s.stop()
    except OSError as e:
        return check("co2", False, None, "bus error: %s" % e)
    return judge("co2", s.co2 if ok else None, "co2_ppm")


def _mic(hw):
    mic = hw.mic
    n = mic.read_block()
    if n <= 0:
        return check("microphone", False, None, "no samples")
    peak = 0
    v = mic.view
    for i in range(0, 2 * n, 2):
        x = v[i]
        if x < 0:
            x = -x
        if x > peak:
            peak = x
    # all zero: data line dead; full scale: floating input or a shorted line
    return check("microphone", 0 < peak < 32767, peak, "peak %d of 32767" % peak)


def _gps(hw, clock):
    got = 0
    for _ in range(30):
        got += hw.gps.poll()
        if got >= 2:
            break
        clock.sleep_ms(100)
    nm = hw.gps.nmea
    if got == 0:
        return check("gps", False, 0, "no NMEA sentences from the receiver")
    return check("gps", True, got, "fix" if nm.fix else "sentences but no fix yet (fine indoors)")


def _ring(cfg):
    import os
    from ss.ring import Ring, REC
    try:
        r = Ring(RING_ROOT, segments=2, seg_records=16)
        r.append(1, 1234, 5678, 9)
        r2 = Ring(RING_ROOT, segments=2, seg_records=16)
        buf = bytearray(REC)
        ok = r2.count == 1 and r2.peek(buf, 1) == 1 and buf[0] == 1
        detail = "write + read back"
    except OSError as e:
        ok = False
        detail = "flash error: %s" % e
    finally:
        try:
            for n in os.listdir(RING_ROOT):
                os.remove(RING_ROOT + "/" + n)
            os.rmdir(RING_ROOT)
        except OSError:
            pass
    need = cfg["ring_segments"] * cfg["ring_seg_records"] * REC
    free = None
    try:
        st = os.statvfs("/")
        free = st[0] * st[3]
    except (OSError, AttributeError):
        pass
    if ok and free is not None and free < need:
        ok = False
        detail = "only %d bytes free, the ring needs %d" % (free, need)
    c = check("flash", ok, free, detail)
    c["ring_bytes"] = need
    return c


def _wifi(hw, cfg, clock, timeout_ms):
    import asyncio
    w = hw.wifi(cfg["wifi"], 0)
    up = asyncio.run(w.up(timeout_ms))
    rssi = w.rssi() if up else None
    return check("wifi", up, rssi, ("joined, RSSI %s dBm" % rssi) if up else "could not join any configured network")


def run(cfg, hw, clock, board_name, samples=SAMPLES, wifi=False, pm_warmup_ms=5000, wifi_timeout_ms=20000):
    """Every check for this node's kind and sensors; returns the result object."""
    checks = [check("config", True, cfg["device_id"], "valid")]
    extra = {}
    kind = cfg["kind"]
    sen = cfg["sensors"]
    temp = 2000
    if sen.get("climate"):
        if hw.climate is None:
            checks.append(check("climate", False, None, "%s did not answer at start-up" % sen["climate"]))
        else:
            cl = _climate(hw)
            checks.extend(cl)
            if cl[0]["status"] == PASS and cl[0]["name"] == "temperature":
                temp = cl[0]["value"]
    if kind == "bin_fill":
        if hw.range is None:
            checks.append(check("range", False, None, "%s did not answer at start-up" % sen["range"]))
        else:
            c, m = _range(hw, temp, samples)
            checks.append(c)
            extra["empty_mm"] = m
            extra["readings_mm"] = c["readings"]
    if kind in ("bin_fill", "road") and sen.get("accel"):
        checks.append(_accel(hw) if hw.accel is not None
                      else check("accelerometer", False, None, "%s did not answer at start-up" % sen["accel"]))
    if kind == "air":
        checks.append(_pm(hw, clock, pm_warmup_ms) if hw.pm is not None
                      else check("particulates", False, None, "%s did not answer at start-up" % sen["pm"]))
        if sen.get("co2"):
            checks.append(_co2(hw, clock) if hw.co2 is not None
                          else check("co2", False, None, "%s did not answer at start-up" % sen["co2"]))
    if kind == "noise":
        checks.append(_mic(hw) if hw.mic is not None else check("microphone", False, None, "I2S did not start"))
    if kind == "road":
        checks.append(_gps(hw, clock) if hw.gps is not None else check("gps", False, None, "UART did not start"))
    mv = hw.battery_mv() if hw.battery is not None else None
    checks.append(judge("battery", mv or None, "bat_mv", "%s mV" % mv))
    checks.append(_ring(cfg))
    checks.append(_wifi(hw, cfg, clock, wifi_timeout_ms) if wifi else skip("wifi", "not requested"))
    return result(cfg, board_name, checks, extra)


def main(config_path=None, wifi=False, samples=SAMPLES, clock=None, board=None, pm_warmup_ms=5000):
    """Run the self-test and print its one JSON line; returns the result object."""
    cfg = None
    name = None
    try:
        if board is None:
            import board
        name = getattr(board, "NAME", None)
        from ss import config as C
        try:
            cfg = C.load(config_path or C.PATH)
        except C.ConfigError as e:
            res = result(None, name, [check("config", False, None, str(e))])
            print(json.dumps(res))
            return res
        if clock is None:
            from ss.clock import Clock
            clock = Clock()
        from ss.hw import HW
        hw = HW(cfg, clock, board)
        res = run(cfg, hw, clock, name, samples, wifi, pm_warmup_ms)
    except Exception as e:          # noqa: BLE001 - the CLI must always get its line
        res = result(cfg, name, [check("internal", False, None, "%s: %s" % (type(e).__name__, e))])
    print(json.dumps(res))
    return res
