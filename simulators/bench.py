"""Benchmark: devices per process, readings/s published vs the broker's raw rate, simulated days per minute.

``bench_simulator()`` returns a JSON-able dict; ``python -m simulators.cli bench``
(or the lead's ``streetsense`` registration of :func:`bench_command`) prints it.

Sections, all in one run against the same broker (a private Mosquitto
unless ``mqtt_url`` is given) with a counting subscriber in its own process:

* ``raw``: the broker's raw rate - paho (the simulator's own
  :class:`~simulators.publisher.MqttPublisher` path, QoS 1) publishing
  pre-built identical payloads of the simulator's mean payload size as fast
  as possible; rate = messages / (last receipt - first publish); measured
  three times before and twice after the scale run (median and range: on a
  shared machine single runs vary by 2x);
* ``scale``: one process driving ``scale_devices`` devices (default 100,000)
  for ``scale_days`` simulated day(s) as fast as possible, published and
  counted; plus the real-time message rate that fleet needs;
* ``models``: the same fleet without a broker (generation alone);
* ``long``: ``long_bins`` bins (default 10,000) plus the default air, noise
  and road nodes for ``long_days`` (default 30) at full speed, published
  (no counting subscriber).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from contextlib import ExitStack
from typing import Annotated, Optional

__all__ = ["bench_simulator", "bench_command", "raw_broker_rate"]

_START = 1767225600000   # 2026-01-01T00:00Z: fixed, so runs are comparable


def raw_broker_rate(url: str, n: int, size: int, counter=None, topic_prefix: str = "ss/v1/bench/raw") -> dict:
    """Publish ``n`` identical payloads of ``size`` bytes as fast as possible; counted by ``counter``."""
    from simulators.publisher import MqttPublisher

    payload = b"x" * size
    pub = MqttPublisher(url)
    topics = [f"{topic_prefix}-{i:04d}/up" for i in range(1000)]
    if counter is not None:
        counter.reset()
    t0 = time.time()
    for i in range(n):
        pub.publish(topics[i % 1000], payload, 1, False)
    t_pub = time.time()
    acked = pub.flush(120)
    t_ack = time.time()
    out = {"messages": n, "payload_bytes": size, "publish_calls_per_s": round(n / (t_pub - t0), 1),
           "acked_per_s": round(n / (t_ack - t0), 1), "all_acked": acked}
    if counter is not None:
        got, first, last = counter.wait_for(n, timeout=120)
        out["received"] = got
        out["delivered_per_s"] = round(got / max(1e-9, last - t0), 1)
    pub.close()
    return out


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def bench_simulator(mqtt_url: str | None = None, *, scale_devices: int = 100_000, scale_days: float = 1.0,
                    long_bins: int = 10_000, long_days: float = 30.0, raw_messages: int = 200_000,
                    scenario: str | None = None, seed: int | None = None,
                    sections: tuple[str, ...] = ("raw", "scale", "models", "long"),
                    log=None) -> dict:
    """Run the benchmark (see module docstring); returns the figures."""
    from simulators.counter import MessageCounter
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.publisher import MqttPublisher, NullPublisher
    from simulators.runner import run
    from simulators.scenario import load_scenario

    say = log or (lambda *_: None)
    res: dict = {"host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "machine": platform.machine()}}
    sc = load_scenario(scenario)
    with ExitStack() as stack:
        if mqtt_url is None:
            from tests.support.mosquitto import Mosquitto     # repository checkout only

            broker = stack.enter_context(Mosquitto())
            mqtt_url = broker.url
            res["broker"] = {"kind": "private mosquitto", "url": mqtt_url}
        else:
            res["broker"] = {"kind": "given", "url": mqtt_url}
        counter = stack.enter_context(MessageCounter(mqtt_url, "ss/v1/#"))

        # mean payload size of the simulator's messages (a short sample of the scale fleet)
        n_air, n_noise, n_road = max(1, scale_devices // 200), max(1, scale_devices // 250), max(1, scale_devices // 1000)
        counts = {"bins": scale_devices - n_air - n_noise - n_road, "air": n_air, "noise": n_noise, "road": n_road}
        t = time.perf_counter()
        fleet = build_fleet(sc, counts=counts, seed=seed)
        build_s = time.perf_counter() - t
        small = build_fleet(sc, counts={k: max(1, v // 50) for k, v in counts.items()}, seed=seed)
        probe = Simulation(small, start_ms=_START, days=1.0, seed=seed)
        sizes = [len(m.payload) for m in probe.messages()]
        mean_size = int(sum(sizes) / max(1, len(sizes)))
        res["payload_mean_bytes"] = mean_size

        def raw_runs(label: str, k: int) -> None:
            runs = [raw_broker_rate(mqtt_url, max(1, raw_messages // k), mean_size, counter) for _ in range(k)]
            res.setdefault("raw_runs", {})[label] = runs
            res.setdefault("raw_delivered_per_s_all", []).extend(r["delivered_per_s"] for r in runs)

        if "raw" in sections:
            say("raw broker rate ...")
            raw_runs("before", 3)

        if "scale" in sections:
            say(f"scale: {scale_devices} devices x {scale_days} day ...")
            sim = Simulation(fleet, start_ms=_START, days=scale_days, seed=seed)
            pub = MqttPublisher(mqtt_url)
            counter.reset()
            st = run(sim, pub)
            got, first, last = counter.wait_for(st.messages, timeout=300)
            pub.close()
            wall_recv = max(st.wall_s, 0.0)
            per_day = st.messages / max(1e-9, scale_days)
            res["scale"] = {
                "devices": len(fleet.devices), "devices_by_kind": fleet.count_by_kind(),
                "fleet_build_s": round(build_s, 2), "sim_days": scale_days,
                "messages": st.messages, "readings": st.readings, "wall_s": st.wall_s,
                "messages_per_s": st.messages_per_s, "readings_per_s": st.readings_per_s,
                "sim_days_per_min": st.sim_days_per_min, "received": got, "all_acked": st.acked,
                "realtime_messages_per_s_needed": round(per_day / 86400.0, 2),
                "realtime_headroom_x": round(st.messages_per_s / max(1e-9, per_day / 86400.0), 1),
                "max_rss_mb": _rss_mb(), "wall_incl_delivery_s": round(wall_recv, 3),
            }
            if "raw" in sections:
                say("raw broker rate again ...")
                raw_runs("after_scale", 2)

        if "models" in sections:
            say("models only ...")
            sim = Simulation(fleet, start_ms=_START, days=scale_days, seed=seed)
            st = run(sim, NullPublisher())
            res["models"] = {"devices": len(fleet.devices), "sim_days": scale_days, "messages": st.messages,
                             "wall_s": st.wall_s, "messages_per_s": st.messages_per_s,
                             "readings_per_s": st.readings_per_s, "sim_days_per_min": st.sim_days_per_min}
        del fleet, probe, small

        if "long" in sections:
            say(f"long: {long_bins} bins x {long_days} days ...")
            fl = build_fleet(sc, counts={"bins": long_bins, "air": 50, "noise": 40, "road": 12}, seed=seed)
            sim = Simulation(fl, start_ms=_START, days=long_days, seed=seed)
            counter.close()       # no subscriber competing for the CPU in the long run
            pub = MqttPublisher(mqtt_url)
            st = run(sim, pub)
            pub.close()
            res["long"] = {"devices": len(fl.devices), "devices_by_kind": fl.count_by_kind(), "sim_days": long_days,
                           "messages": st.messages, "readings": st.readings, "truth_events": st.truth_events,
                           "wall_s": st.wall_s, "wall_min": round(st.wall_s / 60, 2),
                           "messages_per_s": st.messages_per_s, "readings_per_s": st.readings_per_s,
                           "sim_days_per_min": st.sim_days_per_min, "all_acked": st.acked}
    if res.get("raw_delivered_per_s_all"):
        allr = sorted(res["raw_delivered_per_s_all"])
        med = allr[len(allr) // 2]
        first = res["raw_runs"]["before"][0]
        res["raw"] = {"messages_per_run": first["messages"], "payload_bytes": first["payload_bytes"],
                      "runs": len(allr), "delivered_per_s_median": med, "delivered_per_s_min": allr[0],
                      "delivered_per_s_max": allr[-1], "all_received": all(
                          r["received"] == r["messages"] for v in res["raw_runs"].values() for r in v)}
        if "scale" in res:
            res["scale"]["vs_raw_broker_median"] = round(res["scale"]["messages_per_s"] / med, 3)
        if "long" in res:
            res["long"]["vs_raw_broker_median"] = round(res["long"]["messages_per_s"] / med, 3)
    res["max_rss_mb"] = _rss_mb()
    return res


def bench_command(
    mqtt_url: Annotated[Optional[str], typer_option("--mqtt-url", "Broker URL (default: start a private mosquitto).")] = None,
    scale_devices: Annotated[int, typer_option("--scale-devices", "Devices in the scale run.")] = 100_000,
    scale_days: Annotated[float, typer_option("--scale-days", "Simulated days in the scale run.")] = 1.0,
    long_bins: Annotated[int, typer_option("--long-bins", "Bins in the long run.")] = 10_000,
    long_days: Annotated[float, typer_option("--long-days", "Simulated days in the long run.")] = 30.0,
    raw_messages: Annotated[int, typer_option("--raw-messages", "Messages in the raw broker run.")] = 200_000,
) -> None:
    """Benchmark the simulator and print the figures as JSON."""
    import sys

    res = bench_simulator(mqtt_url, scale_devices=scale_devices, scale_days=scale_days, long_bins=long_bins,
                          long_days=long_days, raw_messages=raw_messages,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=2))


def typer_option(name: str, help: str):
    import typer

    return typer.Option(name, help=help)
