# NMEA GPS receiver on a UART (u-blox NEO-6M/M8N, Quectel L76 ...).
#
# poll() drains the UART into a fixed line buffer and hands each complete
# sentence to the ss.nmea parser; returns the number of sentences accepted.

from ss.nmea import NMEA

_LINE = 100


class GPS:
    def __init__(self, uart, parser=None):
        self.uart = uart
        self.nmea = parser or NMEA()
        self._rx = bytearray(128)
        self._line = bytearray(_LINE)
        self._n = 0

    def poll(self):
        got = 0
        while self.uart.any():
            k = self.uart.readinto(self._rx) or 0
            if not k:
                break
            rx = self._rx
            line = self._line
            for i in range(k):
                c = rx[i]
                if c == 36:                 # '$' starts a sentence
                    self._n = 0
                if c == 10:
                    if self._n and self.nmea.feed(line, self._n):
                        got += 1
                    self._n = 0
                elif self._n < _LINE:
                    line[self._n] = c
                    self._n += 1
        return got
