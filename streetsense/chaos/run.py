"""``streetsense chaos``: break the running pipeline on purpose, then prove
nothing was lost or doubled.

Sequence (each step's length is configurable):

1. start the cluster (:mod:`streetsense.chaos.cluster`) and the feed at the
   target speed; warm up, then measure a **baseline** (rate, lag, memory);
2. **faults**, one after another, each followed by a wait for recovery:

   - ``broker_restart``: the central Mosquitto stopped gracefully (SIGTERM,
     so it writes its persistence file) for ``d`` s, then started again.
     Mosquitto persists queued messages only at autosave and shutdown, so a
     ``kill -9`` of the broker can lose what it acknowledged since the last
     autosave: that is Mosquitto's design, not a fault this suite claims to
     survive;
   - ``postgres_restart``: ``pg_ctl stop -m fast``, down ``d`` s, start;
   - ``worker_kill``: ``kill -9`` of ingest worker 0, restarted after ``d`` s
     with the same client id (its persistent session resumes);
   - ``backhaul_cut``: the TCP link between the gateway and the central
     broker taken down for ``d`` s (connections closed and refused); the
     gateway buffers in its SQLite queue and drains when the link returns;
   - ``sink_outage``: the council's webhook answers 503 for ``d/2`` s, then is
     down (connections refused) for ``d/2`` s, then healthy again;

   **recovery time** of an ingest fault: from the moment the service is back
   until two consecutive samples show data flowing with end-to-end p99 lag
   under ``lag_ok_s`` and nothing older than that left at the gateway; of the
   sink outage: until every delivery queued before its end was accepted;
3. **overload**: the feed at ``overload`` × the target speed for a period,
   then back to 1×; the peak memory of every service against its baseline,
   the gateway queue and the workers' unacknowledged messages, and how long
   the backlog takes to drain. ``bounded``: the ingest path (central broker,
   gateway and its broker, workers) peaks at most 1.5 × baseline + 32 MiB and
   the backlog drains; the others are reported, not judged (the runner's and
   PostgreSQL's memory follow the devices and data seen, not the rate);
4. stop the feed, wait for the pipeline to drain, and compare the database
   with the recorded ground truth and the council's log with the outbox
   (:mod:`streetsense.chaos.verify`).

The report is one JSON object; ``ok`` is false (and the command exits 1)
when anything was lost or duplicated or a fault did not recover.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from streetsense.chaos.cluster import PROBE, SINK, Cluster, ClusterConfig
from streetsense.chaos.feed import Feed
from streetsense.chaos.monitor import Monitor, Sample
from streetsense.chaos.verify import compare_deliveries, compare_readings

__all__ = ["ChaosConfig", "run_chaos", "parse_faults", "FAULTS", "summarise", "start_pipeline", "wait_drained"]

FAULTS = ("broker_restart", "postgres_restart", "worker_kill", "backhaul_cut", "sink_outage")
INGEST_SERVICES = ("broker", "gateway", "gateway_broker")


def parse_faults(spec: str) -> list[tuple[str, float]]:
    """``"broker_restart:5,backhaul_cut:30"`` -> [(name, seconds), ...].

    >>> parse_faults("broker_restart:5, sink_outage:20")
    [('broker_restart', 5.0), ('sink_outage', 20.0)]
    >>> parse_faults("")
    []
    """
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, d = part.partition(":")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (one of {', '.join(FAULTS)})")
        out.append((name, float(d or 10)))
    return out


@dataclass
class ChaosConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: simulated seconds per wall second: the target load is the town's real-time rate × speed
    speed: float = 360.0
    overload: float = 2.0
    warmup_s: float = 20.0
    baseline_s: float = 20.0
    overload_s: float = 60.0
    faults: list[tuple[str, float]] = field(default_factory=lambda: [
        ("broker_restart", 5.0), ("postgres_restart", 10.0), ("worker_kill", 10.0), ("backhaul_cut", 30.0),
        ("sink_outage", 30.0)])
    #: steady time after a recovery before the next fault
    settle_s: float = 5.0
    lag_ok_s: float = 5.0
    recover_timeout_s: float = 180.0
    drain_timeout_s: float = 300.0
    interval_s: float = 1.0
    work: Path | None = None


def _max(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return max(v) if v else None


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return round(sum(v) / len(v), 1) if v else None


def summarise(samples: list[Sample]) -> dict:
    """Peaks and means over some samples.

    >>> s = [Sample(t=1, window=(0, 1), batches=3, readings_per_s=10.0, lag_p99_s=0.5, memory_mb={"a": 5.0}),
    ...      Sample(t=2, window=(1, 2), batches=3, readings_per_s=30.0, lag_p99_s=1.5, memory_mb={"a": 7.0})]
    >>> summarise(s)["readings_per_s"], summarise(s)["peak_memory_mb"]
    (20.0, {'a': 7.0})
    """
    names = sorted({k for s in samples for k in s.memory_mb})
    return {"samples": len(samples), "readings_per_s": _mean([s.readings_per_s for s in samples]),
            "lag_p99_s_max": _max([s.lag_p99_s for s in samples]), "lag_max_s": _max([s.lag_max_s for s in samples]),
            "gateway_queue_max": _max([s.gateway_queue for s in samples]),
            "ingest_pending_max": _max([s.ingest_pending for s in samples]),
            "peak_memory_mb": {n: _max([s.memory_mb.get(n) for s in samples]) for n in names}}


class _Say:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[chaos {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def start_pipeline(work: Path, ccfg: ClusterConfig, speed: float, horizon_s: float, interval_s: float,
                   lookback_s: float = 120.0) -> tuple[Cluster, Feed, Monitor]:
    """Cluster, feed (simulated time ending ``horizon_s`` × speed after its start, all in the past) and monitor."""
    cl = Cluster(work, ccfg)
    try:
        cl.start()
    except BaseException:
        cl.stop()
        raise
    span_ms = int(horizon_s * speed * 1000)
    start_ms = int(time.time() * 1000) - span_ms - 3_600_000
    feed = Feed(cl.gateway_url, cl.work, scenario=ccfg.scenario, speed=speed, start_ms=start_ms,
                days=span_ms / 86_400_000, devices=ccfg.devices, seed=ccfg.seed, log=cl.logs / "feed.log").start()
    deadline = time.monotonic() + 90
    while not feed.status():            # the simulation is built and publishing
        if time.monotonic() > deadline or (feed.proc is not None and feed.proc.poll() is not None):
            cl.stop()
            raise RuntimeError(f"the feed did not start: {cl.tail('feed')}")
        time.sleep(0.1)
    mon = Monitor(cl.db_url, lambda: {**cl.pids(), "feed": feed.pid}, interval=interval_s,
                  gateway_health=cl.gateway_health, worker_ports=cl.worker_ports, feed_status=feed.status,
                  lookback_s=lookback_s).start()
    return cl, feed, mon


def _wait_good(mon: Monitor, after: float, lag_ok_s: float, timeout: float, need: int = 2) -> float | None:
    """Seconds from ``after`` to the first of ``need`` consecutive good samples whose window ends after it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = 0
        first: Sample | None = None
        for s in mon.since_t(after):
            if s.window[1] <= after:
                continue
            if s.good(lag_ok_s):
                run += 1
                first = first or s
                if run >= need:
                    return round(max(0.0, first.window[1] - after), 1)
            else:
                run, first = 0, None
        time.sleep(0.25)
    return None


