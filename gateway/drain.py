"""Which queued message goes to the central broker next (pure, no I/O).

Two lanes share one window of QoS 1 messages in flight:

* **live**: messages committed while the central broker is connected. They
  are handed over straight from memory, ahead of anything else, so a device's
  reading reaches the centre in about one round trip even during a drain.
* **backlog**: everything that was queued when the connection (re)started,
  plus anything committed while it was down. Read back from SQLite in id
  (= arrival) order, oldest first, at most ``drain_rate`` messages per second
  (token bucket) and using at most ``backlog_share`` of the window, so live
  messages always find a free slot. While a backlog waits, live messages use
  at most the window less ``backlog_reserve`` of it: a live lane busy enough to
  refill every slot an ack frees would otherwise starve the backlog for good
  (found by ``streetsense chaos``: after a broker restart under load the
  backlog never drained).

Interleaving (one shared FIFO) was the alternative: simpler, but a live reading
would then wait behind the whole backlog (minutes after a long outage); with
two lanes its latency stays at about a round trip, and the backlog still moves
at the configured rate. Ordering is per lane: live messages overtake the
backlog. Consumers order readings by their own time, so this costs nothing
for telemetry; for retained messages the forwarder keeps the newest one
retained (see ``forwarder``).

If the live lane grows beyond ``live_cap`` (the centre is slower than the
devices), its messages are demoted to the backlog, so memory stays bounded.

>>> lanes = Lanes(window=4, drain_rate=0)
>>> rows = [Row(i, 0, "t", b"", False, 1, None) for i in (1, 2, 3)]
>>> lanes.reset(first_id=1, last_id=2)          # 1 and 2 were queued during an outage
>>> lanes.committed(rows[2:])                   # 3 arrives live
>>> [(r.id, lane) for r, lane in lanes.next_batch(0.0, 0, 0, lambda a, b, n: rows[a - 1:b][:n])]
[(3, 'live'), (1, 'backlog'), (2, 'backlog')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gateway.queue import Row

LIVE = "live"
BACKLOG = "backlog"

#: fetch(first_id, last_id, limit) -> rows with first_id <= id <= last_id, oldest first
Fetch = Callable[[int, int, int], list[Row]]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; rate 0 = unlimited.

    >>> b = TokenBucket(100, burst=10, now=0.0)
    >>> b.available(0.0)
    10
    >>> b.spend(10); b.available(0.05), b.available(5.0)
    (5, 10)
    """

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 0.05)
        self.tokens = self.burst
        self.t = now

    def available(self, now: float) -> int:
        if self.rate <= 0:
            return 1 << 30
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.t) * self.rate)
        self.t = now
        return int(self.tokens)

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self.tokens -= n

    def wait_s(self, now: float) -> float:
        """Seconds until one more token (0 if one is there)."""
        if self.rate <= 0 or self.available(now) >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate


class Lanes:
    """The live and backlog lanes over one in-flight window."""

    def __init__(self, window: int, drain_rate: float, *, backlog_share: float = 0.9, backlog_reserve: float = 0.1,
                 live_cap: int = 20_000, chunk: int = 500, now: float = 0.0) -> None:
        self.window = window
        self.backlog_window = max(1, int(window * backlog_share))
        #: slots live messages leave free while a backlog waits
        self.backlog_min = min(self.backlog_window, max(1, int(window * backlog_reserve))) if window > 1 else 0
        self.live_cap = live_cap
        self.chunk = chunk
        self.bucket = TokenBucket(drain_rate, now=now)
        self.connected = False
        self.live: deque[Row] = deque()
        self.buf: deque[Row] = deque()
        self.retry: deque[Row] = deque()
        #: next id to read from the queue, and the last id that belongs to the backlog
        self.cursor = 1
        self.hi = 0
        #: ids in flight or acked but not yet deleted: never read back from the queue
        self.busy: set[int] = set()

    @property
    def backlog_pending(self) -> bool:
        return bool(self.buf) or self.cursor <= self.hi or bool(self.retry)

    def reset(self, first_id: int, last_id: int) -> None:
        """A new central connection: every queued message (ids first_id..last_id)
        is backlog; nothing is in flight any more."""
        self.connected = True
        self.live.clear()
        self.buf.clear()
        self.busy.clear()
        self.retry.clear()       # failed rows are still queued: read back with the rest
        self.cursor, self.hi = first_id, last_id

    def disconnected(self) -> None:
        """Connection lost: live messages not yet sent join the backlog."""
        self.connected = False
        if self.live:
            self.hi = max(self.hi, self.live[-1].id)
            self.live.clear()

    def committed(self, rows: list[Row]) -> None:
        """Rows just made durable by the intake (ids ascending, above all earlier ones)."""
        if not rows:
            return
        if not self.connected:
            self.hi = max(self.hi, rows[-1].id)
        elif len(self.live) + len(rows) > self.live_cap:
            # The centre is not keeping up: stop holding payloads in memory.
            self.hi = max(self.hi, rows[-1].id)
            self.live.clear()
        else:
            self.live.extend(rows)

    def failed(self, row: Row) -> None:
        """The broker refused this message (PUBACK reason >= 0x80): send it again later."""
        self.busy.discard(row.id)
        self.retry.append(row)

    def done(self, ids: list[int]) -> None:
        """These ids are deleted from the queue."""
        self.busy.difference_update(ids)

    def wake_in(self, now: float, inflight_live: int, inflight_backlog: int) -> float:
        """Seconds until :meth:`next_batch` could return something (inf: only an
        ack or a new message can change that)."""
        if not self.connected or inflight_live + inflight_backlog >= self.window:
            return float("inf")
        if self.live and self._live_room(inflight_live, inflight_backlog) > 0:
            return 0.0
        if self.backlog_pending and inflight_backlog < self.backlog_window:
            return self.bucket.wait_s(now)
        return float("inf")

    def _live_room(self, inflight_live: int, inflight_backlog: int) -> int:
        """Live messages that may go out now (the window less the backlog's reserve while it waits)."""
        free = self.window - inflight_live - inflight_backlog
        if self.backlog_pending:
            free = min(free, self.window - self.backlog_min - inflight_live)
        return free

    def next_batch(self, now: float, inflight_live: int, inflight_backlog: int, fetch: Fetch,
                   retry_ok: bool = True) -> list[tuple[Row, str]]:
        """Messages to publish now, with their lane; marks them busy."""
        if not self.connected:
            return []
        free = self.window - inflight_live - inflight_backlog
        out: list[tuple[Row, str]] = []
        live = self.live
        room = self._live_room(inflight_live, inflight_backlog)
        while room > 0 and live:
            out.append((live.popleft(), LIVE))
            free -= 1
            room -= 1
        n = min(free, self.backlog_window - inflight_backlog)
        if n > 0 and self.backlog_pending:
            n = min(n, self.bucket.available(now))
            sent = 0
            while sent < n:
                if retry_ok and self.retry:
                    out.append((self.retry.popleft(), BACKLOG))
                    sent += 1
                    continue
                if not self.buf:
                    if self.cursor > self.hi:
                        break
                    rows = fetch(self.cursor, self.hi, self.chunk)
                    if not rows:
                        self.cursor = self.hi + 1
                        break
                    self.cursor = rows[-1].id + 1
                    busy = self.busy
                    self.buf.extend(r for r in rows if r.id not in busy)
                    continue
                out.append((self.buf.popleft(), BACKLOG))
                sent += 1
            self.bucket.spend(sent)
        for r, _ in out:
            self.busy.add(r.id)
        return out
