# StreetSense wire contract, version 1.
#
# This module is the single definition of the contract: topics, device kinds,
# metrics (name, unit, resolution, valid range) and the byte-exact SenML
# encoders.  It is written in the common subset of MicroPython and CPython
# (no typing, no dataclasses, no floats in the encoders) because it runs on the
# sensor nodes, in the simulators and in the backend alike.  The strict
# decoder lives beside it in ``contract/decode.py`` (CPython only).
#
# Values travel as exact decimals.  A driver turns its float into an integer
# ``q`` at the metric's resolution with ``quantize``; from then on everything
# is integer arithmetic, so a 32-bit-float ESP32 and a 64-bit CPython backend
# produce the same bytes for the same reading.

VERSION = 1
PREFIX = "ss/v1/"

UP = "up"          # telemetry: a SenML pack (device -> backend)
STATUS = "status"  # retained device status; also the MQTT last will
CFG = "cfg"        # retained configuration (backend -> device)
CMD = "cmd"        # commands (backend -> device)
ACK = "ack"        # command acknowledgements (device -> backend)
CHANNELS = (UP, STATUS, CFG, CMD, ACK)

CT_JSON = "application/senml+json"
CT_CBOR = "application/senml+cbor"

KINDS = ("bin_fill", "air", "noise", "road")

MAX_PAYLOAD = 65536      # bytes in one MQTT message
MAX_RECORDS = 1024       # records in one pack
MAX_ID_LEN = 64          # device and tenant identifiers

# Metric registry.  The id is the stable small integer used in storage; never
# reuse or renumber one.  Columns: id, name, SenML unit, decimals, min, max,
# kinds that send it ("*" = every kind).  min/max are in units of the metric,
# scaled to integers by 10**decimals for comparison with a quantized value.
# Units follow the IANA SenML registry (RFC 8428, RFC 8798); "ug/m3" is not
# registered there and is stated here instead.
METRICS = (
    # bin fill
    (1, "distance", "m", 3, 0, 10, "bin_fill"),
    (2, "fill", "/", 3, -1, 2, "bin_fill"),
    (3, "temp", "Cel", 2, -50, 150, "bin_fill air noise road"),
    (4, "tilt", "deg", 1, 0, 180, "bin_fill"),
    # air quality
    (10, "pm1", "ug/m3", 1, 0, 2000, "air"),
    (11, "pm25", "ug/m3", 1, 0, 2000, "air"),
    (12, "pm10", "ug/m3", 1, 0, 2000, "air"),
    (13, "rh", "%RH", 1, 0, 100, "air"),
    (14, "co2", "ppm", 0, 0, 40000, "air"),
    # noise, A-weighted sound levels per interval
    (20, "laeq", "dB", 1, 0, 150, "noise"),
    (21, "lamax", "dB", 1, 0, 150, "noise"),
    (22, "l10", "dB", 1, 0, 150, "noise"),
    (23, "l90", "dB", 1, 0, 150, "noise"),
    # road bump event: one event is five records sharing a time
    (30, "bump_g", "m/s2", 2, 0, 300, "road"),
    (31, "bump_dur", "s", 3, 0, 10, "road"),
    (32, "speed", "m/s", 2, 0, 70, "road"),
    (33, "lat", "lat", 6, -90, 90, "road"),
    (34, "lon", "lon", 6, -180, 180, "road"),
    # device health, every kind
    (40, "bat_v", "V", 3, 0, 20, "*"),
    (41, "rssi", "dBm", 0, -150, 0, "*"),
    (42, "uptime", "s", 0, 0, 4000000000, "*"),
    (43, "buffered", "count", 0, 0, 10000000, "*"),
    (44, "errors", "count", 0, 0, 4000000000, "*"),
    (45, "dropped", "count", 0, 0, 4000000000, "*"),
)

_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000)

# name -> row, built once at import
BY_NAME = {}
BY_ID = {}
for _m in METRICS:
    BY_NAME[_m[1]] = _m
    BY_ID[_m[0]] = _m


def metric(name):
    """Return the registry row for ``name`` or raise KeyError."""
    return BY_NAME[name]


def topic(tenant, device_id, channel):
    """Topic for one device channel, e.g. ``ss/v1/leeds/bin-0001/up``."""
    return PREFIX + tenant + "/" + device_id + "/" + channel


def parse_topic(t):
    """Split a topic into (tenant, device_id, channel); ValueError if not ours."""
    if not t.startswith(PREFIX):
        raise ValueError("topic outside ss/v1/")
    parts = t[len(PREFIX):].split("/")
    if len(parts) != 3:
        raise ValueError("topic must be ss/v1/<tenant>/<device>/<channel>")
    tenant, dev, ch = parts
    if not valid_id(tenant) or not valid_id(dev):
        raise ValueError("bad tenant or device id in topic")
    if ch not in CHANNELS:
        raise ValueError("unknown channel " + ch)
    return tenant, dev, ch


def valid_id(s):
    """Identifiers: 1..64 of [a-z0-9-], not starting with '-'."""
    n = len(s)
    if n == 0 or n > MAX_ID_LEN or s[0] == "-":
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def quantize(name, value):
    """Float reading -> integer at the metric's resolution (half away from zero).

    >>> quantize("fill", 0.6254)
    625
    """
    scale = _POW10[BY_NAME[name][3]]
    x = value * scale
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def in_range(row, q):
    """True when the quantized value lies in the metric's valid range."""
    scale = _POW10[row[3]]
    return row[4] * scale <= q <= row[5] * scale


