# Bin fill: distance to the rubbish -> fill fraction, air temperature (fire
# risk, and the speed of sound), tilt from an accelerometer (lid open, bin
# knocked over).

from array import array
from ss import fill
from ss import metrics as M
from ss.state import PREV_TEMP, E_SENSOR

CONTINUOUS = False


class BinFill:
    def __init__(self, node):
        self.node = node
        cal = node.cfg["calibration"]
        th = node.cfg["thresholds"]
        self.empty = cal["empty_mm"]
        self.full = cal["full_mm"]
        self.th_fill = int(th["fill"] * 1000 + 0.5)
        self.th_temp = int(th["temp_c"] * 100 + 0.5)
        self.th_rise = int(th["temp_rise_c"] * 100 + 0.5)
        self.th_tilt = int(th["tilt_deg"] * 10 + 0.5)
        self._xyz = array("i", [0, 0, 0])

    async def sample(self, t):
        node = self.node
        hw = node.hw
        st = node.state
        urgent = False
        temp = 2000                       # 20 degC for the sound speed if unknown
        if hw.climate is not None:
            if hw.climate.read():
                temp = hw.climate.t
                node.add(M.TEMP, temp, t)
                prev = st.v[PREV_TEMP]
                if st.alarm(1, temp >= self.th_temp or (prev and temp - prev >= self.th_rise)):
                    urgent = True
                st.v[PREV_TEMP] = temp if temp else 1
            else:
                st.error(E_SENSOR)
        if hw.range is not None:
            d = hw.range.read_mm(temp)
            if d >= 0:
                f = fill.fill_milli(d, self.empty, self.full)
                node.add(M.DISTANCE, d, t)
                node.add(M.FILL, f, t)
                if st.alarm(2, f >= self.th_fill):
                    urgent = True
            else:
                st.error(E_SENSOR)
        if hw.accel is not None:
            try:
                hw.accel.read(self._xyz)
                a = self._xyz
                tilt = fill.tilt_deg10(a[0], a[1], a[2])
                node.add(M.TILT, tilt, t)
                if st.alarm(4, tilt >= self.th_tilt):
                    urgent = True
            except OSError:
                st.error(E_SENSOR)
        return urgent
