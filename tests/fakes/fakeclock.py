# ss.clock.Clock on simulated time.  asleep_ms() is a tiny discrete-event
# scheduler on top of asyncio: a sleeping task lets the others run and
# advances world time only when its deadline is the earliest one pending,
# so simulated hours pass in milliseconds without reordering events.

import asyncio
import world
from ss.clock import Clock


class FakeClock(Clock):
    def __init__(self):
        self._waiting = []
        Clock.__init__(self)

    def ticks_ms(self):
        return world.now_ms & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d

    def unix(self):
        ms = world.now_ms + world.rtc_off_s * 1000
        return world.T0 + ms // 1000, ms % 1000

    def set_rtc(self, unix_s):
        world.rtc_off_s = unix_s - world.true_unix()

    def sleep_ms(self, ms):
        world.advance(ms)

    async def asleep_ms(self, ms):
        dl = world.now_ms + (ms if ms > 0 else 0)
        w = self._waiting
        w.append(dl)
        try:
            while True:
                await asyncio.sleep_ms(0)        # let every runnable task reach its next sleep
                if world.now_ms >= dl:
                    break
                if dl <= min(w):
                    world.advance(dl - world.now_ms)
                    break
        finally:
            w.remove(dl)
