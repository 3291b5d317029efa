"""``streetsense bench ingest``: durable end-to-end ingest rate, measured against
the physical limit in the same run.

Three measurements on the same database server and the same rows:

1. **pipeline**: N readings in SenML packs published at QoS 1 through the real
   broker, consumed by ``streetsense ingest run`` worker processes, counted when
   durable in PostgreSQL; then a second, paced run at half that rate for latency.
2. **copy**: raw binary COPY of the same rows into the same (empty) readings
   table, in commits of the same size (no broker, no decoding, no dedupe):
   the ceiling. Measured first; the table is emptied before the pipeline run.
3. **naive**: a subscriber that runs one INSERT (autocommit) per MQTT message.

Latency is per pack, from the publisher handing it to the client library to
the row in ``batches`` being written in the committing transaction.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
from rich.progress import Progress

from contract import v1
from ingest.migrate import migrate
from ingest.pgcopy import COLUMNS, encode_readings
from streetsense.embedded import services
from streetsense.mqtt import make_client, publish_all
from streetsense.settings import Settings

TENANT = "bench"
DEVICES = 1000


def _percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def _build(devices: list[str], packs_per_device: int, pack: int, base_s: int, seq0: int = 0):
    """Messages (topic, payload, device, seq) and the same rows for COPY."""
    msgs = []
    for seq in range(seq0, seq0 + packs_per_device):
        for d in devices:
            recs = [("fill", (seq * pack + j) * 7 % 1000, (seq * pack + j) * 60_000) for j in range(pack)]
            msgs.append((v1.topic(TENANT, d, v1.UP), v1.encode_json(d, base_s, seq, recs), d, seq))
    return msgs


def _copy_rows(dev_pk: dict[str, int], devices: list[str], packs: int, pack: int, base_s: int) -> list[tuple]:
    """The rows the pipeline run will store, in the order it receives them."""
    fill_id = v1.metric("fill")[0]
    rows = []
    for seq in range(packs):
        for d in devices:
            pk = dev_pk[d]
            for j in range(pack):
                i = seq * pack + j
                rows.append(((base_s + i * 60) * 1000, pk, fill_id, ((i * 7) % 1000) / 1000))
    return rows


def _copy_ceiling(url: str, rows: list[tuple], chunk: int) -> float:
    """Rows/s of raw binary COPY into ``readings`` itself (same table, indexes,
    partitions or chunks), committed every ``chunk`` rows like the pipeline's
    batches; the table is emptied afterwards."""
    with psycopg.connect(url) as c:
        bufs = [encode_readings(*zip(*rows[k:k + chunk])) for k in range(0, len(rows), chunk)]
        t0 = time.perf_counter()
        for b in bufs:
            with c.cursor() as cur, cur.copy(f"COPY readings {COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(b)
            c.commit()
        dt = time.perf_counter() - t0
        c.execute("TRUNCATE readings")
        c.commit()
    return len(rows) / dt


def _wait_inserted(url: str, target: int, timeout: float) -> float:
    """Poll ingest_log until ``target`` rows are durable; return the time it happened."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as c:
        while True:
            n = c.execute("SELECT coalesce(sum(inserted), 0) FROM ingest_log").fetchone()[0]
            if n >= target:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {target} readings durable after {timeout} s")
            time.sleep(0.02)


def _naive_consumer(db_url: str, mqtt_url: str, ready: multiprocessing.Event, stop: multiprocessing.Event) -> None:
    """One INSERT per MQTT message, autocommit: the baseline to beat."""
    import paho.mqtt.client as mqtt

    from contract.decode import decode

    conn = psycopg.connect(db_url, autocommit=True)
    pks = dict(conn.execute("SELECT device_id, id FROM devices WHERE tenant = %s", (TENANT,)).fetchall())

    def on_message(c, u, msg):
        _, dev, _ = v1.parse_topic(msg.topic)
        pack = decode(msg.payload, device_id=dev, received_ms=int(time.time() * 1000))
        vals = [(r.time_ms, pks[dev], r.metric_id, r.value) for r in pack.readings]
        placeholders = ",".join(["(timestamptz 'epoch' + %s * interval '1 millisecond', %s, %s, %s)"] * len(vals))
        conn.execute("INSERT INTO readings_naive (time, device_id, metric, value) VALUES " + placeholders
                     + " ON CONFLICT DO NOTHING", [x for v in vals for x in v])

    c = make_client(mqtt_url, "bench-naive", session=True)
    c.on_message = on_message
    c.subscribe("ss/v1/bench/+/up", qos=1)
    for _ in range(50):
        c.loop(0.01)
    ready.set()
    while not stop.is_set():
        c.loop(0.01)
    c.disconnect()


