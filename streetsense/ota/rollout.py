"""Staged rollouts, pure: who gets an update when, and when to stop.

A plan is a list of waves.  Each wave is a *cumulative* share of the fleet,
optionally limited to device groups: ``1%``, ``10%``, ``100%`` or
``100%:canary`` (every device in the group "canary").  A device belongs to the
first wave that takes it; which share a device falls into comes from hashing
its id with the plan's salt (``bucket``), so the assignment is deterministic,
independent of the order or the rest of the fleet, and stable when the fleet
grows (a device never moves to an earlier wave because others were added).

The rollout opens one wave at a time.  The next one opens when ``advance_at``
of the open wave's devices have a final result (sleeping nodes report hours
later; a few may be offline for days).  It halts by itself when a wave's
failure rate exceeds ``max_failure_rate``: as soon as the failures alone
exceed that share of the whole wave (so the outcome is certain), or once
``min_reports`` results are in and the failed share of those exceeds it.
A halted rollout opens nothing and withdraws the notice from devices that
have not started; ``resume`` continues and *excuses* the failures seen so far
(they no longer count), ``abort`` ends it.

    >>> plan = Plan((Wave(50), Wave(100)), max_failure_rate=0.2, min_reports=3, salt="doc")
    >>> fleet = {f"bin-{i:04d}": () for i in range(10)}
    >>> a = assign(plan, fleet)
    >>> sorted(Counter(a.values()).items())
    [(0, 6), (1, 4)]
    >>> st = State()
    >>> first = sorted(d for d, w in a.items() if w == 0)
    >>> st = step(plan, st, a, {first[0]: "running", first[1]: "failed"})
    >>> st.status, st.wave
    ('running', 0)
    >>> st = step(plan, st, a, {first[0]: "running", first[1]: "failed", first[2]: "rolled_back"})
    >>> st.status, st.reason
    ('halted', 'wave 1: 2 of 3 reported failed (67% > 20%)')
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

SCALE = 10_000                 # buckets: shares in steps of 0.01 %

OK = frozenset({"running"})
BAD = frozenset({"failed", "rolled_back"})
FINAL = OK | BAD
# what a device can be in: before any ack, then what its acks say (ss/ota.py)
STATES = ("pending", "notified", "downloading", "staged", "retrying", "running", "failed", "rolled_back")
STATUSES = ("running", "halted", "aborted", "completed")


class RolloutError(ValueError):
    pass


@dataclass(frozen=True)
class Wave:
    percent: float                       # cumulative share of the (group's) fleet, 0 < p <= 100
    groups: tuple[str, ...] = ()         # only devices in one of these groups; () = any device

    def __post_init__(self) -> None:
        if not 0 < self.percent <= 100:
            raise RolloutError(f"wave percent {self.percent} outside (0, 100]")

    @classmethod
    def parse(cls, text: str) -> "Wave":
        """``"10"``, ``"2.5%"``, ``"100:canary"``, ``"50%:north,south"``.

        >>> Wave.parse("50%:north,south")
        Wave(percent=50.0, groups=('north', 'south'))
        """
        pct, _, groups = text.partition(":")
        try:
            p = float(pct.strip().rstrip("%"))
        except ValueError:
            raise RolloutError(f"wave {text!r}: want PERCENT[:GROUP,...]") from None
        return cls(p, tuple(g.strip() for g in groups.split(",") if g.strip()))

    def __str__(self) -> str:
        return f"{self.percent:g}%" + (":" + ",".join(self.groups) if self.groups else "")


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]
    max_failure_rate: float = 0.10
    min_reports: int = 5
    advance_at: float = 0.9
    salt: str = ""

    def __post_init__(self) -> None:
        if not self.waves:
            raise RolloutError("a plan needs at least one wave")
        if not 0 <= self.max_failure_rate < 1:
            raise RolloutError("max_failure_rate must be in [0, 1)")
        if self.min_reports < 1:
            raise RolloutError("min_reports must be at least 1")
        if not 0 < self.advance_at <= 1:
            raise RolloutError("advance_at must be in (0, 1]")

    def to_json(self) -> dict:
        return {"waves": [{"percent": w.percent, "groups": list(w.groups)} for w in self.waves],
                "max_failure_rate": self.max_failure_rate, "min_reports": self.min_reports,
                "advance_at": self.advance_at, "salt": self.salt}

    @classmethod
    def from_json(cls, d: Mapping) -> "Plan":
        return cls(tuple(Wave(float(w["percent"]), tuple(w.get("groups", ()))) for w in d["waves"]),
                   float(d.get("max_failure_rate", 0.1)), int(d.get("min_reports", 5)),
                   float(d.get("advance_at", 0.9)), str(d.get("salt", "")))


def bucket(salt: str, device_id: str) -> int:
    """The device's place in [0, SCALE): SHA-256 of salt and id.

    >>> bucket("leeds", "bin-0001") == bucket("leeds", "bin-0001") != bucket("york", "bin-0001")
    True
    """
    h = hashlib.sha256(salt.encode() + b"\x00" + device_id.encode()).digest()
    return int.from_bytes(h[:8], "big") % SCALE


def wave_of(plan: Plan, device_id: str, groups: Iterable[str] = ()) -> int | None:
    """Index of the first wave that takes the device (None: no wave does)."""
    b = bucket(plan.salt, device_id)
    gs = set(groups)
    for i, w in enumerate(plan.waves):
        if w.groups and not gs.intersection(w.groups):
            continue
        if b < round(w.percent * SCALE / 100):
            return i
    return None


def assign(plan: Plan, devices: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """{device id: wave} for the devices ({id: groups}) the plan reaches."""
    out = {}
    for dev, groups in devices.items():
        w = wave_of(plan, dev, groups)
        if w is not None:
            out[dev] = w
    return out


@dataclass(frozen=True)
class WaveStats:
    wave: int
    size: int            # devices counted (excused ones left out)
    ok: int
    failed: int
    active: int          # acked but not final yet (downloading, staged, retrying)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def rate(self) -> float:
        return self.failed / self.done if self.done else 0.0

    def to_json(self) -> dict:
        return {"wave": self.wave, "size": self.size, "ok": self.ok, "failed": self.failed,
                "active": self.active, "pending": self.size - self.done - self.active,
                "failure_rate": round(self.rate, 4)}


@dataclass(frozen=True)
class State:
    status: str = "running"
    wave: int = 0                                  # highest open wave
    reason: str = ""
    excused: frozenset[str] = field(default_factory=frozenset)   # failures accepted on resume


def stats(plan: Plan, assignment: Mapping[str, int], states: Mapping[str, str],
          excused: Iterable[str] = ()) -> list[WaveStats]:
    ex = set(excused)
    size = [0] * len(plan.waves)
    ok = [0] * len(plan.waves)
    bad = [0] * len(plan.waves)
    act = [0] * len(plan.waves)
    for dev, w in assignment.items():
        if dev in ex:
            continue
        size[w] += 1
        s = states.get(dev, "pending")
        if s in OK:
            ok[w] += 1
        elif s in BAD:
            bad[w] += 1
        elif s not in ("pending", "notified"):
            act[w] += 1
    return [WaveStats(i, size[i], ok[i], bad[i], act[i]) for i in range(len(plan.waves))]


def over_threshold(plan: Plan, s: WaveStats) -> bool:
    """Halt?  Failures alone exceed the share of the whole wave, or of enough reports."""
    if s.failed == 0:
        return False
    if s.failed > plan.max_failure_rate * s.size:
        return True
    return s.done >= plan.min_reports and s.failed > plan.max_failure_rate * s.done


def step(plan: Plan, state: State, assignment: Mapping[str, int], states: Mapping[str, str]) -> State:
    """Re-evaluate a running rollout after new reports: halt, open waves, complete."""
    if state.status != "running":
        return state
    st = stats(plan, assignment, states, state.excused)
    for s in st[:state.wave + 1]:
        if over_threshold(plan, s):
            return replace(state, status="halted",
                           reason=f"wave {s.wave + 1}: {s.failed} of {s.done} reported failed "
                                  f"({s.rate:.0%} > {plan.max_failure_rate:.0%})")
    wave = state.wave
    while wave + 1 < len(plan.waves) and st[wave].done >= plan.advance_at * st[wave].size:
        wave += 1
    status = "running"
    if wave == len(plan.waves) - 1 and all(s.done == s.size for s in st):
        status = "completed"
    return replace(state, status=status, wave=wave)


def halt(state: State, reason: str = "halted by an operator") -> State:
    if state.status in ("aborted", "completed"):
        raise RolloutError(f"rollout is {state.status}")
    return replace(state, status="halted", reason=reason)


def resume(plan: Plan, state: State, assignment: Mapping[str, int], states: Mapping[str, str]) -> State:
    """Continue a halted rollout; the failures so far are excused (no longer counted)."""
    if state.status != "halted":
        raise RolloutError(f"rollout is {state.status}, not halted")
    failed = {d for d, w in assignment.items() if w <= state.wave and states.get(d) in BAD}
    return step(plan, replace(state, status="running", reason="", excused=state.excused | failed),
                assignment, states)


def abort(state: State, reason: str = "aborted by an operator") -> State:
    if state.status in ("aborted", "completed"):
        raise RolloutError(f"rollout is {state.status}")
    return replace(state, status="aborted", reason=reason)


def targets(state: State, assignment: Mapping[str, int]) -> set[str]:
    """Devices that should see the OTA notice now (retained on their cmd topic).

    Running or completed: every device of an open wave.  Halted or aborted:
    nobody (the notice is withdrawn; a node that already staged the update
    finishes it, one that would retry a failed download does not)."""
    if state.status in ("running", "completed"):
        return {d for d, w in assignment.items() if w <= state.wave}
    return set()


def summary(plan: Plan, state: State, assignment: Mapping[str, int], states: Mapping[str, str]) -> dict:
    return {"status": state.status, "wave": state.wave, "waves": [str(w) for w in plan.waves],
            "reason": state.reason, "devices": len(assignment),
            "by_state": dict(sorted(Counter(states.get(d, "pending") for d in assignment).items())),
            "stats": [s.to_json() for s in stats(plan, assignment, states, state.excused)],
            "excused": sorted(state.excused)}


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_json(), sort_keys=True)
