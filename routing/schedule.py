"""A route's timeline from the solver's visit order, with the crew's break placed by the rules.

PyVRP 0.14 has no break activity: a break taken wherever the lorry is has no
location, so it cannot be a client (its travel times would depend on the
stop before it), and the maintainers point to modelling it outside the solver
(PyVRP issues #352 and #415).  So the model keeps time for the break (each
shift is shortened by its length) and this module places it afterwards:

* the timeline is recomputed from the visit order and the duration matrix:
  arrive = previous end + travel, start = max(arrive, earliest), end = start +
  service (the solver's own times, which :func:`timeline` reproduces);
* :class:`BreakRule`: ``minutes`` of break once ``after_h`` hours of
  *driving* (``basis="driving"``, GB/EU drivers' hours: 45 min after 4.5 h)
  or of *duty* since the shift began (``basis="duty"``) would be exceeded; a
  route that never reaches the limit has no break;
* the break goes at the **latest** legal place (after a stop or unload, before
  the leg that would pass the limit) where it breaks no later time window and
  no shift end; if every legal place breaks something, the place that breaks
  least is used and the route lists its ``violations`` (a stop's window, the
  shift end, or the rule itself when even the first leg passes the limit, or
  the driving after the break needs a second one);
* a break shifts the later times, except where the lorry would have waited
  anyway (waiting for a window absorbs the break).

>>> V = [Visit("start", 0, 0), Visit("stop", 1, 60, ref=0), Visit("stop", 2, 60, ref=1), Visit("end", 3, 0)]
>>> dur = [[0, 3600, 7200, 9000], [3600, 0, 3600, 5400], [7200, 3600, 0, 1800], [9000, 5400, 1800, 0]]
>>> s = place_break(V, dur, start_s=6 * 3600, rule=BreakRule(after_h=1.5, minutes=45), shift_end_s=12 * 3600)
>>> s.break_after, s.break_start_s - 7 * 3600, [round(t / 3600, 2) for t in s.starts]
(1, 60, [6.0, 7.0, 8.77, 9.28])
>>> s.violations
[]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

__all__ = ["Visit", "BreakRule", "Schedule", "timeline", "place_break"]

BIG = 1 << 62


@dataclass(frozen=True)
class Visit:
    kind: str                      #: start | stop | unload | end
    loc: int                       #: row/column of the duration matrix
    service_s: int = 0
    ref: int | None = None         #: stop index (kind stop)
    trip: int = 0
    tw: tuple[int, int] = (0, BIG)  #: earliest / latest service start (elapsed seconds)
    name: str = ""


@dataclass(frozen=True)
class BreakRule:
    after_h: float = 4.5
    minutes: float = 45.0
    basis: Literal["driving", "duty"] = "driving"

    @property
    def after_s(self) -> int:
        return int(round(self.after_h * 3600))

    @property
    def break_s(self) -> int:
        return int(round(self.minutes * 60))


@dataclass
class Schedule:
    starts: list[int]                      #: service start per visit
    ends: list[int]
    drive_s: list[int]                     #: driving since the shift began, on arrival at each visit
    break_after: int | None = None         #: the break follows this visit (None: no break)
    break_start_s: int | None = None
    break_drive_s: int = 0                 #: driving done when the break starts
    violations: list[dict] = field(default_factory=list)

    @property
    def end_s(self) -> int:
        return self.ends[-1] if self.ends else 0


def timeline(visits: Sequence[Visit], dur, start_s: int, break_after: int | None = None,
             break_s: int = 0, driven0: int = 0) -> Schedule:
    """Times along ``visits`` leaving the first at ``start_s``; a break of ``break_s`` after visit
    ``break_after``; ``driven0`` seconds were driven before (a re-plan mid-shift)."""
    starts, ends, drive = [], [], []
    t, d, prev = int(start_s), int(driven0), None
    bstart = bdrive = None
    for i, v in enumerate(visits):
        if prev is not None:
            leg = int(dur[prev][v.loc])
            t += leg
            d += leg
        s = max(t, v.tw[0]) if i else t
        starts.append(s)
        drive.append(d)
        t = s + v.service_s
        ends.append(t)
        if break_after == i:
            bstart, bdrive = t, d
            t += break_s
        prev = v.loc
    out = Schedule(starts, ends, drive, break_after, bstart, bdrive or 0)
    for i, v in enumerate(visits):
        if starts[i] > v.tw[1]:
            out.violations.append({"type": "time_window", "visit": i, "name": v.name, "start_s": starts[i],
                                   "latest_s": v.tw[1], "late_s": starts[i] - v.tw[1]})
    return out


def place_break(visits: Sequence[Visit], dur, start_s: int, rule: BreakRule, shift_end_s: int | None = None,
                driven0: int = 0, duty_start_s: int | None = None, taken: bool = False) -> Schedule:
    """The timeline with the break at the latest legal place that breaks nothing (see the module
    docstring).  ``taken``: the break was already had (a re-plan after it): no break."""
    duty0 = start_s if duty_start_s is None else duty_start_s
    base = timeline(visits, dur, start_s, driven0=driven0)

    def check_end(s: Schedule) -> Schedule:
        if shift_end_s is not None and s.end_s > shift_end_s:
            s.violations.append({"type": "shift_end", "end_s": s.end_s, "shift_end_s": shift_end_s,
                                 "late_s": s.end_s - shift_end_s})
        return s

    if taken or rule.break_s <= 0 or len(visits) < 2:
        return check_end(base)
    lim = rule.after_s
    if rule.basis == "driving":
        need = base.drive_s[-1] > lim
    else:
        need = base.end_s - duty0 > lim
    if not need:
        return check_end(base)
    # break after visit k (before the leg to k + 1): legal while the limit is not yet passed at the break
    legal = []
    for k in range(len(visits) - 1):
        if rule.basis == "driving":
            ok = base.drive_s[k] <= lim
        else:
            ok = base.ends[k] - duty0 <= lim
        if ok:
            legal.append(k)
    best: tuple[tuple, Schedule] | None = None
    for k in reversed(legal):
        s = check_end(timeline(visits, dur, start_s, k, rule.break_s, driven0))
        if rule.basis == "driving" and s.drive_s[-1] - s.break_drive_s > lim:
            s.violations.append({"type": "break_rule", "reason": "a second break would be needed",
                                 "driving_after_break_s": s.drive_s[-1] - s.break_drive_s})
        key = (len(s.violations), sum(v.get("late_s", 0) for v in s.violations))
        if best is None or key < best[0]:
            best = (key, s)
        if not s.violations:
            break
    if best is None:                      # even the first leg passes the limit: break at once, and say so
        s = check_end(timeline(visits, dur, start_s, 0, rule.break_s, driven0))
        s.violations.append({"type": "break_rule", "reason": "the limit is passed before the first stop"})
        return s
    return best[1]
