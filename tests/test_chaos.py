"""Fault injection against the real pipeline (``streetsense chaos`` in small).

Real processes throughout: embedded PostgreSQL, central Mosquitto, the
gateway (its own Mosquitto and SQLite queue) behind a cuttable TCP link, two
``streetsense ingest run`` workers, the alerts runner and outbox delivering to
a signed-webhook receiver; a tiny simulated town publishes through the
gateway while the broker is restarted, PostgreSQL restarted, a worker killed
with SIGKILL, the backhaul cut and the webhook taken down. The database must
then hold exactly the readings in the bytes the feed published, and every
queued webhook delivery must have taken effect exactly once.

Also here: the regression test for the gateway bug chaos found (a central
connection that paho closed inside ``publish()`` was never noticed, so the
gateway stopped forwarding for good after a backhaul cut).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streetsense.embedded import MosquittoBroker, free_port

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="mosquitto is not installed")


def _step_until(svc, cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        svc._step()  # noqa: SLF001 - driven by hand to reproduce the exact order of events


def test_gateway_notices_a_central_connection_closed_inside_publish(tmp_path: Path) -> None:
    from gateway.service import GatewayService
    from gateway.settings import GatewaySettings

    central = MosquittoBroker(tmp_path / "central").start()
    s = GatewaySettings(_env_file=None, tenant="t", gateway_id="gw-x", central_url=central.url,
                        data_dir=tmp_path / "gw", local_bind="127.0.0.1", local_port=free_port(),
                        local_service_port=free_port(), sntp_port=0)
    svc = GatewayService(s)
    try:
        svc._start_broker()  # noqa: SLF001
        svc._connect_local()  # noqa: SLF001
        _step_until(svc, lambda: svc.central_up, 20, "gateway never connected to the central broker")
        old = svc.central
        # The link dies under the forwarder: its next publish() fails to write, and paho
        # closes the socket itself (no error reaches the gateway's select loop).
        old.socket().shutdown(socket.SHUT_RDWR)
        info = old.publish("ss/v1/t/dev/up", b"[]", qos=1)
        assert info.rc != 0 and old.socket() is None
        _step_until(svc, lambda: svc.central_up and svc.central is not old, 20,
                    "the gateway kept a dead central connection and never reconnected")
    finally:
        svc._shutdown()  # noqa: SLF001
        central.stop()


def test_chaos_small_loses_and_doubles_nothing_and_every_fault_recovers(tmp_path: Path) -> None:
    from streetsense.chaos.cluster import ClusterConfig
    from streetsense.chaos.run import ChaosConfig, run_chaos

    # the sink outage first: the runner's first wave of alerts is queued while the council is down
    cfg = ChaosConfig(cluster=ClusterConfig(scenario="tiny", seed=3), speed=1200, warmup_s=0, baseline_s=3,
                      faults=[("sink_outage", 5), ("broker_restart", 2), ("postgres_restart", 2), ("worker_kill", 2),
                              ("backhaul_cut", 3)],
                      overload=2.0, overload_s=4, settle_s=0.5, lag_ok_s=3.0, recover_timeout_s=40,
                      drain_timeout_s=40, work=tmp_path / "chaos")
    rep = run_chaos(cfg, quiet=True)
    r, wh = rep["readings"], rep["webhook"]
    assert not rep["crashed"], rep["crashed"]
    assert rep["feed"]["all_acked"] and rep["feed"]["published"] > 300
    assert r["sent_readings"] > 3000 and r["stored"] == r["sent_readings"]
    assert rep["faults"][0]["deliveries_held_by_outage"] > 0, "alerts were queued while the council was down"
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["value_mismatch"] == 0, r
    assert [f["fault"] for f in rep["faults"]] == ["sink_outage", "broker_restart", "postgres_restart",
                                                    "worker_kill", "backhaul_cut"]
    for f in rep["faults"]:
        assert f["recovered"] and f["recovery_s"] is not None, f
    cut = rep["faults"][-1]
    assert cut["gateway_queue_max"] > 0, "the gateway buffered while the backhaul was down"
    assert wh["expected"] > 0 and wh["received"] == wh["expected"] and wh["missing"] == 0, wh
    assert wh["redundant"] == 0 and wh["unknown_keys"] == 0 and wh["unverified"] == 0, wh
    assert rep["overload"]["bounded"] and rep["overload"]["drain_s"] is not None, rep["overload"]
    assert rep["lost"] == 0 and rep["duplicated"] == 0 and rep["ok"]


def test_gateway_backlog_is_not_starved_by_a_saturated_live_lane() -> None:
    """Found by chaos: after a broker restart under load, live messages refilled every slot an ack freed,
    and the backlog queued during the restart never drained. The backlog keeps a reserved share."""
    from gateway.drain import BACKLOG, LIVE, Lanes
    from gateway.queue import Row

    lanes = Lanes(window=10, drain_rate=0)
    backlog = [Row(i, 0, "t", b"", False, 1, None) for i in range(1, 6)]
    lanes.reset(first_id=1, last_id=5)

    def fetch(a: int, b: int, n: int) -> list[Row]:
        return [r for r in backlog if a <= r.id <= b][:n]

    sent_backlog, sent_live, next_id = [], 0, 6
    for _ in range(10):                          # each round: every slot acked, more live than the window
        lanes.committed([Row(i, 0, "t", b"", False, 1, None) for i in range(next_id, next_id + 20)])
        next_id += 20
        batch = lanes.next_batch(0.0, 0, 0, fetch)
        assert len(batch) == 10, "the window is always used in full"
        sent_backlog += [r.id for r, lane in batch if lane == BACKLOG]
        sent_live += sum(1 for _, lane in batch if lane == LIVE)
        lanes.done([r.id for r, _ in batch])
    assert sent_backlog == [1, 2, 3, 4, 5], "the backlog drained, oldest first"
    assert sent_live == 100 - 5
    assert lanes.wake_in(0.0, 9, 0) == 0.0 and not lanes.backlog_pending
