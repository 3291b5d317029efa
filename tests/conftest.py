"""Shared fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL) with a
fresh migrated database per test, and a private Mosquitto per test."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ingest.migrate import migrate
from streetsense.embedded import EmbeddedPostgres, MosquittoBroker

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# MicroPython-side fakes and Node tools are loaded into the MicroPython
# interpreter by the firmware tests; CPython must not import them as doctests.
collect_ignore = ["fakes", "tools", "artifacts"]


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the whole run: TEST_DATABASE_URL if set, else the embedded one."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    try:
        yield pg.url
    finally:
        pg.stop()


def _with_db(url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)


@pytest.fixture
def fresh_db(pg_admin_url: str) -> Iterator[str]:
    """An empty database of its own for one test (not migrated)."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(fresh_db: str) -> str:
    """A freshly migrated database (plain PostgreSQL variant)."""
    with psycopg.connect(fresh_db) as c:
        migrate(c, timescale="off")
    return fresh_db


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if not MosquittoBroker.available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = MosquittoBroker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()