def fmt_decimal(q, dec):
    """Integer ``q`` scaled by 10**dec -> shortest exact decimal text.

    >>> fmt_decimal(21500, 3), fmt_decimal(-5, 2), fmt_decimal(7, 0)
    ('21.5', '-0.05', '7')
    """
    if dec == 0:
        return str(q)
    neg = q < 0
    if neg:
        q = -q
    scale = _POW10[dec]
    whole = q // scale
    frac = q - whole * scale
    s = str(whole)
    if frac:
        f = str(frac)
        f = "0" * (dec - len(f)) + f
        while f[-1] == "0":
            f = f[:-1]
        s = s + "." + f
    return "-" + s if neg else s


def _json_str(s):
    # Identifiers, metric names and units are plain ASCII without quotes or
    # backslashes (checked by valid_id and the registry), so no escaping.
    return '"' + s + '"'


def encode_json(device_id, bt, seq, records):
    """Encode one SenML JSON pack.

    ``bt`` is the base time (integer Unix seconds), ``seq`` the device's batch
    counter, ``records`` a sequence of (metric name, quantized value, offset in
    milliseconds from ``bt``).  Returns bytes.

    >>> encode_json("bin-0001", 1767225600, 7, [("fill", 625, 0), ("temp", 2150, 1500)])
    b'[{"bn":"bin-0001:","bt":1767225600,"bseq":7,"n":"fill","u":"/","v":0.625},{"n":"temp","u":"Cel","v":21.5,"t":1.5}]'
    """
    parts = []
    first = True
    for name, q, dt_ms in records:
        row = BY_NAME[name]
        if first:
            head = ('{"bn":' + _json_str(device_id + ":") + ',"bt":' + str(bt) +
                    ',"bseq":' + str(seq) + ",")
            first = False
        else:
            head = "{"
        rec = (head + '"n":' + _json_str(name) + ',"u":' + _json_str(row[2]) +
               ',"v":' + fmt_decimal(q, row[3]))
        if dt_ms:
            rec = rec + ',"t":' + fmt_decimal(dt_ms, 3)
        parts.append(rec + "}")
    if first:
        raise ValueError("empty pack")
    return ("[" + ",".join(parts) + "]").encode()


# --- CBOR (RFC 8949), only what SenML needs -------------------------------
# SenML CBOR labels (RFC 8428 section 6): bver -1, bn -2, bt -3, n 0, u 1,
# v 2, t 6.  "bseq" is our extension label and travels as a text key.
# Non-integer values use decimal fractions (tag 4, [exponent, mantissa]) so the
# bytes never depend on the sender's float width.

def _cbor_head(major, n, out):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        for sh in (24, 16, 8, 0):
            out.append((n >> sh) & 0xFF)
    else:
        out.append(mt | 27)
        for sh in (56, 48, 40, 32, 24, 16, 8, 0):
            out.append((n >> sh) & 0xFF)


def _cbor_int(n, out):
    if n >= 0:
        _cbor_head(0, n, out)
    else:
        _cbor_head(1, -1 - n, out)


def _cbor_text(s, out):
    b = s.encode()
    _cbor_head(3, len(b), out)
    out.extend(b)


def _cbor_decimal(q, dec, out):
    # Shortest exact form: strip trailing zeros, integer if nothing remains.
    while dec and q % 10 == 0:
        q //= 10
        dec -= 1
    if dec == 0:
        _cbor_int(q, out)
    else:
        out.append(0xC4)      # tag 4: decimal fraction
        out.append(0x82)      # array(2)
        _cbor_int(-dec, out)
        _cbor_int(q, out)


def encode_cbor(device_id, bt, seq, records):
    """Encode one SenML CBOR pack (same arguments as ``encode_json``).

    >>> encode_cbor("d1", 1767225600, 1, [("fill", 500, 0)]).hex()
    '81a6216364313a221a6955b900646273657101006466696c6c01612f02c4822005'
    """
    out = bytearray()
    n = len(records)
    if n == 0:
        raise ValueError("empty pack")
    _cbor_head(4, n, out)
    first = True
    for name, q, dt_ms in records:
        row = BY_NAME[name]
        nkeys = 3 + (1 if dt_ms else 0) + (3 if first else 0)
        _cbor_head(5, nkeys, out)
        if first:
            _cbor_int(-2, out)
            _cbor_text(device_id + ":", out)
            _cbor_int(-3, out)
            _cbor_int(bt, out)
            _cbor_text("bseq", out)
            _cbor_int(seq, out)
            first = False
        _cbor_int(0, out)
        _cbor_text(name, out)
        _cbor_int(1, out)
        _cbor_text(row[2], out)
        _cbor_int(2, out)
        _cbor_decimal(q, row[3], out)
        if dt_ms:
            _cbor_int(6, out)
            _cbor_decimal(dt_ms, 3, out)
    return bytes(out)


def encode_status(state, fw, t, next_wake=0, bat_mv=0, rssi=0, buffered=0, errors=0):
    """Retained status / last-will payload (JSON object, fixed key order).

    ``state`` is "online", "sleeping" or "offline"; ``next_wake`` (Unix s, 0 =
    unknown) lets the backend judge silence against the device's own plan.

    >>> encode_status("sleeping", "0.1.0", 1767225600, 1767229200, 3612, -67, 12, 0)
    b'{"state":"sleeping","fw":"0.1.0","t":1767225600,"next_wake":1767229200,"bat_v":3.612,"rssi":-67,"buffered":12,"errors":0}'
    """
    return ('{"state":' + _json_str(state) + ',"fw":' + _json_str(fw) +
            ',"t":' + str(t) + ',"next_wake":' + str(next_wake) +
            ',"bat_v":' + fmt_decimal(bat_mv, 3) + ',"rssi":' + str(rssi) +
            ',"buffered":' + str(buffered) + ',"errors":' + str(errors) + "}").encode()
