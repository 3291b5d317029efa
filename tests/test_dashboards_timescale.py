"""Every dashboard panel's SQL on the TimescaleDB variant (continuous
aggregates, hypertable), against PGlite + TimescaleDB (tests/support/pglite.py):
a simulated town stored through the real ingest path, then every panel run
with Grafana's macros expanded, under several template-variable settings."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from ingest.migrate import migrate, storage_variant
from tests.support.pglite import PGliteTimescale, node_available, node_unavailable_reason
from tests.test_dashboards import check_counts, run_every_panel

pytestmark = [pytest.mark.timescale,
              pytest.mark.skipif(not node_available(), reason=node_unavailable_reason() or "")]


def test_every_panel_runs_on_timescaledb():
    from dashboards.simdata import load

    with PGliteTimescale(queue_timeout=30.0) as pg:
        with psycopg.connect(pg.url) as c:
            migrate(c, timescale="on", retention_days=30)
            assert storage_variant(c) == "timescale"
        loaded = load(pg.url, days=7)
        with psycopg.connect(pg.url) as c:
            kinds = dict(c.execute("SELECT view_name, materialized_only FROM "
                                   "timescaledb_information.continuous_aggregates").fetchall())
            assert kinds == {"readings_hourly": False, "readings_daily": False}
        counts = run_every_panel(pg.url, loaded, dt.datetime.now(dt.UTC))
        check_counts(counts, loaded)
