"""Simulators: determinism, the wire contract, scenarios, fleet and street graph (no broker needed)."""

from __future__ import annotations

import collections
import doctest
import hashlib
import importlib
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from contract import v1
from contract.decode import PackError, decode
from simulators.config import ConfigError
from simulators.engine import Message, Simulation
from simulators.fleet import build_fleet
from simulators.geo import StreetGraph, generate_town
from simulators.models.base import qarray
from simulators.scenario import load_scenario, parse_counts
from simulators.truth import TRUTH_KINDS, to_json_line
from simulators.timebase import DAY_MS, parse_start

START = parse_start("2026-01-05")       # a Monday


def _run(days: float = 1.0, seed: int | None = None, counts: dict | None = None, node: dict | None = None,
         scenario: str = "tiny", start: int = START):
    sc = load_scenario(scenario)
    fleet = build_fleet(sc, counts=counts, seed=seed)
    sim = Simulation(fleet, start_ms=start, days=days, seed=seed, node=node)
    msgs, truth = [], []
    for b in sim.batches():
        msgs.extend(b.messages)
        truth.extend(b.truth)
    return sim, msgs, truth


def _digest(msgs: list[Message], truth) -> str:
    h = hashlib.sha256()
    for m in msgs:
        h.update(f"{m.send_ms}|{m.topic}|{m.qos}|{m.retain}|".encode())
        h.update(m.payload)
    for e in truth:
        h.update(to_json_line(e).encode())
    return h.hexdigest()


# ---- determinism -------------------------------------------------------------------

def test_same_seed_same_readings_and_truth():
    _, m1, t1 = _run(days=1.5, seed=11)
    _, m2, t2 = _run(days=1.5, seed=11)
    assert len(m1) > 500 and len(t1) > 20
    assert _digest(m1, t1) == _digest(m2, t2)


def test_different_seed_differs():
    _, m1, t1 = _run(days=0.5, seed=11)
    _, m2, t2 = _run(days=0.5, seed=12)
    assert _digest(m1, t1) != _digest(m2, t2)


def test_fleet_is_deterministic_and_ids_follow_the_contract():
    sc = load_scenario("tiny")
    a = build_fleet(sc, counts={"bins": 120, "air": 4, "noise": 4, "road": 3}, seed=3)
    b = build_fleet(sc, counts={"bins": 120, "air": 4, "noise": 4, "road": 3}, seed=3)
    assert a.to_rows() == b.to_rows()
    assert a.count_by_kind() == {"bin_fill": 120, "air": 4, "noise": 4, "road": 3}
    ids = [d.device_id for d in a.devices]
    assert len(set(ids)) == len(ids)
    for d in a.devices:
        assert v1.valid_id(d.device_id) and v1.valid_id(d.tenant)
        assert d.kind in v1.KINDS and d.board in ("esp32", "picow")
        assert abs(d.lat - sc.area.center_lat) < 0.05 and abs(d.lon - sc.area.center_lon) < 0.05
    bins = [d for d in a.devices if d.kind == "bin_fill"]
    house = [d.asset for d in bins if d.asset.bin_kind == "household"]
    street = [d.asset for d in bins if d.asset.bin_kind == "street"]
    assert house and street
    for x in house:
        assert x.household_id.startswith("hh-") and x.frequency_weeks in (1, 2) and len(x.round_days) == 1
        assert x.capacity_l in (140, 240, 360) and 0.5 < x.depth_m < 1.2
    assert all(x.household_id is None for x in street)
    json.dumps(a.to_rows())             # registry rows are JSON-able


def test_counts_override_and_parse():
    assert parse_counts("bins=5000,air=50,noise=40,road=12") == {"bins": 5000, "air": 50, "noise": 40, "road": 12}
    with pytest.raises(ConfigError):
        parse_counts("trees=3")
    fl = build_fleet(load_scenario("tiny"), counts="bins=7,road=0")
    assert fl.count_by_kind() == {"bin_fill": 7, "air": 3, "noise": 3}


# ---- the wire contract ------------------------------------------------------------