def run_bench(settings: Settings, *, readings: int = 500_000, pack: int = 50, workers: int = 1,
              progress: bool = True, naive_readings: int = 100_000) -> dict:
    packs_per_device = max(1, readings // (pack * DEVICES))
    n = packs_per_device * pack * DEVICES
    devices = [f"bench-{i:05d}" for i in range(DEVICES)]
    # all readings in the past: each device covers packs*pack minutes ending a day ago
    span_s = 2 * packs_per_device * pack * 60
    base_s = int(time.time()) - span_s - 2 * 86400
    out: dict = {"readings": n, "pack_size": pack, "devices": DEVICES, "workers": workers, "cpus": os.cpu_count()}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ss-bench-")))
        svc = stack.enter_context(services(settings.database_url, settings.mqtt_url, tmp))
        url = _scratch_db(svc.database_url)
        with psycopg.connect(url) as c:
            migrate(c, timescale=settings.timescale)
            out["storage"] = c.execute("SELECT variant FROM schema_migrations WHERE variant IS NOT NULL").fetchone()[0]
            c.execute("INSERT INTO tenants VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,))
            c.cursor().executemany("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, %s, 'bin_fill')",
                                   [(TENANT, d) for d in devices + ["bench-probe"]])
            dev_pk = dict(c.execute("SELECT device_id, id FROM devices").fetchall())
            c.execute("CREATE TABLE readings_naive (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        # the ceiling first, into the empty readings table the pipeline will fill
        copy_rate = _copy_ceiling(url, _copy_rows(dev_pk, devices, packs_per_device, pack, base_s),
                                  settings.ingest_batch_readings)
        out["copy_rows_per_s"] = round(copy_rate)
        msgs = _build(devices, packs_per_device, pack, base_s)
        half_msgs = _build(devices, max(1, packs_per_device // 2), pack, base_s, seq0=packs_per_device)
        n_half = len(half_msgs) * pack

        env = dict(os.environ, DATABASE_URL=url, MQTT_URL=svc.mqtt_url, STREETSENSE_INGEST_GROUP="bench",
                   STREETSENSE_LOG_LEVEL="WARNING")
        proc = subprocess.Popen([sys.executable, "-c", "from streetsense.cli import app; app()", "ingest", "run",
                                 "--workers", str(workers)], env=env)
        stack.callback(lambda: (proc.terminate(), proc.wait(30)))
        pub = make_client(svc.mqtt_url, "bench-publisher", inflight=2000)
        # readiness: a probe reading must arrive before timing starts
        probe = v1.encode_json("bench-probe", base_s, 0, [("fill", 1, 0)])
        deadline = time.monotonic() + 30
        while True:
            publish_all(pub, [(v1.topic(TENANT, "bench-probe", v1.UP), probe)])
            try:
                _wait_inserted(url, 1, 1.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        sent: dict[tuple[str, int], float] = {}

        def run(batch, rate=None, label="pipeline"):
            def on_sent(i, t):
                sent[(batch[i][2], batch[i][3])] = t
            with psycopg.connect(url) as c:
                before = c.execute("SELECT coalesce(sum(inserted), 0) FROM ingest_log").fetchone()[0]
            with Progress(disable=not progress, transient=True) as prog:
                task = prog.add_task(f"{label}: durable readings", total=len(batch) * pack)
                t0 = time.time()
                th = threading.Thread(target=publish_all, args=(pub, [(t, p) for t, p, _, _ in batch]),
                                      kwargs={"rate": rate, "on_sent": on_sent})
                th.start()
                t_end = None
                deadline = time.monotonic() + 600
                with psycopg.connect(url, autocommit=True) as c:
                    while True:
                        done = c.execute("SELECT coalesce(sum(inserted), 0) FROM ingest_log").fetchone()[0] - before
                        prog.update(task, completed=done)
                        if done >= len(batch) * pack:
                            t_end = time.time()
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{label}: {done} of {len(batch) * pack} durable after 600 s")
                        time.sleep(0.02)
                th.join()
            return t0, t_end

        t0, t1 = run(msgs)
        rate = n / (t1 - t0)
        out["readings_per_s"] = round(rate)
        out["messages_per_s"] = round(len(msgs) / (t1 - t0))
        lat_full = _latencies(url, msgs, sent)
        out["p50_latency_ms_full_load"] = round(_percentile(lat_full, 50), 1)
        out["p99_latency_ms_full_load"] = round(_percentile(lat_full, 99), 1)

        # half load: paced at half the measured message rate
        half_rate = 0.5 * rate / pack
        run(half_msgs, rate=half_rate, label="half load")
        lat = _latencies(url, half_msgs, sent)
        out["half_load_readings_per_s"] = round(half_rate * pack)
        out["p50_latency_ms"] = round(_percentile(lat, 50), 1)
        out["p99_latency_ms"] = round(_percentile(lat, 99), 1)

        with psycopg.connect(url) as c:
            stored, distinct = c.execute(
                "SELECT count(*), count(DISTINCT (r.device_id, r.metric, r.time)) FROM readings r "
                "JOIN devices d ON d.id = r.device_id WHERE d.device_id <> 'bench-probe'").fetchone()
        expected = n + n_half
        out["stored"] = stored
        out["lost"] = expected - distinct
        out["duplicated"] = stored - distinct

        out["ratio_to_copy"] = round(rate / copy_rate, 3)

        # naive: one INSERT per message
        proc.terminate()
        proc.wait(30)
        naive_msgs = msgs[: max(1, naive_readings // pack)]
        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        cons = ctx.Process(target=_naive_consumer, args=(url, svc.mqtt_url, ready, stop))
        cons.start()
        ready.wait(30)
        with Progress(disable=not progress, transient=True) as prog:
            task = prog.add_task("naive: one INSERT per message", total=len(naive_msgs) * pack)
            t0 = time.time()
            th = threading.Thread(target=publish_all, args=(pub, [(t, p) for t, p, _, _ in naive_msgs]))
            th.start()
            with psycopg.connect(url, autocommit=True) as c:
                while True:
                    done = c.execute("SELECT count(*) FROM readings_naive").fetchone()[0]
                    prog.update(task, completed=done)
                    if done >= len(naive_msgs) * pack:
                        break
                    time.sleep(0.05)
            t_naive = time.time() - t0
            th.join()
        stop.set()
        cons.join(30)
        out["naive_readings_per_s"] = round(len(naive_msgs) * pack / t_naive)
        out["speedup_vs_naive"] = round(rate / out["naive_readings_per_s"], 1)
        pub.disconnect()
    return out


def _latencies(url: str, msgs, sent: dict) -> list[float]:
    devs = sorted({m[2] for m in msgs})
    seqs = sorted({m[3] for m in msgs})
    with psycopg.connect(url) as c:
        rows = c.execute(
            """SELECT d.device_id, b.seq, extract(epoch FROM b.stored_at) FROM batches b JOIN devices d ON d.id = b.device_id
               WHERE d.device_id = ANY(%s) AND b.seq BETWEEN %s AND %s""", (devs, seqs[0], seqs[-1])).fetchall()
    return [(float(t) - sent[(d, s)]) * 1000 for d, s, t in rows if (d, s) in sent]


def _scratch_db(url: str) -> str:
    """A fresh database ``streetsense_bench`` on the same server (dropped and recreated)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS streetsense_bench WITH (FORCE)")
        c.execute("CREATE DATABASE streetsense_bench")
    params = conninfo_to_dict(url)
    params["dbname"] = "streetsense_bench"
    return make_conninfo(**params)
