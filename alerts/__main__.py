"""``python -m alerts outbox|runner``: the delivery worker and the model runner as services.

Both stop cleanly on Ctrl-C / SIGTERM and can be restarted at any time: the
outbox and the runner's checkpoint are in the database.
"""

from __future__ import annotations

import importlib
import signal
import threading
from datetime import timedelta

import typer

from alerts.outbox import OutboxConfig, OutboxWorker
from alerts.runner import Runner, RunnerConfig

app = typer.Typer(help="StreetSense alerts: delivery worker and model runner.", no_args_is_help=True)
DB = typer.Option(..., envvar="DATABASE_URL", help="PostgreSQL URL")


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@app.command()
def outbox(database_url: str = DB, batch: int = 20, poll_minutes: float = 5.0) -> None:
    """Deliver queued alerts to Open311, webhooks and email; poll Open311 for closures."""
    w = OutboxWorker(database_url, OutboxConfig(batch=batch, poll_every=timedelta(minutes=poll_minutes)))
    try:
        w.run(_stop_event())
    finally:
        w.close()


@app.command()
def runner(database_url: str = DB, name: str = "default",
           engine: str = typer.Option("stream_models.engine:Engine", help="module:callable making the engine"),
           interval_s: float = 5.0, settle_s: float = 5.0, lookback_hours: float = 24.0) -> None:
    """Feed new readings and device status to the models; raise and update alerts."""
    module, _, attr = engine.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    r = Runner(database_url, factory, RunnerConfig(name=name, settle=timedelta(seconds=settle_s),
                                                   initial_lookback=timedelta(hours=lookback_hours)))
    try:
        r.run(_stop_event(), interval_s)
    finally:
        r.close()


if __name__ == "__main__":
    app()
