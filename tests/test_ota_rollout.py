"""Staged rollout logic (streetsense/ota/rollout.py): deterministic assignment by
hashed device id, percentages, groups, waves, halt on failure rate, resume/abort."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streetsense.ota import rollout as R

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
pcts = st.floats(min_value=0.01, max_value=100, allow_nan=False)
FLEET = [f"bin-{i:05d}" for i in range(20_000)]


@given(dev=ids, salt=st.text(max_size=10), others=st.lists(ids, max_size=30), pct=pcts)
def test_assignment_is_deterministic_and_independent_of_the_fleet(dev, salt, others, pct):
    plan = R.Plan((R.Wave(pct), R.Wave(100)), salt=salt)
    alone = R.assign(plan, {dev: ()})
    fleet = {d: () for d in others}
    fleet[dev] = ()
    together = R.assign(plan, dict(reversed(list(fleet.items()))))
    assert alone[dev] == together[dev] == R.wave_of(plan, dev)
    assert 0 <= R.bucket(salt, dev) < R.SCALE


@given(dev=ids, p=pcts, q=pcts)
def test_a_device_in_p_percent_is_in_every_larger_share(dev, p, q):
    lo, hi = sorted((p, q))
    if R.wave_of(R.Plan((R.Wave(lo),)), dev) == 0:
        assert R.wave_of(R.Plan((R.Wave(hi),)), dev) == 0
    assert R.wave_of(R.Plan((R.Wave(100),)), dev) == 0


@pytest.mark.parametrize("waves", [(1, 10, 50, 100), (5, 25, 100), (0.5, 2, 100)])
def test_percentages_hold_over_a_large_fleet(waves):
    plan = R.Plan(tuple(R.Wave(p) for p in waves), salt="leeds:esp32:1.2.0")
    a = R.assign(plan, {d: () for d in FLEET})
    assert len(a) == len(FLEET)                       # the last wave is 100 %: everyone
    n = Counter(a.values())
    cum = 0
    for i, p in enumerate(waves):
        cum += n[i]
        share = cum / len(FLEET)
        sigma = (p / 100 * (1 - p / 100) / len(FLEET)) ** 0.5
        assert abs(share - p / 100) <= 4 * sigma + 1e-9, (i, share, p)


def test_other_salt_other_canaries_same_size():
    a = R.assign(R.Plan((R.Wave(5), R.Wave(100)), salt="one"), {d: () for d in FLEET})
    b = R.assign(R.Plan((R.Wave(5), R.Wave(100)), salt="two"), {d: () for d in FLEET})
    first_a = {d for d, w in a.items() if w == 0}
    first_b = {d for d, w in b.items() if w == 0}
    assert abs(len(first_a) - len(first_b)) < 100 and len(first_a & first_b) < len(first_a) // 5


@given(devs=st.dictionaries(ids, st.lists(st.sampled_from(["canary", "north", "south"]), max_size=2), max_size=60),
       pct=pcts)
def test_groups(devs, pct):
    plan = R.Plan((R.Wave(100, ("canary",)), R.Wave(pct, ("north",)), R.Wave(100)), salt="g")
    a = R.assign(plan, devs)
    for d, groups in devs.items():
        w = a[d]
        if "canary" in groups:
            assert w == 0                              # the whole group, first
        elif w == 1:
            assert "north" in groups
        else:
            assert w == 2 and (("north" not in groups) or R.wave_of(R.Plan((R.Wave(pct),), salt="g"), d) is None)
    only = R.Plan((R.Wave(100, ("canary",)),), salt="g")
    assert set(R.assign(only, devs)) == {d for d, g in devs.items() if "canary" in g}


def test_wave_parse():
    assert R.Wave.parse("10") == R.Wave(10.0)
    assert R.Wave.parse("100%:canary") == R.Wave(100.0, ("canary",))
    assert str(R.Wave.parse("2.5:a,b")) == "2.5%:a,b"
    for bad in ("0", "101", "x", "-5"):
        with pytest.raises(R.RolloutError):
            R.Wave.parse(bad)
    plan = R.Plan((R.Wave(1), R.Wave(100, ("x",))), 0.2, 3, 0.8, "s")
    assert R.Plan.from_json(plan.to_json()) == plan


# --- halting -------------------------------------------------------------------------------------

outcomes = st.lists(st.sampled_from(["running", "failed", "rolled_back", "downloading", "retrying"]),
                    min_size=1, max_size=200)


@settings(max_examples=150, deadline=None)
@given(results=outcomes, rate=st.floats(0.0, 0.5), min_reports=st.integers(1, 20), size=st.integers(1, 200))
def test_never_continues_past_the_failure_threshold(results, rate, min_reports, size):
    devs = [f"d{i}" for i in range(size)]
    plan = R.Plan((R.Wave(100),), max_failure_rate=rate, min_reports=min_reports)
    a = {d: 0 for d in devs}
    state = R.State()
    states: dict[str, str] = {}
    for d, r in zip(devs, results):
        states[d] = r
        state = R.step(plan, state, a, states)
        s = R.stats(plan, a, states)[0]
        if state.status in ("running", "completed"):
            # still going: the failure rate is not (yet) over the threshold
            assert not s.failed > rate * s.size
            assert not (s.done >= min_reports and s.failed > rate * s.done)
            assert R.targets(state, a) == set(devs)
        else:
            assert state.status == "halted"
            assert s.failed > rate * s.size or (s.done >= min_reports and s.failed > rate * s.done)
            assert R.targets(state, a) == set()
            break
    else:
        s = R.stats(plan, a, states)[0]
        bad = s.failed
        if bad == 0:
            assert state.status in ("running", "completed")


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=2, max_size=5), advance=st.floats(0.1, 1.0))
def test_all_good_reports_open_every_wave_and_complete(sizes, advance):
    devs, a = [], {}
    for w, n in enumerate(sizes):
        for i in range(n):
            a[f"w{w}-{i}"] = w
            devs.append(f"w{w}-{i}")
    plan = R.Plan(tuple(R.Wave(100) for _ in sizes), advance_at=advance)
    state = R.step(plan, R.State(), a, {})
    states: dict[str, str] = {}
    opened = [state.wave]
    while True:
        todo = [d for d in devs if a[d] <= state.wave and d not in states]
        if not todo:
            break
        states[todo[0]] = "running"
        new = R.step(plan, state, a, states)
        assert new.wave >= state.wave and new.status in ("running", "completed")
        # a wave opens only once enough of the open one is done
        for w in range(state.wave, new.wave):
            s = R.stats(plan, a, states)[w]
            assert s.done >= advance * s.size
        state = new
        opened.append(state.wave)
    assert state.wave == len(sizes) - 1 and state.status == "completed"
    assert opened == sorted(opened)


def test_halt_resume_abort():
    plan = R.Plan((R.Wave(100), R.Wave(100)), max_failure_rate=0.25, min_reports=4, advance_at=1.0)
    a = {f"a{i}": 0 for i in range(8)} | {f"b{i}": 1 for i in range(8)}
    states = {"a0": "running", "a1": "running", "a2": "failed"}
    st = R.step(plan, R.State(), a, states)
    assert st.status == "running"                      # 1 of 3: too few reports yet
    states["a3"] = "rolled_back"
    st = R.step(plan, st, a, states)
    assert (st.status, st.wave) == ("halted", 0) and st.reason == "wave 1: 2 of 4 reported failed (50% > 25%)"
    # reports keep coming while halted: nothing opens
    states.update({f"a{i}": "running" for i in range(4, 8)})
    assert R.step(plan, st, a, states) == st
    st = R.resume(plan, st, a, states)
    assert st.excused == {"a2", "a3"} and st.status == "running" and st.wave == 1   # wave 1 done without them
    assert R.targets(st, a) == set(a)
    states.update({"b0": "failed", "b1": "failed", "b2": "failed"})
    st = R.step(plan, st, a, states)
    assert st.status == "halted" and st.reason.startswith("wave 2: 3 of 3")
    st = R.abort(st)
    assert st.status == "aborted" and R.targets(st, a) == set()
    with pytest.raises(R.RolloutError):
        R.resume(plan, st, a, states)
    with pytest.raises(R.RolloutError):
        R.halt(st)


def test_certain_failure_halts_before_min_reports():
    plan = R.Plan((R.Wave(100),), max_failure_rate=0.1, min_reports=50)
    a = {f"d{i}": 0 for i in range(10)}
    st = R.step(plan, R.State(), a, {"d0": "failed"})
    assert st.status == "running"                      # 1 of 10 is not more than 10 %
    st = R.step(plan, st, a, {"d0": "failed", "d1": "failed"})
    assert st.status == "halted"                       # 2 of 10 is more than 10 % whatever the rest do


def test_summary():
    plan = R.Plan((R.Wave(50), R.Wave(100)), salt="s")
    a = R.assign(plan, {f"d{i}": () for i in range(20)})
    states = {d: "running" for d in list(a)[:3]}
    out = R.summary(plan, R.State(), a, states)
    assert out["devices"] == 20 and out["by_state"]["running"] == 3 and out["waves"] == ["50%", "100%"]
    assert sum(s["size"] for s in out["stats"]) == 20
