# Battery / supply voltage through a resistor divider on an ADC pin.
#
# ESP32: ADC1 pin (ADC2 is unusable while Wi-Fi is on), read_uv() gives the
# factory-calibrated voltage.  Pico W: VSYS/3 on ADC3 (GPIO29, shared with
# the Wi-Fi chip's SPI clock: the board profile's ``prepare`` callable makes
# the pin an ADC input for the read and hands it back).

from array import array
from ss import fill


class Battery:
    def __init__(self, adc, ratio=2.0, samples=9, vref_mv=3300, prepare=None):
        self.adc = adc
        self.ratio = ratio
        self.vref = vref_mv
        self.prepare = prepare
        self._buf = array("i", [0] * samples)
        self._uv = hasattr(adc, "read_uv")

    def read_mv(self):
        if self.prepare:
            self.prepare(True)
        buf = self._buf
        n = len(buf)
        try:
            for i in range(n):
                if self._uv:
                    buf[i] = self.adc.read_uv() // 1000
                else:
                    buf[i] = self.adc.read_u16() * self.vref // 65535
        finally:
            if self.prepare:
                self.prepare(False)
        return int(fill.median(buf, n) * self.ratio + 0.5)
