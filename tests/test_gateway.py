"""Gateway parts without brokers: queue, lanes, validation, config, SNTP over real UDP.

The end-to-end behaviour (real Mosquitto processes) is in test_gateway_e2e.py.
"""

from __future__ import annotations

import doctest
import importlib
import socket
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract import v1
from gateway.broker import broker_config
from gateway.drain import BACKLOG, LIVE, Lanes, TokenBucket
from gateway.forwarder import user_properties
from gateway.queue import DurableQueue, Item, Row
from gateway.settings import GatewaySettings
from gateway.sntp import NTP_EPOCH_OFFSET, SntpServer, build_reply, from_ntp, ntp_timestamp
from gateway.validate import classify

BT = 1767225600


@pytest.mark.parametrize("mod", ["bench", "broker", "cli", "drain", "forwarder", "health", "queue", "relay", "service",
                                 "settings", "sntp", "validate"])
def test_docstring_examples(mod: str) -> None:
    res = doctest.testmod(importlib.import_module(f"gateway.{mod}"), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0


# --- queue -----------------------------------------------------------------

def _items(n: int, start: int = 0, size: int = 600) -> list[Item]:
    return [Item(BT * 1000 + i, f"ss/v1/t/d-{i % 7}/up", bytes([i % 251]) * size, False, 20, None)
            for i in range(start, start + n)]


def test_queue_survives_reopen_and_keeps_order_ids_and_retained(tmp_path: Path) -> None:
    p = tmp_path / "q.sqlite3"
    q = DurableQueue(p)
    rows = q.append(_items(100))
    st = q.append([Item(BT * 1000, "ss/v1/t/d-1/status", b'{"state":"online","fw":"1","t":0}', True, 0, None)])
    q.delete([r.id for r in rows[:40]], readings=40 * 20)
    q.close()
    q = DurableQueue(p)
    assert (q.depth, q.readings) == (61, 60 * 20)
    assert q.next_id == st[0].id + 1                    # ids never reused
    assert q.retained == {"ss/v1/t/d-1/status": st[0].id}
    got = q.read(0, 10**9, 1000)
    assert [r.id for r in got] == [r.id for r in rows[40:]] + [st[0].id]
    assert got[0].payload == rows[40].payload and got[-1].retain
    # deleting everything and appending again still never reuses an id
    q.delete([r.id for r in got], readings=60 * 20)
    assert q.append(_items(1))[0].id == st[0].id + 1
    q.close()


def test_queue_used_bytes_tracks_live_data_and_frees_pages(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite3")
    empty = q.used_bytes()
    rows = q.append(_items(2000))
    full = q.used_bytes()
    assert full - empty > 2000 * 600
    assert full - empty < 2000 * 700          # ~40 bytes a row on top of the payload
    q.delete([r.id for r in rows], readings=2000 * 20)
    assert q.used_bytes() <= empty + 4 * q.page_size
    q.reclaim()
    assert q.file_bytes() < full / 4
    q.close()


# --- lanes -------------------------------------------------------------------

def _rows(ids: range) -> list[Row]:
    return [Row(i, 0, "ss/v1/t/d/up", b"x", False, 1, None) for i in ids]


def _fetcher(rows: list[Row]):
    def fetch(a: int, b: int, n: int) -> list[Row]:
        return [r for r in rows if a <= r.id <= b][:n]
    return fetch


def test_lanes_live_first_backlog_oldest_first_and_rate_limited() -> None:
    stored = _rows(range(1, 1001))
    lanes = Lanes(window=100, drain_rate=200, now=0.0)          # burst = 10 tokens
    lanes.reset(first_id=1, last_id=1000)
    out = lanes.next_batch(0.0, 0, 0, _fetcher(stored))
    assert [r.id for r, _ in out] == list(range(1, 11))           # the burst, oldest first
    live = _rows(range(1001, 1004))
    stored += live
    lanes.committed(live)
    out = lanes.next_batch(0.01, 0, 10, _fetcher(stored))
    assert [(r.id, lane) for r, lane in out] == [(1001, LIVE), (1002, LIVE), (1003, LIVE), (11, BACKLOG), (12, BACKLOG)]
    # over one simulated second the backlog moves at the configured rate
    sent, t = 0, 0.01
    while t < 1.01:
        t += 0.01
        sent += len(lanes.next_batch(t, 0, 0, _fetcher(stored)))
    assert 190 <= sent <= 210


def test_lanes_backlog_never_takes_the_whole_window_and_skips_busy_rows() -> None:
    stored = _rows(range(1, 101))
    lanes = Lanes(window=10, drain_rate=0, backlog_share=0.5)
    lanes.reset(1, 100)
    first = lanes.next_batch(0.0, 0, 0, _fetcher(stored))
    assert len(first) == 5 and all(lane == BACKLOG for _, lane in first)
    assert lanes.next_batch(0.0, 0, 5, _fetcher(stored)) == []   # backlog share used up
    lanes.committed(_rows(range(101, 104)))
    assert [lane for _, lane in lanes.next_batch(0.0, 0, 5, _fetcher(stored))] == [LIVE] * 3
    # a reconnect re-reads the queue but never a row still marked busy (acked, not yet deleted)
    lanes.reset(1, 103)
    lanes.busy.update({1, 2})
    assert [r.id for r, _ in lanes.next_batch(0.0, 0, 0, _fetcher(stored))] == [3, 4, 5, 6, 7]


def test_lanes_demote_live_to_backlog_when_the_centre_cannot_keep_up() -> None:
    lanes = Lanes(window=10, drain_rate=0, live_cap=50)
    lanes.reset(1, 0)
    stored = _rows(range(1, 61))
    lanes.committed(stored[:40])
    lanes.committed(stored[40:])          # 60 > cap: everything becomes backlog (read back from disk)
    assert not lanes.live and lanes.hi == 60
    ids = []
    for _ in range(20):
        got = lanes.next_batch(0.0, 0, 0, _fetcher(stored))
        ids += [r.id for r, _ in got]
        lanes.done([r.id for r, _ in got])
    assert ids == list(range(1, 61))


def test_lanes_disconnect_moves_unsent_live_rows_to_backlog_and_failed_rows_retry() -> None:
    lanes = Lanes(window=10, drain_rate=0)
    lanes.reset(1, 0)
    stored = _rows(range(1, 4))
    lanes.committed(stored)
    lanes.disconnected()
    assert lanes.next_batch(0.0, 0, 0, _fetcher(stored)) == []
    lanes.reset(1, 3)
    out = lanes.next_batch(0.0, 0, 0, _fetcher(stored))
    assert [r.id for r, _ in out] == [1, 2, 3]
    lanes.failed(out[1][0])
    assert lanes.next_batch(0.0, 0, 0, _fetcher(stored), retry_ok=False) == []
    assert [r.id for r, _ in lanes.next_batch(0.0, 0, 0, _fetcher(stored))] == [2]


def test_token_bucket_unlimited_and_wait() -> None:
    b = TokenBucket(0)
    assert b.available(0.0) > 10**6 and b.wait_s(0.0) == 0.0
    b = TokenBucket(10, burst=1, now=0.0)
    b.spend(b.available(0.0))
    assert 0.09 < b.wait_s(0.0) <= 0.1


# --- validation and forwarding marks ----------------------------------------------

def test_classify_marks_each_kind_of_invalid_message() -> None:
    now = (BT + 60) * 1000
    good = v1.encode_json("bin-1", BT, 1, [("fill", 500, 0), ("temp", 2000, 0)])
    assert classify("ss/v1/t/bin-1/up", good, now) == (v1.UP, "bin-1", 2, None)
    cases = {
        b"{not json": "bad_encoding",
        v1.encode_json("bin-9", BT, 1, [("fill", 1, 0)]): "bad_base_name",
        v1.encode_json("bin-1", BT, 2, [("fill", 5000, 0), ("temp", 2000, 0)]): "records_rejected",
        b"": "empty",
    }
    for payload, code in cases.items():
        assert classify("ss/v1/t/bin-1/up", payload, now).reason.split(":")[0] == code
    partly = classify("ss/v1/t/bin-1/up", v1.encode_json("bin-1", BT, 2, [("fill", 5000, 0), ("temp", 2000, 0)]), now)
    assert partly.readings == 1
    assert classify("ss/v1/t/Bad_Id/up", good, now).reason.startswith("bad_topic")
    assert classify("ss/v1/t/bin-1/status", v1.encode_status("online", "1", BT), now).reason is None
    assert classify("ss/v1/t/bin-1/status", b"[]", now).reason.startswith("bad_status")
    assert classify("ss/v1/t/bin-1/ack", b'{"cfg": 3, "ok": true}', now).reason is None
    assert classify("ss/v1/t/bin-1/ack", b"yes", now).reason.startswith("bad_ack")
    assert classify("ss/v1/t/bin-1/cfg", b"{}", now).reason.startswith("bad_channel")


def test_hand_packed_user_properties_decode_with_paho() -> None:
    pairs = [("ss-rx", "1767225600123"), ("ss-gw", "gw-1"), ("ss-invalid", "bad_encoding: " + "é" * 200)]
    packed = user_properties(pairs)
    p = Properties(PacketTypes.PUBLISH)
    p.unpack(packed)
    assert p.UserProperty == pairs


# --- config ------------------------------------------------------------------

def test_broker_config_listeners_credentials_and_refusal() -> None:
    conf = broker_config(device_port=1883, service_port=11883, data_dir=Path("/srv/gw"), device_bind="0.0.0.0",
                         password_file=Path("/etc/ss/pw"), acl_file=Path("/etc/ss/acl"), run_as_root=False)
    lines = conf.splitlines()
    assert "per_listener_settings true" in lines and "persistence true" in lines
    svc, dev = lines.index("listener 11883 127.0.0.1"), lines.index("listener 1883 0.0.0.0")
    assert lines[svc + 1] == "allow_anonymous true"                     # loopback: the gateway itself
    assert lines[dev + 1:dev + 4] == ["allow_anonymous false", "password_file /etc/ss/pw", "acl_file /etc/ss/acl"]
    assert any(ln.startswith("max_queued_messages ") for ln in lines)
    anon = broker_config(device_port=1883, service_port=11883, data_dir=Path("/srv/gw"), run_as_root=False)
    assert "password_file" not in anon and "acl_file" not in anon
    closed = broker_config(device_port=1883, service_port=11883, data_dir=Path("/srv/gw"), accept_devices=False,
                           password_file=Path("/etc/ss/pw"), run_as_root=False)
    assert "listener 1883" not in closed and "listener 11883 127.0.0.1" in closed


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREETSENSE_GATEWAY_TENANT", "leeds")
    monkeypatch.setenv("STREETSENSE_GATEWAY_GATEWAY_ID", "gw-7")
    monkeypatch.setenv("STREETSENSE_GATEWAY_CENTRAL_URL", "mqtts://gw-7:pw@central.example:8883")
    monkeypatch.setenv("STREETSENSE_GATEWAY_MAX_BYTES", "1048576")
    monkeypatch.setenv("STREETSENSE_GATEWAY_DRAIN_RATE", "250")
    monkeypatch.setenv("STREETSENSE_GATEWAY_DEVICES", "bin-1,bin-2")
    monkeypatch.setenv("STREETSENSE_GATEWAY_DATA_DIR", str(tmp_path))
    s = GatewaySettings()
    assert (s.tenant, s.gateway_id, s.max_bytes, s.drain_rate, s.devices) == ("leeds", "gw-7", 1048576, 250.0,
                                                                              ["bin-1", "bin-2"])
    assert s.queue_file == tmp_path / "queue.sqlite3"
    assert s.refuse_at_bytes < s.max_bytes and s.resume_at_bytes < s.refuse_at_bytes


# --- SNTP over real UDP --------------------------------------------------------

def _sntp_request(version: int = 4, mode: int = 3) -> tuple[bytes, float]:
    t = time.time()
    return bytes([(0 << 6) | (version << 3) | mode]) + bytes(39) + ntp_timestamp(t), t


def test_sntp_server_answers_a_hand_made_request_with_sane_time() -> None:
    srv = SntpServer("127.0.0.1", 0).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for version in (3, 4):
                req, t0 = _sntp_request(version)
                s.sendto(req, ("127.0.0.1", srv.port))
                rep, _ = s.recvfrom(512)
                t1 = time.time()
                assert len(rep) == 48
                li, vn, mode = rep[0] >> 6, (rep[0] >> 3) & 7, rep[0] & 7
                assert (vn, mode) == (version, 4)
                assert rep[24:32] == req[40:48]                      # originate = our transmit
                rx, tx = from_ntp(rep[32:40]), from_ntp(rep[40:48])
                assert t0 - 0.01 <= rx <= tx <= t1 + 0.01
                # what a client computes: offset ~ 0 against the same clock, tiny delay
                offset = ((rx - t0) + (tx - t1)) / 2
                assert abs(offset) < 0.05 and (t1 - t0) - (tx - rx) < 0.5
                assert (li, rep[1]) in ((0, 2), (3, 16))             # synced, or honestly not
                sec = struct.unpack("!I", rep[40:44])[0]
                assert sec - NTP_EPOCH_OFFSET == int(tx)
            # not client requests: no answer
            for bad in (b"\x1b" * 10, _sntp_request(mode=4)[0], _sntp_request(version=0)[0]):
                s.sendto(bad, ("127.0.0.1", srv.port))
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recvfrom(512)
        assert srv.answered == 2 and srv.ignored == 3
    finally:
        srv.stop()


def test_sntp_reply_fields_when_synced_or_not() -> None:
    req, _ = _sntp_request()
    synced = build_reply(req, 1.0e9, 1.0e9 + 0.001, synced=True, stratum=3)
    unsynced = build_reply(req, 1.0e9, 1.0e9, synced=False)
    assert (synced[0] >> 6, synced[1]) == (0, 3)
    assert (unsynced[0] >> 6, unsynced[1]) == (3, 16)
    assert from_ntp(ntp_timestamp(2_200_000_000.5)) == 2_200_000_000.5     # after the 2036 era rollover


def test_status_reads_a_queue_file_without_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    q = DurableQueue(tmp_path / "queue.sqlite3")
    q.append(_items(3))
    monkeypatch.setenv("STREETSENSE_GATEWAY_DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["status"])
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.output)
    assert out["depth"] == 3 and out["readings"] == 60 and out["used_bytes"] > 0
    q.close()
    # the file stays a plain SQLite database anyone can inspect
    assert sqlite3.connect(tmp_path / "queue.sqlite3").execute("SELECT count(*) FROM queue").fetchone()[0] == 3
