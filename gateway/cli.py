"""``streetsense gateway …``: run the site gateway, show its state.

Configuration comes from ``STREETSENSE_GATEWAY_*`` environment variables
(:class:`gateway.settings.GatewaySettings`).

>>> from typer.testing import CliRunner
>>> "run" in CliRunner().invoke(app, ["--help"]).output
True
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Annotated

import typer

app = typer.Typer(help="The site gateway: local broker, durable queue, forwarding, SNTP.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _settings():  # noqa: ANN202 - lazy import keeps --help fast
    from gateway.settings import GatewaySettings

    return GatewaySettings()


@app.command()
def run() -> None:
    """Run the gateway until SIGTERM / Ctrl-C (starts the local Mosquitto unless
    STREETSENSE_GATEWAY_MANAGE_BROKER=false)."""
    from streetsense import logs

    s = _settings()
    logs.configure(s.log_level, s.log_json)
    from gateway.service import GatewayService

    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr="127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    GatewayService(s).run(stop)


@app.command()
def status(pretty: Annotated[bool, typer.Option(help="indent the JSON")] = False) -> None:
    """Queue depth, bytes, oldest buffered age and the service's last health report."""
    from gateway.queue import inspect_queue
    from gateway.service import read_health

    s = _settings()
    out: dict[str, object] = {"gateway": s.gateway_id, "queue_path": str(s.queue_file)}
    if s.queue_file.exists():
        q = inspect_queue(s.queue_file)
        oldest = q.pop("oldest_rx_ms")
        out.update(q)
        out["oldest_age_s"] = round(time.time() - oldest / 1000, 3) if oldest else 0.0
        out["max_bytes"] = s.max_bytes
    else:
        out["queue"] = "missing"
    h = read_health(s.data_dir)
    if h is not None:
        health = json.loads(h)
        out["health"] = health
        out["health_age_s"] = round(time.time() - health.get("t", 0), 1)
    print(json.dumps(out, indent=2 if pretty else None))


@app.command("broker-config")
def broker_config_cmd() -> None:
    """Print the local mosquitto.conf the gateway generates (for inspection or an external broker)."""
    from gateway.broker import broker_config

    s = _settings()
    print(broker_config(device_port=s.local_port, service_port=s.local_service_port,
                        data_dir=s.broker_dir.resolve(), device_bind=s.local_bind, password_file=s.password_file,
                        acl_file=s.acl_file), end="")