def test_every_payload_passes_the_contract_decoder_and_malformed_ones_are_rejected():
    sim, msgs, truth = _run(days=2.0, node={"malformed_rate": 0.02, "duplicate_rate": 0.01,
                                            "out_of_order_rate": 0.01})
    kinds = {d.device_id: d.kind for d in sim.fleet.devices}
    malformed = {(e.details["topic"], e.details["send_ms"]) for e in truth if e.kind == "malformed"}
    assert len(malformed) > 10
    n_up = n_status = n_bad = 0
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    last = 0
    for m in msgs:
        assert m.send_ms >= last            # simulated-time order
        last = m.send_ms
        assert m.qos == 1 and len(m.payload) <= v1.MAX_PAYLOAD
        tenant, dev, ch = v1.parse_topic(m.topic)
        assert tenant == "tiny-town" and dev in kinds
        if ch == v1.STATUS:
            n_status += 1
            assert m.retain
            s = json.loads(m.payload)
            assert list(s) == ["state", "fw", "t", "next_wake", "bat_v", "rssi", "buffered", "errors"]
            assert s["state"] in ("online", "sleeping", "offline")
            continue
        assert ch == v1.UP and not m.retain
        if (m.topic, m.send_ms) in malformed:
            n_bad += 1
            with pytest.raises(PackError):
                decode(m.payload, device_id=dev, received_ms=m.send_ms, kind=kinds[dev])
            continue
        n_up += 1
        pack = decode(m.payload, device_id=dev, received_ms=m.send_ms, kind=kinds[dev])
        assert pack.rejects == [] and pack.duplicates == 0 and pack.readings
        seqs[dev].append(pack.seq)
        for r in pack.readings:
            assert sim.start_ms - DAY_MS < r.time_ms <= m.send_ms + 10 * 60_000
    assert n_bad == len(malformed)
    assert n_up > 1000 and n_status > 300
    # the packs a device sends carry consecutive batch numbers (modulo losses, duplicates, reordering)
    for dev, s in seqs.items():
        assert max(s) - min(s) + 1 >= len(set(s))


def test_both_encodings_are_used():
    sim, msgs, _ = _run(days=0.3)
    first = collections.Counter(m.payload[:1] for m in msgs if m.topic.endswith("/up"))
    assert first[b"["] > 0 and sum(v for k, v in first.items() if k != b"[") > 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([m[1] for m in v1.METRICS]), st.floats(-1e4, 1e6, allow_nan=False))
def test_vectorised_quantize_equals_the_firmware_quantize(name, x):
    row = v1.BY_NAME[name]
    q = int(qarray(name, np.array([x]))[0])
    scale = 10 ** row[3]
    if row[4] <= x <= row[5]:
        assert q == v1.quantize(name, x)
    else:                                    # out of range: clipped to the nearest valid value
        assert q in (row[4] * scale, row[5] * scale)
    assert v1.in_range(row, q)


def test_truth_kinds_are_declared():
    _, _, truth = _run(days=2.0, node={"malformed_rate": 0.01})
    kinds = {e.kind for e in truth}
    assert kinds <= set(TRUTH_KINDS)
    assert {"collection", "pothole", "casting", "speed_hump", "malformed"} <= kinds
    for e in truth:
        assert e.tenant == "tiny-town" and e.entity and e.start_ms > 0
        assert e.end_ms is None or e.end_ms >= e.start_ms
        json.loads(to_json_line(e))


# ---- scenario, graph ------------------------------------------------------------------

def test_default_town_scenario_and_graph_api():
    sc = load_scenario()
    assert sc.name == "town" and sc.devices["bins"] >= 2000
    g = sc.graph
    assert g is sc.graph                                  # cached
    g2 = load_scenario("town.yaml").graph
    assert g.to_dict() == g2.to_dict()                    # deterministic from the seed
    assert all(n.id == i for i, n in enumerate(g.nodes)) and all(e.id == i for i, e in enumerate(g.edges))
    assert all(e.length_m > 0 and e.speed_kmh > 0 for e in g.edges)
    assert {e.road_class for e in g.edges} == {"arterial", "high_street", "residential"}
    reach = g.travel_times_from(g.depot.node)
    assert len(reach) == len(g.nodes)                     # connected
    path, secs = g.shortest_path(g.depot.node, g.tipping.node)
    assert path[0] == g.depot.node and path[-1] == g.tipping.node
    assert secs == pytest.approx(reach[g.tipping.node])
    _, metres = g.shortest_path(g.depot.node, g.tipping.node, weight="length")
    assert metres > 1000


def test_graph_json_round_trip_and_scenario_file(tmp_path):
    g = generate_town(5, width_km=1.0, height_km=1.0)
    p = tmp_path / "graph.json"
    g.save_json(p)
    assert StreetGraph.load_json(p).to_dict() == g.to_dict()
    (tmp_path / "mini.yaml").write_text(
        "name: mini\ntenant: mini-town\nstreets: {file: graph.json}\ndevices: {bins: 5, air: 1, noise: 1, road: 1}\n")
    sc = load_scenario(tmp_path / "mini.yaml")
    assert sc.graph.to_dict() == g.to_dict()
    fl = build_fleet(sc)
    assert len(fl.devices) == 8


def test_scenario_rejects_unknown_keys(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nbins: {sample_minutes: 5}\n")
    with pytest.raises(ConfigError, match="sample_minutes"):
        load_scenario(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("name: x\ntenant: Bad_Tenant\n")
    with pytest.raises(ConfigError):
        load_scenario(tmp_path / "bad2.yaml")


@pytest.mark.parametrize("mod", [
    "simulators.rng", "simulators.timebase", "simulators.config", "simulators.geo", "simulators.truth",
    "simulators.weather", "simulators.models.base", "simulators.models.bins", "simulators.models.air",
    "simulators.models.noise", "simulators.models.road", "simulators.node", "simulators.scenario",
    "simulators.fleet", "simulators.context", "simulators.engine", "simulators.runner",
    "simulators.publisher", "simulators.expect",
])
def test_docstring_examples(mod):
    res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
