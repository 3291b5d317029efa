"""Every dashboard panel's SQL on the TimescaleDB variant (continuous
aggregates, hypertable), against PGlite + TimescaleDB (tests/support/pglite.py):
a simulated town stored through the real ingest path, then every panel run
with Grafana's macros expanded, under several template-variable settings; the
panel rollups of migration 0011 agree with their sources here too."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from ingest.migrate import migrate, storage_variant
from tests.support.pglite import PGliteTimescale, node_available, node_unavailable_reason
from tests.test_dashboards import check_counts, run_every_panel
from tests.test_dashboards_rollups import NONE_DIFFER, REFERENCE, compare_with_reference, rollup_disagreements

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
        counts = run_every_panel(pg.url, loaded)
        check_counts(counts, loaded)
        # the panel rollups (tables here too, refreshed by ss_refresh_rollups and a job) equal their sources,
        # and the changed panels return what their previous statements return
        with psycopg.connect(pg.url, autocommit=True) as c:
            (job,) = c.execute("SELECT job_id FROM timescaledb_information.jobs "
                               "WHERE proc_name = 'ss_panel_rollups_job'").fetchone()
            c.execute("TRUNCATE ingest_lag_hourly")
            c.execute("UPDATE panel_rollup_state SET last_log_id = 0")
            c.execute(f"CALL run_job({job})")
            assert rollup_disagreements(c) == NONE_DIFFER
        assert compare_with_reference(pg.url, loaded, [(loaded.start, loaded.end)]) == len(REFERENCE) * 3
