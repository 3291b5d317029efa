# JSN-SR04T / AJ-SR04M waterproof ultrasonic ranger, trigger/echo mode.
#
# Each ping: a 20 us trigger pulse, then the echo pin stays high for the
# round-trip time.  read_mm() takes ``pings`` pings ~60 ms apart (the
# transducer rings for ~50 ms), keeps the good ones and returns the median
# distance at the speed of sound for the given air temperature (-1 = no echo).

import time
from array import array
from ss import fill

_TIMEOUT_US = 40000      # ~6.8 m round trip; beyond the sensor's 4.5 m range


class JSNSR04T:
    def __init__(self, trig, echo, pings=7, pulse=None, sleep_ms=None):
        self.trig = trig
        self.echo = echo
        self.pings = pings
        if pulse is None:
            from machine import time_pulse_us as pulse
        self._pulse = pulse
        self._sleep = sleep_ms or time.sleep_ms
        self._us = getattr(time, "sleep_us", self._sleep)
        self._buf = array("i", [0] * pings)
        self.errors = 0
        trig.value(0)

    def ping_us(self):
        self.trig.value(1)
        self._us(20)
        self.trig.value(0)
        t = self._pulse(self.echo, 1, _TIMEOUT_US)
        return t if t > 0 else -1

    def read_mm(self, temp_c100=2000):
        c10 = fill.sound_speed10(temp_c100)
        buf = self._buf
        n = 0
        for i in range(self.pings):
            if i:
                self._sleep(60)
            t = self.ping_us()
            if t > 0:
                buf[n] = t
                n += 1
        if n * 2 <= self.pings:            # most pings lost: no reading
            self.errors += 1
            return -1
        return fill.echo_mm(fill.median(buf, n), c10)
