"""Per-device rate limit: a token bucket of readings, clocked by the device's own time.

Used at both hops: the gateway (:mod:`gateway.intake`) and the central ingest
(:mod:`ingest.handler`). A message over its device's limit is **not dropped**:
it is quarantined with reason ``rate_limited``, raw bytes kept, and can be
replayed (``streetsense quarantine replay --reason rate_limited``).

Each device has a bucket of ``burst`` readings that refills at ``rate``
readings per second. The clock is the time the pack itself carries (its
newest reading), not the time it arrived: a fleet replayed at a thousand times
real speed by the simulator, a node emptying its flash ring after a Wi-Fi
outage, or a gateway draining a day of backlog all keep the density of
readings per second of *device* time they had when measured, so none of them
trips the limit. What does trip it is what a broken or hostile node does:

* the same pack re-sent in a loop (its time does not advance, so the bucket
  does not refill);
* readings sampled in a tight loop (far more readings per second of its own
  clock than any sensor kind produces).

A pack older than the bucket's clock by more than ``late_s`` is history
(ring drain, gateway backlog, interleaved with the live traffic that moved
the clock on) and is charged to the device's *history allowance* instead:
``history`` readings (default 10,000: a full 48-pack flash ring of the
largest packs twice over) that refill at ``rate`` only as the device's clock
advances. A node that sends ever-older timestamps, whose clock therefore
never moves, spends that allowance once and is then limited; one that moves
its clock on to refill it is held to ``rate`` by its own clock (and its clock
cannot run ahead of real time: far-future readings are refused upstream). A
pack a little older is charged to the main bucket without refill. The default (20 readings/s, bursts of 2,000) leaves a wide margin:
two simulated days of every kind, road vehicles included (the largest pack:
82 records), pass even a limit twenty times tighter; the test suite checks
ten times (``tests/test_hostile_input.py``).

>>> rl = RateLimiter(rate=10, burst=100)
>>> rl.allow("bin-1", 1_767_225_600_000, 60), rl.allow("bin-1", 1_767_225_600_000, 60)
(True, False)
>>> rl.allow("bin-1", 1_767_225_604_000, 60)     # 4 s later: 40 + 40 refilled tokens
True
>>> rl.allow("bin-2", 1_767_225_600_000, 100)    # each device has its own bucket
True
>>> rl.limited, rl.limited_readings
(1, 60)
>>> RateLimiter(rate=0).allow("x", 0, 10**9)    # rate 0 turns the limit off
True
>>> old = RateLimiter(rate=10, burst=100, history=500)
>>> old.allow("n", 1_767_225_600_000, 1)
True
>>> [old.allow("n", 1_767_225_600_000 - k * 3_600_000, 200) for k in range(1, 5)]   # ever older
[True, True, False, False]
"""

from __future__ import annotations

from dataclasses import dataclass

#: default sustained readings per second of device time, per device
DEFAULT_RATE = 20.0
#: default bucket size (readings)
DEFAULT_BURST = 2000
#: packs older than the device's clock by more than this are history (charged to the history allowance)
DEFAULT_LATE_S = 300.0
#: default history allowance (readings), refilled at the rate only as the device's clock advances
DEFAULT_HISTORY = 10_000
#: most devices tracked at once (a flood of made-up device ids cannot grow memory)
MAX_DEVICES = 200_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    clock_ms: int
    history: float


class RateLimiter:
    """Token buckets keyed by device. Not thread-safe (one per network thread)."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST, *, late_s: float = DEFAULT_LATE_S,
                 history: int = DEFAULT_HISTORY, max_devices: int = MAX_DEVICES) -> None:
        if rate < 0 or burst < 0 or history < 0:
            raise ValueError("rate, burst and history must be >= 0")
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.history = float(history)
        self.late_ms = int(late_s * 1000)
        self.max_devices = max_devices
        self._buckets: dict[str, _Bucket] = {}
        #: messages / readings refused since start
        self.limited = 0
        self.limited_readings = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, device: str, time_ms: int, readings: int) -> bool:
        """Charge ``readings`` (at least 1) to ``device`` at device time ``time_ms``; False if over the limit."""
        if self.rate <= 0:
            return True
        n = max(1, readings)
        b = self._buckets.get(device)
        if b is None:
            if len(self._buckets) >= self.max_devices:
                self._evict(time_ms)
            b = self._buckets[device] = _Bucket(self.burst, time_ms, self.history)
        elif time_ms > b.clock_ms:
            gained = (time_ms - b.clock_ms) * self.rate / 1000.0
            b.tokens = min(self.burst, b.tokens + gained)
            b.history = min(self.history, b.history + gained)
            b.clock_ms = time_ms
        elif time_ms < b.clock_ms - self.late_ms:
            # history behind live traffic (judged when it was live): its own allowance, which only the
            # device's clock moving on refills, so timestamps that only ever go back run it dry
            if b.history >= n:
                b.history -= n
                return True
            return self._refuse(n)
        if b.tokens >= n:
            b.tokens -= n
            return True
        return self._refuse(n)

    def _refuse(self, n: int) -> bool:
        self.limited += 1
        self.limited_readings += n
        return False

    def _evict(self, now_ms: int) -> None:
        """Forget buckets that would be full again by now (no loss of state), then the oldest half."""
        full_after = self.burst * 1000.0 / self.rate
        for k in [k for k, b in self._buckets.items() if now_ms - b.clock_ms >= full_after]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_devices:
            for k in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
