# Sound level statistics for the noise node (pure; floats only per block).
#
# The microphone task hands in the A-weighted energy of short blocks.  Levels:
#   fast level : Leq over 125 ms (LAmax is the highest one in the interval; an
#                125 ms Leq stands in for the exponential "F" time weighting)
#   1 s level  : LAeq over 1 s; L10 / L90 of the interval are taken from these
#                (nearest rank on a 0.1 dB histogram: L10 is the level exceeded
#                by the top 10 % of seconds, L90 by 90 %)
#   LAeq       : energy mean over the whole interval.
# Results are integers in 0.1 dB, ready for the contract (laeq, lamax, l10, l90).

import math
from array import array
from micropython import const

_NBINS = const(1501)          # 0.0 .. 150.0 dB in 0.1 dB


def level_db(mean_sq, offset_db):
    if mean_sq <= 0:
        return 0.0
    return 10.0 * math.log10(mean_sq) + offset_db


def offset_db(mic_dbfs, g1k, full_scale=32768, cal_db=0.0):
    """dB to add to 10*log10(mean square of int16 samples) to get dB SPL.

    A 1 kHz tone at 94 dB SPL reads ``mic_dbfs`` relative to a full-scale
    sine (mean square full_scale**2 / 2); ``g1k`` is the filter's gain at 1 kHz.
    """
    return 94.0 - mic_dbfs - 10.0 * math.log10(full_scale * full_scale / 2.0) - 20.0 * math.log10(g1k) + cal_db


def q01(db):
    """dB -> integer tenths, half away from zero, clamped to 0..150 dB."""
    v = int(db * 10 + 0.5) if db >= 0 else 0
    return v if v <= 1500 else 1500


class Levels:
    def __init__(self, fs, offset, fast_per_s=8):
        self.fs = fs
        self.off = offset
        self.fast_n = fs // fast_per_s      # samples per fast period
        self.hist = array("H", [0] * _NBINS)
        self.reset()
        self._fe = 0.0                      # energy / samples of the running fast period
        self._fn = 0
        self._se = 0.0                      # ... of the running second
        self._sn = 0

    def reset(self):
        h = self.hist
        for i in range(_NBINS):
            h[i] = 0
        self.secs = 0
        self.sum_ms = 0.0                   # sum of 1 s mean squares
        self.max_fast = -1                  # tenths of dB

    def add(self, energy, n):
        """Energy (sum of squares) of the next n samples."""
        self._fe += energy
        self._fn += n
        if self._fn >= self.fast_n:
            lf = q01(level_db(self._fe / self._fn, self.off))
            if lf > self.max_fast:
                self.max_fast = lf
            self._fe = 0.0
            self._fn = 0
        self._se += energy
        self._sn += n
        if self._sn >= self.fs:
            ms = self._se / self._sn
            self.sum_ms += ms
            self.hist[q01(level_db(ms, self.off))] += 1
            self.secs += 1
            self._se = 0.0
            self._sn = 0

    def rank(self, pct):
        """Level (tenths) exceeded by pct % of the seconds, nearest rank."""
        n = self.secs
        if n == 0:
            return 0
        k = (n * pct + 99) // 100          # rank from the top, >= 1
        if k < 1:
            k = 1
        cum = 0
        h = self.hist
        i = _NBINS - 1
        while i >= 0:
            cum += h[i]
            if cum >= k:
                return i
            i -= 1
        return 0

    def report(self):
        """(laeq, lamax, l10, l90) in tenths of dB, or None without a full second."""
        if self.secs == 0:
            return None
        laeq = q01(level_db(self.sum_ms / self.secs, self.off))
        out = (laeq, max(self.max_fast, laeq), self.rank(10), self.rank(90))
        self.reset()
        return out
