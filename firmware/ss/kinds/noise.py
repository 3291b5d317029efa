# Noise: continuous A-weighted sound levels from an I2S MEMS microphone.
# Per interval (cadence.sample_s): LAeq, LAmax, L10, L90.  Only these levels
# leave the node; the audio buffer is overwritten block by block.

from ss import metrics as M
from ss.aweight import AWeighting
from ss.leq import Levels, offset_db
from ss.state import E_SENSOR

CONTINUOUS = True


class Noise:
    def __init__(self, node):
        self.node = node
        cal = node.cfg["calibration"]
        fs = cal["mic_rate"]
        self.aw = AWeighting(fs)
        self.levels = Levels(fs, offset_db(cal["mic_dbfs"], self.aw.g1k, 32768, cal["mic_offset_db"]))
        self.interval = node.cfg["cadence"]["sample_s"]
        self.th = int(node.cfg["thresholds"]["laeq"] * 10 + 0.5)
        self.beat = 0

    def block(self):
        """Read and weigh one block; returns the samples consumed."""
        mic = self.node.hw.mic
        n = mic.read_block()
        if n <= 0:
            self.node.state.error(E_SENSOR)
            return 0
        self.levels.add(self.aw.energy(mic.view, n, 2), n)
        return n

    def report(self, t):
        r = self.levels.report()
        if r is None:
            return False
        node = self.node
        node.add(M.LAEQ, r[0], t)
        node.add(M.LAMAX, r[1], t)
        node.add(M.L10, r[2], t)
        node.add(M.L90, r[3], t)
        hw = node.hw
        if hw.climate is not None and hw.climate.read():
            node.add(M.TEMP, hw.climate.t, t)
        return node.state.alarm(1, r[0] >= self.th)

    async def run(self):
        node = self.node
        clock = node.clock
        end = clock.now() - clock.now() % self.interval + self.interval
        while True:
            self.block()
            self.beat += 1
            if clock.now() >= end:
                if self.report(end):
                    node.urgent()
                end += self.interval
                if end <= clock.s:
                    end = clock.s - clock.s % self.interval + self.interval
            await clock.asleep_ms(0)
