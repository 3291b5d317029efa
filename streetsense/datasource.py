"""Per-tenant database login roles for dashboards (a Grafana PostgreSQL datasource).

``streetsense db datasource-role --tenant leeds`` makes (or re-keys) a login role
that is a member of ``streetsense_datasource`` and is bound to its tenant in
``ss_role_tenants``: row-level security (ingest/migrate.py ``secure_tables``)
then shows it that tenant's rows only.  The binding belongs to the role, not to
a setting, so nothing typed in a SQL editor (``SET``, ``set_config``, ``SET
ROLE``/``RESET ROLE``) widens it; ``SET ROLE streetsense_datasource`` narrows
it to nothing.  The role may read the tenant-scoped tables, the
``ss_restricted`` views of the rollups, and ``metrics``; nothing else.

The password is random; the server receives only its SCRAM-SHA-256 verifier
(so it is in no server log), and the DSN is written to a 0600 file.

>>> v = scram_sha256("correct horse", salt=b"0123456789abcdef")
>>> v.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

GROUP = "streetsense_datasource"
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def scram_sha256(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def default_role(tenant: str) -> str:
    """``grafana_<tenant>`` (dashes become underscores).

    >>> default_role("north-yorks")
    'grafana_north_yorks'
    """
    return "grafana_" + tenant.replace("-", "_")


def create_role(conn: psycopg.Connection, tenant: str, role: str | None = None, actor: str = "cli") -> tuple[str, str]:
    """Create the tenant's datasource login role, or give an existing one a new password.

    Returns (role, password).  Refuses a role already bound to another tenant.
    Runs as the database owner (needs CREATEROLE).
    """
    role = role or default_role(tenant)
    if not _ROLE.match(role):
        raise ValueError(f"bad role name {role!r}")
    password = secrets.token_urlsafe(32)
    verifier = scram_sha256(password)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant,)).fetchone() is None:
            raise ValueError(f"unknown tenant {tenant!r}")
        bound = conn.execute("SELECT tenant FROM ss_role_tenants WHERE role = %s", (role,)).fetchone()
        if bound is not None and bound[0] != tenant:
            raise ValueError(f"role {role} is bound to tenant {bound[0]!r}")
        exists = conn.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists is not None and exists[0]:
            raise ValueError(f"role {role} is a superuser or bypasses RLS")
        ident = sql.Identifier(role)
        if exists is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
                                 "PASSWORD {}").format(ident, sql.Literal(verifier)))
        else:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(GROUP), ident))
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = ss_restricted, {}").format(
            ident, sql.Identifier(dbname), sql.Identifier(conn.execute("SELECT current_schema()").fetchone()[0])))
        conn.execute("INSERT INTO ss_role_tenants (role, tenant) VALUES (%s, %s) ON CONFLICT (role) DO NOTHING",
                     (role, tenant))
        conn.execute("""INSERT INTO audit_log (actor, action, tenant, subject, details)
                        VALUES (%s, 'datasource.create', %s, %s, %s)""",
                     (actor, tenant, f"role:{role}", json.dumps({"rekeyed": exists is not None})))
    return role, password


def dsn(database_url: str, role: str, password: str) -> str:
    """``database_url`` with the role's user name and password."""
    params = conninfo_to_dict(database_url)
    params.update(user=role, password=password)
    return make_conninfo(**params)
