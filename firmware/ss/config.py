# Node configuration: one JSON file on flash, written at provisioning.
#
# load() reads and validates it at boot and returns a complete dict (defaults
# filled in) or raises ConfigError listing every problem as "key.path: what is
# wrong", so a bad file is fixed in one round.  merge_remote() applies an
# update from the retained cfg topic: only the REMOTE sections may change
# remotely, never identity, Wi-Fi or broker credentials.  Pure: no hardware.

import json

PATH = "/config.json"

KINDS = ("bin_fill", "air", "noise", "road")
FORMATS = ("cbor", "json")

# Per-kind defaults.  sample_s: seconds between samples (noise/road: length of
# one reporting interval); tx_s: seconds between batched transmissions.
CADENCE = {
    "bin_fill": {"sample_s": 600, "tx_s": 14400, "health_s": 14400, "stage": 24},
    "air": {"sample_s": 300, "tx_s": 3600, "health_s": 3600, "stage": 24},
    "noise": {"sample_s": 60, "tx_s": 900, "health_s": 3600, "stage": 0},
    "road": {"sample_s": 60, "tx_s": 300, "health_s": 3600, "stage": 0},
}

SENSORS = {
    "bin_fill": {"range": "jsn_sr04t", "accel": "lis3dh", "climate": "sht3x"},
    "air": {"pm": "pms5003", "climate": "sht3x", "co2": None},
    "noise": {"mic": "inmp441", "climate": None},
    "road": {"accel": "lis3dh", "gps": "nmea"},
}

CHOICES = {
    "range": ("jsn_sr04t", "a02yyuw", "vl53l1x"),
    "accel": ("lis3dh", "adxl345", None),
    "climate": ("sht3x", "bme280", None),
    "pm": ("pms5003", "sds011"),
    "co2": ("scd4x", None),
    "mic": ("inmp441", "ics43434"),
    "gps": ("nmea",),
}

THRESHOLDS = {
    "fill": 0.8,          # fraction: transmit at once when reached
    "temp_c": 60.0,       # absolute temperature alarm (fire risk)
    "temp_rise_c": 15.0,  # rise since the previous sample
    "tilt_deg": 60.0,     # lid open / bin knocked over
    "pm25": 55.0,         # ug/m3
    "laeq": 85.0,         # dB per interval
    "bump_ms2": 6.0,      # vertical peak (m/s2) at ref_speed
}

CALIBRATION = {
    "empty_mm": 1000,     # sensor to bin floor when empty
    "full_mm": 200,       # sensor to rubbish when "full"
    "pings": 7,           # range readings per sample (median)
    "mic_dbfs": -26.0,    # mic sensitivity: dBFS at 94 dB SPL, 1 kHz
    "mic_offset_db": 0.0, # field calibration against a class 1 meter
    "mic_rate": 16000,
    "accel_hz": 100,
    "ref_speed": 10.0,    # m/s, bump peaks are judged at this speed
    "min_speed": 2.0,     # m/s, no bump detection below
    "bump_min_ms": 20,
    "bump_max_ms": 800,
    "bat_ratio": 2.0,     # battery divider ratio (board default if 0)
}

REMOTE = ("cadence", "thresholds", "calibration", "format", "rev")


class ConfigError(ValueError):
    pass


def _num(errs, d, key, path, lo, hi, integer=False):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        errs.append("%s.%s: must be %s" % (path, key, "an integer" if integer else "a number"))
    elif not lo <= v <= hi:
        errs.append("%s.%s: %s outside %s..%s" % (path, key, v, lo, hi))


def _str(errs, d, key, path, required=True, maxlen=128):
    v = d.get(key)
    if v is None or v == "":
        if required:
            errs.append("%s%s: required" % (path, key))
        return
    if not isinstance(v, str) or len(v) > maxlen:
        errs.append("%s%s: must be text of at most %d characters" % (path, key, maxlen))


def _section(errs, cfg, name, defaults):
    got = cfg.get(name)
    if got is None:
        got = {}
    if not isinstance(got, dict):
        errs.append(name + ": must be an object")
        got = {}
    out = dict(defaults)
    for k in got:
        if k not in defaults:
            errs.append("%s.%s: unknown setting" % (name, k))
        else:
            out[k] = got[k]
    return out