def _pending_before(cl: Cluster, t: float) -> int:
    with psycopg.connect(cl.db_url) as c:
        return c.execute("""SELECT count(*) FROM alert_deliveries WHERE tenant = %s AND sink = %s
                              AND status IN ('pending', 'sending') AND created_at <= to_timestamp(%s)""",
                         (cl.tenant, SINK, t)).fetchone()[0]


def _sink_figures(cl: Cluster, t0: float, t1: float) -> dict:
    with psycopg.connect(cl.db_url) as c:
        affected, queued = c.execute(
            """SELECT count(*) FILTER (WHERE created_at <= to_timestamp(%(t1)s)
                                         AND (delivered_at IS NULL OR delivered_at > to_timestamp(%(t0)s))),
                      count(*) FILTER (WHERE created_at BETWEEN to_timestamp(%(t0)s) AND to_timestamp(%(t1)s))
               FROM alert_deliveries WHERE tenant = %(tenant)s AND sink = %(sink)s""",
            {"t0": t0, "t1": t1, "tenant": cl.tenant, "sink": SINK}).fetchone()
    return {"deliveries_held_by_outage": affected, "deliveries_queued_during_outage": queued}


def _inject(cl: Cluster, name: str, d: float) -> tuple[float, float, dict]:
    """Run one fault for ``d`` seconds; (start, end = service back, extra figures)."""
    extra: dict = {}
    t0 = time.time()
    if name == "broker_restart":
        cl.broker_down()
        time.sleep(d)
        cl.broker_up()
        extra["how"] = "graceful: SIGTERM (Mosquitto saves sessions and queues), then start"
    elif name == "postgres_restart":
        cl.postgres_down()
        time.sleep(d)
        cl.postgres_up()
        extra["how"] = "pg_ctl stop -m fast, then start"
    elif name == "worker_kill":
        cl.kill_worker(0)
        time.sleep(d)
        cl.start_worker(0)
        extra["how"] = "SIGKILL of ingest-0, restarted with the same client id"
    elif name == "backhaul_cut":
        assert cl.link is not None
        cl.link.cut()
        time.sleep(d)
        cl.link.restore()
        extra["how"] = "gateway-to-central TCP link closed and refused, then restored"
    elif name == "sink_outage":
        assert cl.council is not None
        refused0 = cl.council.refused
        cl.council.outage("503")
        time.sleep(d / 2)
        cl.council.outage("down")
        time.sleep(d / 2)
        cl.council.outage(None)
        extra["how"] = "webhook answers 503 for half the time, then refuses connections"
        extra["posts_refused_503"] = cl.council.refused - refused0
    else:  # pragma: no cover - parse_faults guards
        raise ValueError(name)
    return t0, time.time(), extra


