# When to wake, sample and transmit.  Pure integer arithmetic on device seconds.
#
# Samples fall on wall-clock slots (multiples of sample_s since EPOCH, so a
# 600 s cadence samples at :00, :10, ...), which keeps batches regular and lets
# the backend expect them.  Transmissions happen every tx_s, at once when a
# threshold fired (urgent), and after a failure back off exponentially
# (60 s, 120 s, ... capped at tx_s) with a per-device jitter so a district's
# nodes do not all retry together after a broker outage.

from micropython import const

_BASE_RETRY = const(60)


def slot_after(t, period):
    """First slot boundary strictly after t."""
    return t - t % period + period


def slot_of(t, period):
    """Slot boundary at or before t."""
    return t - t % period


def jitter(seed, span):
    """Deterministic per-device offset in [0, span) from a small int seed."""
    if span <= 0:
        return 0
    x = (seed * 1103515245 + 12345) & 0x3FFFFFFF
    return x % span


def seed_of(text):
    h = 5381
    for c in text:
        h = ((h * 33) ^ ord(c)) & 0x3FFFFFF
    return h


class Plan:
    def __init__(self, sample_s, tx_s, health_s, seed=0):
        self.sample_s = sample_s
        self.tx_s = tx_s
        self.health_s = health_s
        self.seed = seed

    def sample_due(self, now, last_sample):
        return last_sample == 0 or slot_of(now, self.sample_s) > last_sample

    def next_sample(self, now):
        return slot_after(now, self.sample_s)

    def tx_due(self, now, last_tx, retry_at, urgent):
        if now < retry_at:
            return False
        return urgent or last_tx == 0 or now - last_tx >= self.tx_s

    def next_tx(self, now, last_tx, retry_at, urgent=False):
        t = now if (urgent or not last_tx) else last_tx + self.tx_s
        return max(t, retry_at, now)

    def health_due(self, now, last_health):
        return last_health == 0 or now - last_health >= self.health_s

    def retry_after(self, now, fails):
        """Deadline for the next attempt after ``fails`` consecutive failures."""
        d = _BASE_RETRY
        for _ in range(min(fails, 12) - 1):
            d *= 2
            if d >= self.tx_s:
                break
        d = min(d, self.tx_s)
        return now + d + jitter(self.seed + fails, d // 10 + 1)

    def next_wake(self, now, last_sample, last_tx, retry_at, urgent):
        """Device s of the next wake in deep-sleep mode (always > now).

        The next sample is the slot after the last one taken, so a slot that
        passed during a long wake (a slow Wi-Fi join) is caught up at once.
        """
        w = last_sample + self.sample_s if last_sample > 0 else self.next_sample(now)
        if w <= now:
            w = now + 1
        t = self.next_tx(now, last_tx, retry_at, urgent)
        return min(w, t) if t > now else w


class Backoff:
    """Exponential backoff with jitter for Wi-Fi / MQTT connection attempts (ms)."""

    def __init__(self, base_ms=500, cap_ms=30000, seed=0):
        self.base = base_ms
        self.cap = cap_ms
        self.seed = seed
        self.n = 0

    def reset(self):
        self.n = 0

    def next_ms(self):
        d = self.base
        for _ in range(self.n):
            d *= 2
            if d >= self.cap:
                d = self.cap
                break
        self.n += 1
        return d // 2 + jitter(self.seed + self.n, d // 2 + 1)
