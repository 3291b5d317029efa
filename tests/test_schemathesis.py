"""schemathesis against the API's own OpenAPI spec, over real HTTP (uvicorn),
on a real PostgreSQL holding a small simulated town (one day of the ``tiny``
scenario through the real ingest path, with alerts).

Every operation gets generated requests, as a platform admin (every route),
and anonymously (the routes the public may use). Checks: no 5xx
(``not_a_server_error``) and responses that match the spec
(``response_schema_conformance``, ``content_type_conformance``). Bounded and
deterministic: a few examples per operation, derandomized Hypothesis.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from api.auth import api_routes, declared_roles
from tests.support.api_auth import admin_headers
from tests.support.http import serve

EXAMPLES = 6
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
RUN = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
               phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def town(pg_admin_url: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(base URL, tenant, admin headers) of the API over a database with a simulated day in it."""
    import uuid

    import psycopg

    from dashboards.simdata import load
    from ingest.migrate import migrate
    from tests.conftest import _with_db

    name = "t_st_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_admin_url, name)
    try:
        with psycopg.connect(url) as c:
            migrate(c, timescale="off")
        loaded = load(url, days=1, counts="bins=12,air=2,noise=2,road=1")
        app = create_app(url, pool_size=2)
        with serve(app) as base:
            yield base, loaded.tenant, admin_headers(url)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def public_operations(app) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the anonymous public may call."""
    return {(m, path) for methods, path, dep in api_routes(app) for m in methods
            if "public" in (declared_roles(dep) or ())}


def send(client: httpx.Client, case, headers: dict[str, str]) -> httpx.Response:
    """The case over real HTTP with httpx (this environment's ``requests`` is built on
    urllib3-future, which schemathesis's own transport cannot drive). The caller's
    credential replaces whatever auth headers were generated."""
    kw = case.as_transport_kwargs(base_url=str(client.base_url))
    h = {k: v for k, v in kw["headers"].items() if k.lower() not in ("authorization", "x-api-key")}
    h.update(headers)
    data = kw.get("data")
    body = {"json": kw["json"]} if "json" in kw else {"content": data} if isinstance(data, (bytes, str)) else \
        {"data": data} if data else {}
    return client.request(kw["method"], kw["url"], params=kw.get("params") or None, headers=h,
                          cookies=kw.get("cookies") or None, **body)


def fuzz(schema, base: str, headers: dict[str, str], only: set[tuple[str, str]] | None = None) -> tuple[int, list[str]]:
    """Run every operation of ``schema``; returns (operations run, failures)."""
    failures: list[str] = []
    ran = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for result in schema.get_all_operations():
            op = result.ok()
            if only is not None and (op.method.upper(), op.path) not in only:
                continue
            ran += 1

            @RUN
            @given(case=op.as_strategy())
            def one(case) -> None:
                case.validate_response(send(client, case, headers), checks=CHECKS)

            try:
                one()
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - collect every failure, report them together
                failures.append(f"{op.method.upper()} {op.path}: {type(e).__name__}: {str(e)[:1500]}")
                print(failures[-1], flush=True)
    return ran, failures


def test_every_operation_as_admin_no_server_errors_and_responses_match_the_spec(town) -> None:
    base, _tenant, headers = town
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    ran, failures = fuzz(schema, base, headers)
    assert ran >= 20, f"only {ran} operations in the spec"
    assert not failures, "\n\n".join(failures)


def test_public_routes_anonymously(town, pg_admin_url: str) -> None:
    base, _tenant, _ = town
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    public = public_operations(create_app(pg_admin_url, pool_size=1))
    assert any(re.match(r"/(v1\.1|sta)", p) or "opendata" in p or p == "/health" for _, p in public)
    ran, failures = fuzz(schema, base, {}, only=public)
    assert ran == len({op for op in public if op[1] != "/openapi.json"}) >= 3
    assert not failures, "\n\n".join(failures)
