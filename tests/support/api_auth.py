"""API tokens for tests: real rows in ``api_tokens`` made by :mod:`streetsense.tokens`.

    from tests.support.api_auth import bearer, make_token
    tok = make_token(db_url, "operations", "leeds")
    httpx.get(base + "/alerts", params={"tenant": "leeds"}, headers=bearer(tok))

``mount(app, pool)`` gives an app built from single routers (not
``create_app``) its pool and the auth error handlers; make the pool with
:func:`api.auth.make_pool` so its queries run under row-level security.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from api.auth import install as mount  # noqa: F401  (re-exported)
from streetsense import tokens

#: Every token role.
ROLES = tokens.TOKEN_ROLES


def make_token(db_url: str, role: str, tenant: str | None = None, *, household: str | None = None,
               name: str | None = None, expires_in: timedelta | None = None) -> str:
    """A new token of ``role`` for ``tenant`` (None: platform-wide admin)."""
    with psycopg.connect(db_url, autocommit=True) as c:
        tok, _ = tokens.create(c, name=name or f"test-{role}-{tenant or 'platform'}", role=role, tenant=tenant,
                               household=household, expires_in=expires_in, actor="test")
    return tok


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def admin_headers(db_url: str, tenant: str | None = None) -> dict[str, str]:
    """Headers of a new admin token (platform-wide unless ``tenant``)."""
    return bearer(make_token(db_url, "admin", tenant))
