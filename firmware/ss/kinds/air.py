# Air quality: particulates (PMS5003 or SDS011, fan warmed up first),
# temperature / humidity (SHT3x or BME280), optional CO2 (SCD4x).

from ss import metrics as M
from ss.state import E_SENSOR

CONTINUOUS = False


class Air:
    def __init__(self, node):
        self.node = node
        self.th_pm25 = int(node.cfg["thresholds"]["pm25"] * 10 + 0.5)
        co2 = node.hw.co2
        if co2 is not None and node.state.cold:
            co2.start()                  # periodic mode; keeps running across sleeps

    async def sample(self, t):
        node = self.node
        hw = node.hw
        st = node.state
        urgent = False
        pm = hw.pm
        if pm is not None:
            pm.wake()
            await node.wait(pm.warmup_ms)
            if pm.read():
                v = pm.pm
                if getattr(pm, "pm10x", None) is not None:      # SDS011: 0.1 ug/m3
                    node.add(M.PM25, pm.pm10x[0], t)
                    node.add(M.PM10, pm.pm10x[1], t)
                    p25 = pm.pm10x[0]
                else:
                    node.add(M.PM1, v[0] * 10, t)
                    node.add(M.PM25, v[1] * 10, t)
                    node.add(M.PM10, v[2] * 10, t)
                    p25 = v[1] * 10
                if st.alarm(1, p25 >= self.th_pm25):
                    urgent = True
            else:
                st.error(E_SENSOR)
            pm.sleep()
        if hw.climate is not None:
            if hw.climate.read():
                node.add(M.TEMP, hw.climate.t, t)
                node.add(M.RH, hw.climate.rh, t)
            else:
                st.error(E_SENSOR)
        if hw.co2 is not None:
            try:
                if hw.co2.ready() and hw.co2.read():
                    node.add(M.CO2, hw.co2.co2, t)
            except OSError:
                st.error(E_SENSOR)
        return urgent