def _valid_id(s):
    if not isinstance(s, str) or not 0 < len(s) <= 64 or s[0] == "-":
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def validate(raw):
    """Return the complete configuration or raise ConfigError."""
    errs = []
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a JSON object")
    known = ("wifi", "mqtt", "tenant", "device_id", "kind", "ntp_host", "board",
             "cadence", "thresholds", "calibration", "sensors", "format", "rev",
             "ring_segments", "ring_seg_records", "batch", "wdt_ms")
    for k in raw:
        if k not in known:
            errs.append(k + ": unknown setting")
    cfg = {}
    for k in ("tenant", "device_id"):
        if not _valid_id(raw.get(k)):
            errs.append(k + ": 1-64 characters of a-z, 0-9 and '-', not starting with '-'")
        cfg[k] = raw.get(k)
    kind = raw.get("kind")
    if kind not in KINDS:
        errs.append("kind: must be one of " + ", ".join(KINDS))
        kind = "bin_fill"
    cfg["kind"] = kind

    wifi = raw.get("wifi")
    if isinstance(wifi, dict):
        wifi = [wifi]
    if not isinstance(wifi, list) or not wifi:
        errs.append("wifi: required, {ssid, password} or a list of them")
        wifi = []
    nets = []
    for i, w in enumerate(wifi):
        p = "wifi[%d]." % i
        if not isinstance(w, dict):
            errs.append(p[:-1] + ": must be an object")
            continue
        _str(errs, w, "ssid", p, maxlen=32)
        _str(errs, w, "password", p, required=False, maxlen=64)
        nets.append((w.get("ssid"), w.get("password") or ""))
    cfg["wifi"] = nets

    m = raw.get("mqtt")
    if not isinstance(m, dict):
        errs.append("mqtt: required, {host, port, tls, username, password}")
        m = {}
    mq = {"host": m.get("host"), "tls": m.get("tls", True), "username": m.get("username"),
          "password": m.get("password"), "keepalive": m.get("keepalive", 60),
          "ca": m.get("ca")}
    mq["port"] = m.get("port", 8883 if mq["tls"] else 1883)
    for k in m:
        if k not in mq:
            errs.append("mqtt." + k + ": unknown setting")
    _str(errs, m, "host", "mqtt.")
    _str(errs, m, "username", "mqtt.")
    _str(errs, m, "password", "mqtt.")
    if not isinstance(mq["tls"], bool):
        errs.append("mqtt.tls: must be true or false")
    _num(errs, mq, "port", "mqtt", 1, 65535, True)
    _num(errs, mq, "keepalive", "mqtt", 0, 3600, True)
    cfg["mqtt"] = mq

    cfg["ntp_host"] = raw.get("ntp_host", "pool.ntp.org")
    _str(errs, cfg, "ntp_host", "")
    cfg["board"] = raw.get("board")

    cad = _section(errs, raw, "cadence", CADENCE[kind])
    for k, lo, hi in (("sample_s", 1, 86400), ("tx_s", 10, 7 * 86400),
                      ("health_s", 60, 7 * 86400), ("stage", 0, 100)):
        _num(errs, cad, k, "cadence", lo, hi, True)
    cfg["cadence"] = cad

    th = _section(errs, raw, "thresholds", THRESHOLDS)
    for k in th:
        _num(errs, th, k, "thresholds", -50, 1000)
    cfg["thresholds"] = th

    cal = _section(errs, raw, "calibration", CALIBRATION)
    for k, lo, hi, integer in (("empty_mm", 50, 10000, True), ("full_mm", 0, 10000, True),
                               ("pings", 1, 31, True), ("mic_dbfs", -60, 0, False),
                               ("mic_offset_db", -20, 20, False), ("mic_rate", 8000, 48000, True),
                               ("accel_hz", 100, 1600, True), ("ref_speed", 1, 70, False),
                               ("min_speed", 0, 70, False), ("bump_min_ms", 5, 5000, True),
                               ("bump_max_ms", 10, 10000, True), ("bat_ratio", 0, 20, False)):
        _num(errs, cal, k, "calibration", lo, hi, integer)
    if not errs and cal["full_mm"] >= cal["empty_mm"]:
        errs.append("calibration.full_mm: must be less than empty_mm")
    if not errs and cal["bump_min_ms"] >= cal["bump_max_ms"]:
        errs.append("calibration.bump_min_ms: must be less than bump_max_ms")
    cfg["calibration"] = cal

    sen = _section(errs, raw, "sensors", SENSORS[kind])
    for k in sen:
        if k in CHOICES and sen[k] not in CHOICES[k]:
            errs.append("sensors.%s: must be one of %s" % (k, ", ".join(str(c) for c in CHOICES[k])))
    cfg["sensors"] = sen

    cfg["format"] = raw.get("format", "cbor")
    if cfg["format"] not in FORMATS:
        errs.append("format: must be cbor or json")
    for k, dflt, lo, hi in (("rev", 0, 0, 2 ** 30), ("ring_segments", 16, 2, 256),
                            ("ring_seg_records", 256, 16, 4096), ("batch", 48, 1, 256),
                            ("wdt_ms", 8000, 1000, 8300)):
        cfg[k] = raw.get(k, dflt)
        _num(errs, cfg, k, "", lo, hi, True)
    if errs:
        raise ConfigError("invalid config: " + "; ".join(e.lstrip(".") for e in errs))
    return cfg


def load(path=PATH):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("no config file at " + path + " (provision the node first)")
    except ValueError as e:
        raise ConfigError(path + " is not valid JSON: " + str(e))
    return validate(raw)


def raw_of(cfg):
    """The JSON form of a validated config (what save() writes)."""
    out = dict(cfg)
    out["wifi"] = [{"ssid": s, "password": p} for s, p in cfg["wifi"]]
    return out


def merge_remote(cfg, update):
    """Validated config with ``update`` (from the cfg topic) applied.

    Returns None when the update is not newer than the running config
    (retained messages arrive again on every connect).  Raises ConfigError.
    """
    if not isinstance(update, dict):
        raise ConfigError("cfg update: must be a JSON object")
    rev = update.get("rev")
    if isinstance(rev, bool) or not isinstance(rev, int):
        raise ConfigError("cfg update: rev (integer) required")
    if rev <= cfg["rev"]:
        return None
    raw = raw_of(cfg)
    for k in update:
        if k not in REMOTE:
            raise ConfigError("cfg update: %s cannot be changed remotely" % k)
        v = update[k]
        if isinstance(v, dict):
            sect = dict(raw[k])
            for kk in v:
                sect[kk] = v[kk]
            v = sect
        raw[k] = v
    return validate(raw)


def save(cfg, path=PATH):
    """Write atomically: a power cut leaves the old or the new file, never half."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(raw_of(cfg), f)
    import os
    try:
        os.rename(tmp, path)
    except OSError:         # FAT will not rename over an existing file
        os.remove(path)
        os.rename(tmp, path)
