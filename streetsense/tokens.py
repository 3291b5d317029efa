"""API tokens: create, list and revoke the bearer tokens (API keys) of the HTTP API.

A token is ``ss_<key_id>_<secret>``: ``key_id`` is 12 hex digits that find the
row, the secret 32 random bytes (base64url).  Only SHA-256 of the whole token
is stored (``api_tokens``, migration 0009); a random 256-bit token needs no
slow hash.  The token is shown once, at creation, and is never logged.

>>> tok, key_id, digest = generate()
>>> parse(tok) == key_id and len(digest) == 32 and digest == token_hash(tok)
True
>>> parse("ss_0123456789ab_short") is None
True

CLI (``streetsense tokens …``)::

    streetsense tokens create --name ops-anna --role operations --tenant leeds [--expires-days 90] [--out FILE]
    streetsense tokens list [--tenant leeds] [--all]
    streetsense tokens revoke 0123456789ab
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

#: Roles a token can carry ("public" is the anonymous caller, never a token).
TOKEN_ROLES = ("admin", "operations", "field_engineer", "crew", "resident", "integration")
_TOKEN = re.compile(r"^ss_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

COLUMNS = ("id, key_id, name, role, tenant, household, created_at, created_by, expires_at, revoked_at, revoked_by, "
           "last_used_at")


def generate() -> tuple[str, str, bytes]:
    """A new random token: (token, key_id, SHA-256 of the token)."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    token = f"ss_{key_id}_{secret}"
    return token, key_id, token_hash(token)


def token_hash(token: str) -> bytes:
    """What is stored for ``token``: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


def parse(token: str) -> str | None:
    """The key id of a well-formed token, else None."""
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def create(conn, *, name: str, role: str, tenant: str | None, household: str | None = None,
           expires_in: timedelta | None = None, actor: str = "cli") -> tuple[str, dict]:
    """Store a new token; return (the token, shown once; its row without the hash).

    Runs as the database owner (the CLI); the creation is audited.
    """
    from psycopg.rows import dict_row

    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {', '.join(TOKEN_ROLES)}")
    if tenant is None and role != "admin":
        raise ValueError("only an admin token may be platform-wide (no --tenant)")
    if (role == "resident") != (household is not None):
        raise ValueError("a resident token needs --household, and only a resident token takes one")
    token, key_id, digest = generate()
    expires = datetime.now(timezone.utc) + expires_in if expires_in else None
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"""INSERT INTO api_tokens (key_id, token_hash, name, role, tenant, household, created_by,
                                                      expires_at)
                              VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}""",
                          (key_id, digest, name, role, tenant, household, actor, expires)).fetchone()
        cur.execute("""INSERT INTO audit_log (actor, action, tenant, subject, details)
                       VALUES (%s, 'token.create', %s, %s, %s)""",
                    (actor, tenant, f"token:{key_id}", json.dumps({"name": name, "role": role,
                                                                    "household": household,
                                                                    "expires_at": expires and expires.isoformat()})))
    return token, row


def list_tokens(conn, tenant: str | None = None, include_revoked: bool = False) -> list[dict]:
    """Tokens (never their hashes), newest first."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"""SELECT {COLUMNS} FROM api_tokens
                               WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
                                 AND (%(all)s OR revoked_at IS NULL)
                               ORDER BY id DESC""", {"tenant": tenant, "all": include_revoked}).fetchall()


def revoke(conn, key_id: str, actor: str = "cli") -> bool:
    """Revoke the token with ``key_id`` at once; False if there is no such live token."""
    with conn.transaction():
        row = conn.execute("""UPDATE api_tokens SET revoked_at = now(), revoked_by = %s
                              WHERE key_id = %s AND revoked_at IS NULL RETURNING tenant""", (actor, key_id)).fetchone()
        if row is None:
            return False
        conn.execute("""INSERT INTO audit_log (actor, action, tenant, subject) VALUES (%s, 'token.revoke', %s, %s)""",
                     (actor, row[0], f"token:{key_id}"))
    return True


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600, from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --- CLI ---------------------------------------------------------------------

cli = typer.Typer(help="API tokens (bearer tokens / API keys): create, list, revoke.", no_args_is_help=True)


def _connect():
    import psycopg

    from streetsense.settings import get_settings

    url = get_settings().database_url
    if not url:
        raise typer.BadParameter("DATABASE_URL is not set")
    return psycopg.connect(url, autocommit=True)


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@cli.command("create")
def create_cmd(name: Annotated[str, typer.Option(help="who or what holds it, e.g. ops-anna, open311-sink")],
               role: Annotated[str, typer.Option(help=" | ".join(TOKEN_ROLES))],
               tenant: Annotated[Optional[str], typer.Option(help="council; omit only for a platform admin")] = None,
               household: Annotated[Optional[str], typer.Option(help="resident tokens: the household pseudonym")] = None,
               expires_days: Annotated[Optional[float], typer.Option(help="expire after this many days")] = None,
               out: Annotated[Optional[Path], typer.Option(help="write the token to this file (0600) "
                                                                 "instead of printing it")] = None) -> None:
    """Create a token. It is shown once (or written to --out) and cannot be recovered later."""
    with _connect() as conn:
        try:
            token, row = create(conn, name=name, role=role, tenant=tenant, household=household,
                                expires_in=timedelta(days=expires_days) if expires_days else None, actor=_actor())
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    info = {"key_id": row["key_id"], "name": name, "role": role, "tenant": tenant,
            "expires_at": row["expires_at"].isoformat() if row["expires_at"] else None}
    if out:
        write_secret(out, token + "\n")
        print(json.dumps({**info, "token_file": str(out)}))
    else:
        print(json.dumps(info), flush=True)
        print(token)


@cli.command("list")
def list_cmd(tenant: Optional[str] = None,
             all_: Annotated[bool, typer.Option("--all", help="include revoked tokens")] = False) -> None:
    """List tokens as JSON lines (never the tokens or their hashes)."""
    with _connect() as conn:
        for row in list_tokens(conn, tenant, all_):
            print(json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}))


@cli.command("revoke")
def revoke_cmd(key_id: Annotated[str, typer.Argument(help="the token's key id (ss_<key_id>_...)")]) -> None:
    """Revoke a token; it stops working on the next request."""
    with _connect() as conn:
        if not revoke(conn, key_id, _actor()):
            print(json.dumps({"revoked": False, "key_id": key_id}))
            raise typer.Exit(1)
    print(json.dumps({"revoked": True, "key_id": key_id}))
