# Road bump / pothole detector for the vehicle node (pure, integer, no allocation).
#
# Input: vertical acceleration in mm/s2 at a fixed rate (>= 100 Hz) plus the
# current GPS speed.  The slowly varying part (gravity, road grade, sensor
# offset) is tracked by an integer moving average that freezes during an
# event; an event starts when the deviation exceeds half the speed-scaled
# threshold and ends after ``quiet`` ms below it.  Accepted when
#   * min_ms <= duration <= max_ms   (rejects single-sample spikes and long
#     undulations, braking pitch, speed humps taken slowly),
#   * speed >= min_speed             (no door slams in a parked vehicle), and
#   * peak * ref_speed / speed >= threshold   (speed normalisation: the same
#     pothole shakes a vehicle harder the faster it is driven over, so the peak
#     is judged as if driven at ref_speed).
# An accepted event leaves peak (mm/s2, raw), duration (ms), the speed (cm/s)
# and its start sample index in the detector's attributes and ``pending``.

from micropython import const

_SHIFT = const(7)        # baseline time constant: 128 samples


class BumpDetector:
    def __init__(self, rate_hz=100, threshold_mms2=6000, ref_cms=1000, min_cms=200,
                 min_ms=20, max_ms=800, quiet_ms=100):
        self.dt = 1000 // rate_hz
        self.thr = threshold_mms2
        self.ref = ref_cms
        self.min_v = min_cms
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.quiet = quiet_ms // self.dt
        self.base = 0
        self.primed = 0
        self.speed = 0
        self.n = 0              # samples seen
        self._in = False
        self._start = 0
        self._lastabove = 0
        self._peak = 0
        self._below = 0
        self.pending = False
        self.peak = 0
        self.dur = 0
        self.at = 0             # sample index of the event start
        self.ev_speed = 0
        self.rejected = 0

    def set_speed(self, cms):
        self.speed = cms

    def _trigger(self):
        v = self.speed if self.speed > self.min_v else self.min_v
        # half the threshold, scaled to the current speed
        return self.thr * v // (2 * self.ref)

    def feed(self, a):
        """One vertical sample (mm/s2).  Returns True when an event was accepted."""
        n = self.n
        self.n = n + 1
        if self.primed < 64:                 # settle the baseline first
            self.base = a if self.primed == 0 else self.base + ((a - self.base) >> 3)
            self.primed += 1
            return False
        d = a - self.base
        if d < 0:
            d = -d
        trig = self._trigger()
        if not self._in:
            if d >= trig and self.speed >= self.min_v:
                self._in = True
                self._start = n
                self._lastabove = n
                self._peak = d
                self._below = 0
            else:
                self.base += (a - self.base) >> _SHIFT
            return False
        if d >= trig:
            self._lastabove = n
            self._below = 0
            if d > self._peak:
                self._peak = d
            return False
        self._below += 1
        if self._below < self.quiet:
            return False
        self._in = False
        dur = (self._lastabove - self._start + 1) * self.dt
        v = self.speed
        ok = (self.min_ms <= dur <= self.max_ms and v >= self.min_v
              and self._peak * self.ref >= self.thr * v)
        if not ok:
            self.rejected += 1
            return False
        self.pending = True
        self.peak = self._peak
        self.dur = dur
        self.at = self._start
        self.ev_speed = v
        return True
