# Road bumps from a vehicle: accelerometer FIFO at >= 100 Hz + NMEA GPS.
# Each accepted bump is one event of five records sharing its start time:
# bump_g (peak, m/s2), bump_dur (s), speed (m/s), lat, lon (micro-degrees,
# straight from the NMEA digits).

from array import array
from ss import metrics as M
from ss.bump import BumpDetector
from ss.state import E_SENSOR

CONTINUOUS = True
_FIFO = 32


class Road:
    def __init__(self, node):
        self.node = node
        cal = node.cfg["calibration"]
        hz = cal["accel_hz"]
        self.hz = hz
        self.dt = 1000 // hz
        self.det = BumpDetector(hz, int(node.cfg["thresholds"]["bump_ms2"] * 1000),
                                int(cal["ref_speed"] * 100), int(cal["min_speed"] * 100),
                                cal["bump_min_ms"], cal["bump_max_ms"])
        self.buf = array("i", [0] * (3 * _FIFO))
        self.axis = 2                  # z up (mount the board flat)
        self.beat = 0
        self.events = 0

    def poll(self):
        """Drain GPS and the accelerometer FIFO once; returns samples processed."""
        node = self.node
        hw = node.hw
        gps = hw.gps
        if gps is not None:
            gps.poll()
            nm = gps.nmea
            self.det.set_speed(nm.speed if nm.fix else 0)
            if not node.clock.valid and nm.time:
                from ss.clock import EPOCH
                node.clock.set_unix(nm.time + EPOCH, nm.ms)
        try:
            n = hw.accel.read_fifo(self.buf, _FIFO)
        except OSError:
            node.state.error(E_SENSOR)
            return 0
        b = self.buf
        ax = self.axis
        det = self.det
        for i in range(n):
            if det.feed((b[3 * i + ax] * 9807 + 500) // 1000):   # mg -> mm/s2
                self.event(n - 1 - i)
        return n

    def event(self, behind):
        """Store the pending event; ``behind`` samples were read after its end."""
        node = self.node
        det = self.det
        det.pending = False
        clock = node.clock
        t = clock.stamp()
        ms = clock.ms - (det.n - 1 - det.at + behind) * self.dt
        while ms < 0:
            ms += 1000
            t -= 1
        nm = node.hw.gps.nmea
        node.add(M.BUMP_G, (det.peak + 5) // 10, t, ms)      # mm/s2 -> 0.01 m/s2
        node.add(M.BUMP_DUR, det.dur, t, ms)
        node.add(M.SPEED, det.ev_speed, t, ms)
        node.add(M.LAT, nm.lat, t, ms)
        node.add(M.LON, nm.lon, t, ms)
        self.events += 1
        node.urgent()

    async def run(self):
        hw = self.node.hw
        hw.accel.start_fifo()
        clock = self.node.clock
        while True:
            self.poll()
            self.beat += 1
            await clock.asleep_ms(100)        # FIFO holds 32 samples: 320 ms at 100 Hz
