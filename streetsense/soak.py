"""``streetsense bench soak``: the whole pipeline at a sustained rate for a long
time; are memory and lag stable, or do they drift?

The pipeline is the one chaos runs (:mod:`streetsense.chaos.cluster`: real
processes for PostgreSQL, both Mosquittos, the gateway, two ingest workers,
the alerts runner and outbox), fed by the simulated town through the gateway
at a fixed speed. The **target rate** is the town's real-time rate (mean over
one simulated day, measured by a dry run of the same scenario) times the
speed ``K``; ``--rate`` asks for a message rate instead and derives ``K``.

Every ``sample_s`` seconds: end-to-end ingest lag p50/p99 of the batches
stored in that window (gateway receive to durable row), readings stored per
second, the gateway queue, the workers' unacknowledged messages, the memory of
each service (RSS of its process tree; PostgreSQL: PSS) and the database size.

**Drift**: per series, the least-squares slope per minute over the measured
period and the last quarter's mean against the first quarter's. Verdict
``drifting`` when a service's memory grows by more than 10 % and 8 MiB from
the first quarter to the last (PostgreSQL is reported, not judged: its PSS
grows as backends touch shared buffers, bounded by ``shared_buffers``), when
the p99 lag of the last quarter exceeds the first quarter's by more than 50 %
and 1 s, or when the gateway's queue grows (last-quarter mean above the
first's by more than 100 messages: a backlog building up); otherwise
``stable``. The alerts runner's checkpoint size is sampled too: runner
memory that grows with it is model state (per device, over simulated time; a
run at speed ``K`` covers ``K`` times its length of simulated time), not a
leak. Then the feed stops, the pipeline
drains, and the database is compared with what was sent (lost, duplicated).

>>> slope_per_min([0.0, 60.0, 120.0], [10.0, 11.0, 12.0])
1.0
>>> quarters([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])
(1.0, 4.0)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import psycopg

from streetsense.chaos.cluster import PROBE, ClusterConfig
from streetsense.chaos.monitor import Sample
from streetsense.chaos.run import start_pipeline, wait_drained
from streetsense.chaos.verify import compare_readings

__all__ = ["run_soak", "realtime_rate", "slope_per_min", "quarters", "drift"]


def slope_per_min(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` against ``ts`` (seconds), per minute."""
    pts = [(t, y) for t, y in zip(ts, ys) if y is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return round(sum((t - mt) * (y - my) for t, y in pts) / var * 60, 4)


def quarters(ys: list[float | None]) -> tuple[float | None, float | None]:
    """Mean of the first and of the last quarter of ``ys`` (None values skipped)."""
    v = [y for y in ys if y is not None]
    if len(v) < 4:
        return None, None
    q = len(v) // 4
    return round(sum(v[:q]) / q, 3), round(sum(v[-q:]) / q, 3)


def realtime_rate(scenario: str, devices: str | None = None, seed: int | None = None,
                  days: float = 1.0) -> dict[str, float]:
    """The town's mean real-time rates (per wall second at speed 1) over ``days`` simulated days (dry run)."""
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.publisher import NullPublisher
    from simulators.runner import run
    from simulators.scenario import load_scenario

    fleet = build_fleet(load_scenario(scenario), counts=devices, seed=seed)
    start = (int(time.time()) // 86400 - 10) * 86_400_000
    st = run(Simulation(fleet, start_ms=start, days=days, seed=seed), NullPublisher())
    secs = days * 86400
    return {"devices": len(fleet.devices), "messages_per_s": st.messages / secs, "readings_per_s": st.readings / secs}


def drift(samples: list[Sample], t0: float, published: list[tuple[float, int]]) -> dict:
    """Slopes, quarter means and the verdict (see the module docstring)."""
    ts = [s.window[1] - t0 for s in samples]
    out: dict = {"memory_mb": {}, "lag_p99_s": {}, "lag_p50_s": {}, "readings_per_s": {}}
    reasons: list[str] = []
    names = sorted({k for s in samples for k in s.memory_mb if k not in ("feed", "link")})
    for n in names:
        ys = [s.memory_mb.get(n) for s in samples]
        first, last = quarters(ys)
        judged = n != "postgres"
        out["memory_mb"][n] = {"slope_per_min": slope_per_min(ts, ys), "first_quarter": first,
                               "last_quarter": last, "judged": judged}
        if judged and first is not None and last is not None and last - first > max(0.1 * first, 8.0):
            reasons.append(f"{n} memory {first} -> {last} MiB")
    for key in ("lag_p99_s", "lag_p50_s", "readings_per_s"):
        ys = [getattr(s, key) for s in samples]
        first, last = quarters(ys)
        out[key] = {"slope_per_min": slope_per_min(ts, ys), "first_quarter": first, "last_quarter": last}
    f, last = out["lag_p99_s"]["first_quarter"], out["lag_p99_s"]["last_quarter"]
    if f is not None and last is not None and last > 1.5 * f and last - f > 1.0:
        reasons.append(f"p99 lag {f} -> {last} s")
    # keeping up: a gateway backlog that builds up means the centre is slower than the town
    first, last = quarters([s.gateway_queue for s in samples])
    out["gateway_queue"] = {"first_quarter": first, "last_quarter": last}
    if first is not None and last is not None and last - first > 100:
        reasons.append(f"gateway queue {first} -> {last} messages")
    if len(published) >= 4:
        q = len(published) // 4
        (ta, pa), (tb, pb) = published[-q - 1], published[-1]
        out["last_quarter_messages_published_per_s"] = round((pb - pa) / max(1e-9, tb - ta), 1)
    out["verdict"] = "drifting" if reasons else "stable"
    out["reasons"] = reasons
    return out


def _checkpoint_bytes(db_url: str) -> int | None:
    """Size of the alerts runner's engine checkpoint (its model state), to tell state growth from leaks."""
    try:
        with psycopg.connect(db_url, connect_timeout=5) as c:
            row = c.execute("""SELECT octet_length(engine) + coalesce((SELECT sum(octet_length(state))::bigint
                                   FROM alert_runner_devices WHERE runner = 'default'), 0)
                               FROM alert_runner_state WHERE runner = 'default'""").fetchone()
        return row[0] if row else None
    except psycopg.Error:
        return None


def _lag_overall(db_url: str, a: float, b: float) -> dict:
    with psycopg.connect(db_url) as c:
        row = c.execute(
            """SELECT count(*),
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
                      max(extract(epoch FROM stored_at - received_at))
               FROM batches WHERE stored_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)""", (a, b)).fetchone()
    return {"batches": row[0], "p50_s": None if row[1] is None else round(float(row[1]), 3),
            "p99_s": None if row[2] is None else round(float(row[2]), 3),
            "max_s": None if row[3] is None else round(float(row[3]), 3)}


def run_soak(minutes: float = 30.0, *, rate: float | None = None, speed: float | None = None,
             scenario: str = "town", devices: str | None = None, seed: int | None = None, sample_s: float = 10.0,
             warmup_s: float = 60.0, warmup_speed: float | None = None, settle_s: float = 60.0,
             work: Path | None = None, quiet: bool = False, env: dict[str, str] | None = None) -> dict:
    """Run the soak; the report (see the module docstring).

    The warm-up runs the town at ``warmup_speed`` (default: the target speed) for ``warmup_s``, then at
    the target speed for ``settle_s`` before measuring: a faster warm-up carries the models past the
    days in which their per-device windows fill (state that is bounded, but grows until full), so the
    measured period shows the service as it runs for months, not its first day."""
    def say(msg: str) -> None:
        if not quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    rt = realtime_rate(scenario, devices, seed)
    if rate is not None:
        speed = rate / rt["messages_per_s"]
    speed = speed or 360.0
    target = {"speed": round(speed, 2), "messages_per_s": round(rt["messages_per_s"] * speed, 1),
              "readings_per_s": round(rt["readings_per_s"] * speed, 1),
              "town_realtime_messages_per_s": round(rt["messages_per_s"], 4),
              "town_realtime_readings_per_s": round(rt["readings_per_s"], 3), "devices": rt["devices"]}
    wspeed = warmup_speed or speed
    report: dict = {"scenario": scenario, "minutes": minutes, "sample_s": sample_s, "warmup_s": warmup_s,
                    "warmup_speed": round(wspeed, 2), "settle_s": settle_s, "target": target}
    tmp = tempfile.TemporaryDirectory(prefix="ss-soak-") if work is None else None
    wd = Path(tmp.name) if tmp is not None else work
    assert wd is not None
    cl = feed = mon = None
    try:
        say(f"target {target['messages_per_s']} msg/s ({target['readings_per_s']} readings/s): "
            f"{scenario} at {speed:.0f}x real time; starting the pipeline")
        sim_s = warmup_s * wspeed + (settle_s + minutes * 60 + 900) * speed   # simulated seconds needed
        cl, feed, mon = start_pipeline(wd, ClusterConfig(scenario=scenario, devices=devices, seed=seed,
                                                         env=env or {}),
                                       wspeed, sim_s / wspeed, sample_s, lookback_s=900.0)
        sim_w = feed.status().get("sim_ms")
        if wspeed != speed:
            say(f"warm-up: {warmup_s:g} s at {wspeed:.0f}x ({warmup_s * wspeed / 86400:.1f} simulated days)")
        time.sleep(warmup_s)
        if wspeed != speed:
            feed.set_speed(speed)
            time.sleep(settle_s)
        t0 = time.time()
        published: list[tuple[float, int]] = []
        checkpoints: list[tuple[float, int | None]] = []
        sim0 = feed.status().get("sim_ms")
        say(f"measuring for {minutes:g} min")
        while time.time() - t0 < minutes * 60:
            published.append((time.time(), feed.status().get("published", 0)))
            checkpoints.append((time.time() - t0, _checkpoint_bytes(cl.db_url)))
            time.sleep(sample_s)
        t1 = time.time()
        published.append((t1, feed.status().get("published", 0)))
        samples = [s for s in mon.since_t(t0) if s.window[1] <= t1 and s.db_error is None]
        report["measured"] = {
            "published_messages_per_s": round((published[-1][1] - published[0][1]) / (t1 - t0), 1),
            "stored_readings_per_s": round(sum(s.readings_per_s or 0 for s in samples) / max(1, len(samples)), 1),
            "lag_overall": _lag_overall(cl.db_url, t0, t1),
            "db_mb_start": round((samples[0].db_bytes or 0) / 2**20, 1) if samples else None,
            "db_mb_end": round((samples[-1].db_bytes or 0) / 2**20, 1) if samples else None,
            "peak_memory_mb": {n: max((s.memory_mb.get(n) or 0) for s in samples)
                               for n in sorted({k for s in samples for k in s.memory_mb})},
            "gateway_queue_max": max((s.gateway_queue or 0 for s in samples), default=None),
            "ingest_pending_max": max((s.ingest_pending or 0 for s in samples), default=None),
            "feed_behind_s_max": max((s.feed_behind_s or 0 for s in samples), default=None)}
        report["drift"] = drift(samples, t0, published)
        cts, cbs = [t for t, _ in checkpoints], [b for _, b in checkpoints]
        first, last = quarters(cbs)
        report["drift"]["runner_checkpoint_bytes"] = {"slope_per_min": slope_per_min(cts, cbs),
                                                      "first_quarter": first, "last_quarter": last}
        sim1 = feed.status().get("sim_ms")
        report["measured"]["simulated_days"] = round((sim1 - sim0) / 86_400_000, 2) if sim0 and sim1 else None
        report["measured"]["simulated_days_before"] = round((sim0 - sim_w) / 86_400_000, 2) if sim0 and sim_w else None
        report["series"] = [{"t_s": round(s.window[1] - t0, 1), "readings_per_s": s.readings_per_s,
                             "lag_p50_s": s.lag_p50_s, "lag_p99_s": s.lag_p99_s, "gateway_queue": s.gateway_queue,
                             "ingest_pending": s.ingest_pending,
                             "db_mb": round(s.db_bytes / 2**20, 1) if s.db_bytes else None,
                             "memory_mb": {k: v for k, v in s.memory_mb.items() if k not in ("feed", "link")}}
                            for s in samples]
        say(f"verdict: {report['drift']['verdict']}; stopping the feed, draining and checking the data")
        report["feed"] = feed.stop()
        report["drain_s"] = wait_drained(cl, mon, 600)
        report["readings"] = compare_readings(cl.db_url, cl.tenant, feed.record, cl.kinds, exclude=(PROBE,))
        report["crashed"] = sorted(cl.crashed())
    finally:
        if mon is not None:
            mon.stop()
        if feed is not None and feed.proc is not None:
            feed.stop(timeout=30)
        if cl is not None:
            cl.stop()
        if tmp is not None:
            tmp.cleanup()
    r = report.get("readings", {})
    report["lost"], report["duplicated"] = r.get("lost"), r.get("duplicated")
    report["verdict"] = report.get("drift", {}).get("verdict")
    return report