def wait_drained(cl: Cluster, mon: Monitor, timeout: float, quiet_s: float = 3.0) -> float | None:
    """Seconds until the gateway queue is empty, workers hold nothing and no batch was committed for ``quiet_s``."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = mon.latest()
        if s is not None and not s.gateway_queue and not s.ingest_pending and s.db_error is None:
            try:
                with psycopg.connect(cl.db_url) as c:
                    idle = c.execute("SELECT coalesce(extract(epoch FROM now() - max(committed_at)), 1e9) "
                                     "FROM ingest_log").fetchone()[0]
                if idle >= quiet_s:
                    return round(time.time() - t0, 1)
            except psycopg.OperationalError:
                pass
        time.sleep(0.5)
    return None


def _runner_caught_up(cl: Cluster, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with psycopg.connect(cl.db_url) as c:
                row = c.execute("""SELECT (SELECT max(id) FROM ingest_log),
                                          (SELECT log_id FROM alert_runner_state WHERE runner = 'default')""").fetchone()
            if row[0] is not None and row[1] is not None and row[1] >= row[0]:
                return True
        except psycopg.OperationalError:
            pass
        time.sleep(0.5)
    return False


def run_chaos(cfg: ChaosConfig, quiet: bool = False) -> dict:
    """Run the whole sequence; the report (see the module docstring)."""
    say = _Say(quiet)
    tmp = None
    if cfg.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ss-chaos-")
        work = Path(tmp.name)
    else:
        work = cfg.work
        work.mkdir(parents=True, exist_ok=True)
    horizon = (cfg.warmup_s + cfg.baseline_s + cfg.overload_s * cfg.overload + sum(d for _, d in cfg.faults)
               + len(cfg.faults) * (cfg.settle_s + 60) + 600)
    report: dict = {"config": {
        "scenario": cfg.cluster.scenario, "devices": cfg.cluster.devices, "seed": cfg.cluster.seed,
        "workers": cfg.cluster.workers, "speed": cfg.speed, "overload_factor": cfg.overload,
        "faults": [{"fault": n, "down_s": d} for n, d in cfg.faults], "lag_ok_s": cfg.lag_ok_s,
        "interval_s": cfg.interval_s}}
    cl: Cluster | None = None
    feed: Feed | None = None
    mon: Monitor | None = None
    try:
        say("starting PostgreSQL, brokers, link, gateway, workers, alerts runner and outbox")
        t_start = time.time()
        cl, feed, mon = start_pipeline(work, cfg.cluster, cfg.speed, horizon, cfg.interval_s)
        report["config"]["tenant"] = cl.tenant
        report["config"]["fleet_devices"] = len(cl.kinds)
        report["startup_s"] = round(time.time() - t_start, 1)
        report["startup_steps_s"] = cl.timings
        say(f"publishing {len(cl.kinds)} devices at {cfg.speed:g}x real time; warm-up {cfg.warmup_s:g} s")
        time.sleep(cfg.warmup_s)
        b0 = time.time()
        p0 = feed.status().get("published", 0)
        time.sleep(cfg.baseline_s)
        while len([s for s in mon.since_t(b0) if s.db_error is None]) < 2:     # at least two full windows
            time.sleep(0.25)
        base = summarise(mon.since_t(b0))
        base["messages_per_s"] = round((feed.status().get("published", 0) - p0) / max(1e-9, time.time() - b0), 1)
        report["baseline"] = base
        say(f"baseline: {base['messages_per_s']} msg/s, {base['readings_per_s']} readings/s stored, "
            f"p99 lag {base['lag_p99_s_max']} s")

        faults = []
        for name, d in cfg.faults:
            if name == "sink_outage" and cl.council is None:
                continue
            say(f"fault {name} for {d:g} s")
            before = summarise([s for s in mon.since_t(time.time() - 10)])
            mon.since = time.time()
            t0, t1, extra = _inject(cl, name, d)
            if name == "sink_outage":
                rec = None
                deadline = time.time() + cfg.recover_timeout_s
                while time.time() < deadline:
                    try:
                        if _pending_before(cl, t1) == 0:
                            rec = round(time.time() - t1, 1)
                            break
                    except psycopg.OperationalError:
                        pass
                    time.sleep(0.25)
                extra.update(_sink_figures(cl, t0, t1))
            else:
                rec = _wait_good(mon, t1, cfg.lag_ok_s, cfg.recover_timeout_s)
            during = summarise(mon.since_t(t0))
            mon.since = None
            f = {"fault": name, "down_s": round(t1 - t0, 1), "recovered": rec is not None, "recovery_s": rec,
                 "readings_per_s_before": before["readings_per_s"], "lag_max_s": during["lag_max_s"],
                 "gateway_queue_max": during["gateway_queue_max"], **extra}
            crashed = cl.crashed()
            if crashed:
                f["crashed"] = {n: {"exit": rc, "log": cl.tail(n, 600)} for n, rc in crashed.items()}
            faults.append(f)
            say(f"  {name}: recovered={f['recovered']} in {rec} s (max lag {f['lag_max_s']} s)")
            time.sleep(cfg.settle_s)
        report["faults"] = faults

        if cfg.overload_s > 0:
            say(f"overload: {cfg.overload:g}x for {cfg.overload_s:g} s")
            o0 = time.time()
            p0 = feed.status().get("published", 0)
            feed.set_speed(cfg.speed * cfg.overload)
            time.sleep(cfg.overload_s)
            o1 = time.time()
            rate = (feed.status().get("published", 0) - p0) / max(1e-9, o1 - o0)
            feed.set_speed(cfg.speed)
            drain = _wait_good(mon, o1, cfg.lag_ok_s, cfg.recover_timeout_s)
            ov = summarise([s for s in mon.since_t(o0) if s.t <= time.time()])
            ov["messages_per_s"] = round(rate, 1)
            ov["feed_behind_s_max"] = _max([s.feed_behind_s for s in mon.since_t(o0)])
            ov["drain_s"] = drain
            bounded = {}
            for n, peak in ov["peak_memory_mb"].items():
                b = base["peak_memory_mb"].get(n)
                if peak is None or b is None or n in ("feed", "link"):
                    continue
                judged = n in INGEST_SERVICES or n.startswith("ingest-")
                bounded[n] = {"baseline_mb": b, "overload_mb": peak, "ratio": round(peak / b, 2) if b else None,
                              "judged": judged, "bounded": peak <= 1.5 * b + 32}
            ov["memory"] = bounded
            ov["bounded"] = all(v["bounded"] for v in bounded.values() if v["judged"]) and drain is not None
            report["overload"] = ov
            say(f"overload: {ov['messages_per_s']} msg/s, drained in {drain} s, bounded={ov['bounded']}")
            time.sleep(cfg.settle_s)

        say("stopping the feed and draining")
        fr = feed.stop()
        report["feed"] = fr
        report["drain_s"] = wait_drained(cl, mon, cfg.drain_timeout_s)
        say(f"drained in {report['drain_s']} s; comparing with the ground truth")
        readings = compare_readings(cl.db_url, cl.tenant, feed.record, cl.kinds, exclude=(PROBE,))
        if readings["lost"]:
            time.sleep(10)       # late stragglers: look once more before calling it lost
            readings = compare_readings(cl.db_url, cl.tenant, feed.record, cl.kinds, exclude=(PROBE,))
        report["readings"] = readings
        if cl.council is not None:
            caught_up = _runner_caught_up(cl, 120)
            from streetsense.chaos.verify import wait_deliveries

            waited = wait_deliveries(cl.db_url, cl.tenant, SINK, 120)
            report["webhook"] = {"runner_caught_up": caught_up, "outbox_drain_s": waited,
                                 **compare_deliveries(cl.db_url, cl.tenant, SINK, cl.council)}
        report["crashed"] = {n: {"exit": rc, "log": cl.tail(n, 600)} for n, rc in cl.crashed().items()}
        mon.stop()
        report["peak_memory_mb"] = summarise(mon.samples)["peak_memory_mb"]
        report["memory_note"] = "RSS of each service's process tree; PostgreSQL: PSS summed over its processes"
    finally:
        if mon is not None:
            mon.stop()
        if feed is not None and feed.proc is not None:
            feed.stop(timeout=30)
        if cl is not None:
            cl.stop()
        if tmp is not None:
            tmp.cleanup()
    wh = report.get("webhook", {})
    r = report.get("readings", {})
    report["lost"] = r.get("lost", 0) + wh.get("missing", 0)
    report["duplicated"] = r.get("duplicated", 0) + wh.get("redundant", 0) + wh.get("unknown_keys", 0)
    report["all_recovered"] = all(f["recovered"] for f in report.get("faults", []))
    report["ok"] = (report["lost"] == 0 and report["duplicated"] == 0 and report["all_recovered"]
                    and not report.get("crashed", {"not reached": 1})
                    and r.get("value_mismatch", 0) == 0 and bool(report.get("feed", {}).get("all_acked")))
    return report

