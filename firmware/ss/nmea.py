# NMEA 0183 parser for GGA and RMC sentences (any talker: GP, GN, GL, GA).
#
# Works in place on a bytearray line, allocates nothing, and keeps every
# number an integer: latitude/longitude in micro-degrees computed from the
# sentence's digits (ddmm.mmmmmm -> dd * 1e6 + round(minutes * 1e6 / 60)), so a
# 32-bit-float MCU reports exactly what a 64-bit host would.  Speed in cm/s,
# times as device seconds (Unix - 2020-01-01, see clock.py).
#
# feed(buf, n) returns GGA, RMC, or 0 for anything else / a bad checksum
# (counted in .bad).

from array import array
from micropython import const

GGA = const(1)
RMC = const(2)
_MAXF = const(20)
_DAYS_2020 = const(18262)      # days from 1970-01-01 to 2020-01-01


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + 9 if m <= 2 else m - 3) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _hex(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def checksum_ok(buf, n):
    """'$...*hh' with hh the XOR of the bytes between '$' and '*'."""
    if n < 4 or buf[0] != 36:          # '$'
        return False
    x = 0
    i = 1
    while i < n and buf[i] != 42:      # '*'
        x ^= buf[i]
        i += 1
    if i + 2 >= n:                     # no '*' or no two hex digits
        return False
    h = _hex(buf[i + 1])
    l = _hex(buf[i + 2])
    return h >= 0 and l >= 0 and (h << 4 | l) == x


class NMEA:
    def __init__(self):
        self._f = array("H", [0] * (_MAXF + 1))
        self.nf = 0
        self.good = 0
        self.bad = 0
        self.fix = False      # last GGA had a fix / last RMC status was A
        self.lat = 0          # micro-degrees, north positive
        self.lon = 0          # micro-degrees, east positive
        self.speed = 0        # cm/s (RMC)
        self.sats = 0
        self.hdop = 0         # tenths
        self.alt = 0          # decimetres above MSL (GGA)
        self.sod = -1         # UTC seconds of day of the last sentence
        self.ms = 0           # ... and milliseconds
        self.time = 0         # device seconds of the last RMC with a date (0 = none)

    # --- fields --------------------------------------------------------------
    def _split(self, buf, n):
        f = self._f
        k = 0
        f[0] = 1                           # after '$'
        i = 1
        while i < n and k < _MAXF - 1:
            c = buf[i]
            if c == 44 or c == 42:         # ',' or '*'
                k += 1
                f[k] = i + 1
                if c == 42:
                    break
            i += 1
        self.nf = k

    def _end(self, k):
        return self._f[k + 1] - 1

    def _empty(self, k):
        return k >= self.nf or self._f[k] >= self._f[k + 1] - 1

    def _int(self, buf, k):
        a = self._f[k]
        b = self._f[k + 1] - 1
        v = 0
        neg = False
        while a < b:
            c = buf[a]
            if c == 45:
                neg = True
            elif 48 <= c <= 57:
                v = v * 10 + c - 48
            elif c == 46:
                break
            a += 1
        return -v if neg else v

    def _fixed(self, buf, k, dec):
        """Field k as an integer scaled by 10**dec, rounded half up."""
        a = self._f[k]
        b = self._f[k + 1] - 1
        v = 0
        neg = False
        frac = -1
        rnd = 0
        while a < b:
            c = buf[a]
            if c == 45:
                neg = True
            elif c == 46:
                frac = 0
            elif 48 <= c <= 57:
                if frac < 0:
                    v = v * 10 + c - 48
                elif frac < dec:
                    v = v * 10 + c - 48
                    frac += 1
                elif frac == dec:
                    rnd = 1 if c >= 53 else 0
                    frac += 1
            a += 1
        if frac < 0:
            frac = 0
        while frac < dec:
            v *= 10
            frac += 1
        v += rnd
        return -v if neg else v

    def _latlon(self, buf, k, degdigits):
        """ddmm.mmmmmm (or dddmm...) field k -> micro-degrees (unsigned)."""
        a = self._f[k]
        if self._end(k) - a < degdigits:
            return -1
        deg = 0
        for i in range(degdigits):
            c = buf[a + i] - 48
            if not 0 <= c <= 9:
                return -1
            deg = deg * 10 + c
        # minutes with 6 decimals, from the same digits (no float)
        save = self._f[k]
        self._f[k] = a + degdigits
        m6 = self._fixed(buf, k, 6)
        self._f[k] = save
        if not 0 <= m6 < 60000000:
            return -1
        return deg * 1000000 + (m6 + 30) // 60

    def _hemi(self, buf, k, neg):
        return (not self._empty(k)) and buf[self._f[k]] == neg

    def _utc(self, buf, k):
        if self._empty(k) or self._end(k) - self._f[k] < 6:
            return False
        a = self._f[k]
        hh = (buf[a] - 48) * 10 + buf[a + 1] - 48
        mm = (buf[a + 2] - 48) * 10 + buf[a + 3] - 48
        ss = (buf[a + 4] - 48) * 10 + buf[a + 5] - 48
        if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61):
            return False
        self.sod = hh * 3600 + mm * 60 + ss
        self.ms = 0
        if self._end(k) > a + 6 and buf[a + 6] == 46:
            save = self._f[k]
            self._f[k] = a + 6
            self.ms = self._fixed(buf, k, 3)
            self._f[k] = save
        return True

    # --- sentences -----------------------------------------------------------
    def feed(self, buf, n):
        while n and buf[n - 1] in (10, 13):
            n -= 1
        if not checksum_ok(buf, n):
            self.bad += 1
            return 0
        if n < 7:
            return 0
        self._split(buf, n)
        a, b, c = buf[3], buf[4], buf[5]
        if a == 71 and b == 71 and c == 65:          # GGA
            typ = GGA
        elif a == 82 and b == 77 and c == 67:        # RMC
            typ = RMC
        else:
            self.good += 1
            return 0
        self.good += 1
        if typ == GGA:
            # 1 time, 2 lat, 3 N/S, 4 lon, 5 E/W, 6 quality, 7 sats, 8 hdop, 9 alt
            self._utc(buf, 1)
            q = 0 if self._empty(6) else self._int(buf, 6)
            self.fix = q > 0
            if self.fix and not self._empty(2) and not self._empty(4):
                self._position(buf, 2)
            self.sats = 0 if self._empty(7) else self._int(buf, 7)
            self.hdop = 0 if self._empty(8) else self._fixed(buf, 8, 1)
            self.alt = 0 if self._empty(9) else self._fixed(buf, 9, 1)
            return GGA
        # RMC: 1 time, 2 status, 3 lat, 4 N/S, 5 lon, 6 E/W, 7 knots, 8 course, 9 ddmmyy
        ok = self._utc(buf, 1)
        self.fix = (not self._empty(2)) and buf[self._f[2]] == 65    # 'A'
        if self.fix:
            if not self._empty(3) and not self._empty(5):
                self._position(buf, 3)
            kn = 0 if self._empty(7) else self._fixed(buf, 7, 3)    # knots * 1000
            self.speed = (kn * 463 + 4500) // 9000                  # 1 kn = 463/9 cm/s
        if ok and not self._empty(9) and self._end(9) - self._f[9] >= 6:
            d = self._f[9]
            dd = (buf[d] - 48) * 10 + buf[d + 1] - 48
            mo = (buf[d + 2] - 48) * 10 + buf[d + 3] - 48
            yy = (buf[d + 4] - 48) * 10 + buf[d + 5] - 48
            if 1 <= dd <= 31 and 1 <= mo <= 12:
                days = days_from_civil(2000 + yy, mo, dd) - _DAYS_2020
                self.time = days * 86400 + self.sod
        return RMC

    def _position(self, buf, k):
        lat = self._latlon(buf, k, 2)
        lon = self._latlon(buf, k + 2, 3)
        if lat < 0 or lon < 0 or lat > 90000000 or lon > 180000000:
            self.fix = False
            return
        self.lat = -lat if self._hemi(buf, k + 1, 83) else lat     # 'S'
        self.lon = -lon if self._hemi(buf, k + 3, 87) else lon     # 'W'
