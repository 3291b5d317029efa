"""MQTT credentials: secrets, Mosquitto-format hashes, and the registry tables.

A credential is a random secret (``secrets.token_urlsafe(32)``, 256 bits) shown
once to whoever issues it and stored only as a hash in Mosquitto's own
password-file format, so the broker's ``password_file`` is generated from the
database rows verbatim::

    $7$<iterations>$<base64 salt (12 bytes)>$<base64 PBKDF2-HMAC-SHA512 (64 bytes)>

which is exactly what ``mosquitto_passwd`` (2.x, ``-H sha512-pbkdf2``) writes.
The default 101 iterations are mosquitto_passwd's: the secrets are 256-bit
random, so key stretching adds nothing against guessing, while every CONNECT
costs the broker one hash.

>>> h = hash_secret("pa55word", salt=bytes(12))
>>> h
'$7$101$AAAAAAAAAAAAAAAA$Ip7ChTZB1UHVyw/7qh/4cSq7RMRRuywuQzFClHCg8Jo28IS9/Po/VO19zRS1iKJsY9LyV+5zMwJzIfK2RBrMVQ=='
>>> verify_secret("pa55word", h), verify_secret("pa55wort", h)
(True, False)
>>> device_username("leeds", "bin-0001")
'leeds.bin-0001'

Device credentials (``device_credentials``): at most one active per device;
rotation revokes the old row and adds a new one in one transaction.  Service
accounts (``service_accounts``): backend MQTT users with a role.  Everything
that changes a device or a credential appends to ``audit_log`` in the same
transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from contract import v1

ITERATIONS = 101
SALT_BYTES = 12
SECRET_BYTES = 32
ROLES = ("ingest", "gateway", "api", "observer")
LIVE_STATUSES = ("provisioned", "active")       # devices that may hold a credential
BROKER_STATUSES = ("active",)                   # ... and that the broker accepts (after the self-test)

_HASH = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)$")
_SERVICE = re.compile(r"^svc_[a-z0-9][a-z0-9_-]{0,59}$")


class IdentityError(RuntimeError):
    """A registry operation that cannot be done (unknown device, wrong state...)."""


# --- secrets and hashes -------------------------------------------------------

def new_secret() -> str:
    """A fresh random secret (43 URL-safe characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto ``$7$`` (PBKDF2-SHA512) hash of ``secret``."""
    if not secret:
        raise ValueError("empty secret")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    dk = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def parse_hash(h: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, derived key) of a ``$7$`` hash; ValueError otherwise."""
    m = _HASH.match(h)
    if not m:
        raise ValueError("not a mosquitto $7$ hash")
    return int(m.group(1)), base64.b64decode(m.group(2)), base64.b64decode(m.group(3))


def verify_secret(secret: str, h: str) -> bool:
    """Constant-time check of ``secret`` against a ``$7$`` hash."""
    it, salt, dk = parse_hash(h)
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, it, len(dk)), dk)


def device_username(tenant: str, device_id: str) -> str:
    """The MQTT username of a device: ``<tenant>.<device_id>`` (ids never contain '.')."""
    if not (v1.valid_id(tenant) and v1.valid_id(device_id)):
        raise ValueError(f"bad tenant or device id: {tenant!r} {device_id!r}")
    return f"{tenant}.{device_id}"


def service_username(name: str) -> str:
    """``ingest`` -> ``svc_ingest`` (service accounts live in their own namespace)."""
    u = name if name.startswith("svc_") else "svc_" + name
    if not _SERVICE.match(u):
        raise ValueError(f"bad service account name {name!r}: a-z, 0-9, '_' and '-', at most 60 characters")
    return u


@dataclass(frozen=True)
class Issued:
    """A freshly issued credential.  ``secret`` exists only in memory: show it once."""
    username: str
    secret: str = field(repr=False)
    replaced: int = 0           # credentials revoked by this issue (rotation)


# --- registry (PostgreSQL) ----------------------------------------------------

@dataclass(frozen=True)
class DeviceEntry:
    tenant: str
    device_id: str
    username: str
    secret_hash: str


@dataclass(frozen=True)
class ServiceEntry:
    username: str
    role: str
    tenant: str | None
    secret_hash: str


class IdentityStore:
    """Credentials, service accounts and the audit log in PostgreSQL.

    Each public method is one transaction on ``conn`` (autocommit is switched
    off for it) and records ``actor`` both in ``audit_log`` and for the
    database triggers (``SET LOCAL streetsense.actor``).
    """

    def __init__(self, conn: psycopg.Connection, *, iterations: int = ITERATIONS) -> None:
        self.conn = conn
        self.iterations = iterations

    @classmethod
    def connect(cls, url: str) -> "IdentityStore":
        return cls(psycopg.connect(url, autocommit=True))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "IdentityStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---
    @contextmanager
    def _ctx(self, actor: str) -> Iterator[None]:
        """One transaction that knows who is acting (for audit rows and triggers)."""
        if not actor:
            raise IdentityError("an actor (who is doing this) is required")
        with self.conn.transaction():
            self.conn.execute("SELECT set_config('streetsense.actor', %s, true)", (actor,))
            yield

    def audit(self, actor: str, action: str, tenant: str | None, subject: str, details: dict | None = None) -> int:
        """Append one audit row (inside the caller's transaction when there is one)."""
        row = self.conn.execute(
            "INSERT INTO audit_log (actor, action, tenant, subject, details) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (actor, action, tenant, subject, Jsonb(details or {}))).fetchone()
        return row[0]

    def _device(self, tenant: str, device_id: str, lock: bool = False) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT id, status, kind FROM devices WHERE tenant = %s AND device_id = %s" + (" FOR UPDATE" if lock else ""),
            (tenant, device_id)).fetchone()
        if row is None:
            raise IdentityError(f"no device {tenant}/{device_id} in the registry")
        return {"id": row[0], "status": row[1], "kind": row[2]}

    # --- device credentials ---
    def issue_device_credential(self, tenant: str, device_id: str, actor: str, *, reason: str = "issue",
                                secret: str | None = None, details: dict | None = None) -> Issued:
        """New credential for a live device; an active one is revoked (rotation) in the same transaction."""
        username = device_username(tenant, device_id)
        secret = secret or new_secret()
        h = hash_secret(secret, iterations=self.iterations)
        with self._ctx(actor):
            dev = self._device(tenant, device_id, lock=True)
            if dev["status"] not in LIVE_STATUSES:
                raise IdentityError(f"device {tenant}/{device_id} is {dev['status']}: no credentials for it")
            cur = self.conn.execute(
                """UPDATE device_credentials SET revoked_at = now(), rotated_at = now()
                   WHERE device_pk = %s AND revoked_at IS NULL""", (dev["id"],))
            replaced = cur.rowcount
            cid = self.conn.execute(
                """INSERT INTO device_credentials (device_pk, mqtt_username, secret_hash, created_by)
                   VALUES (%s, %s, %s, %s) RETURNING id""", (dev["id"], username, h, actor)).fetchone()[0]
            self.conn.execute("UPDATE devices SET credentials_ref = %s, updated_at = now() WHERE id = %s",
                              (f"mqtt:{username}", dev["id"]))
            action = "credential.rotate" if replaced else "credential.issue"
            self.audit(actor, action, tenant, device_id,
                       {"username": username, "credential_id": cid, "replaced": replaced, "reason": reason,
                        **(details or {})})
        return Issued(username, secret, replaced)

    def set_device_status(self, tenant: str, device_id: str, status: str, actor: str, *,
                          reason: str | None = None) -> dict[str, Any]:
        """Retire or revoke (or reactivate) a device; leaving service revokes its credential (trigger)."""
        if status not in ("provisioned", "active", "retired", "revoked"):
            raise IdentityError(f"unknown status {status!r}")
        with self._ctx(actor):
            dev = self._device(tenant, device_id, lock=True)
            if dev["status"] == status:
                raise IdentityError(f"device {tenant}/{device_id} is already {status}")
            if dev["status"] in ("retired", "revoked") and status in LIVE_STATUSES:
                raise IdentityError(f"device {tenant}/{device_id} is {dev['status']}: provision it again instead")
            self.conn.execute("UPDATE devices SET status = %s, updated_at = now() WHERE id = %s", (status, dev["id"]))
            revoked = self.conn.execute(
                "SELECT count(*) FROM device_credentials WHERE device_pk = %s AND revoked_at >= transaction_timestamp()",
                (dev["id"],)).fetchone()[0]
            action = {"retired": "device.retire", "revoked": "device.revoke"}.get(status, "device.update")
            self.audit(actor, action, tenant, device_id,
                       {"from": dev["status"], "to": status, "reason": reason, "credentials_revoked": revoked})
        return {"from": dev["status"], "to": status, "credentials_revoked": revoked}

    def device_credentials(self, tenant: str, device_id: str) -> list[dict[str, Any]]:
        """Credential history of a device, newest first (never the hashes)."""
        dev = self._device(tenant, device_id)
        cur = self.conn.execute(
            """SELECT id, mqtt_username, created_at, created_by, rotated_at, revoked_at
               FROM device_credentials WHERE device_pk = %s ORDER BY id DESC""", (dev["id"],))
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # --- service accounts ---
    def add_service_account(self, name: str, role: str, actor: str, *, tenant: str | None = None,
                            description: str | None = None) -> Issued:
        if role not in ROLES:
            raise IdentityError(f"role must be one of {', '.join(ROLES)}")
        if role == "gateway" and not tenant:
            raise IdentityError("a gateway account belongs to one tenant (--tenant)")
        if role == "ingest" and tenant:
            raise IdentityError("ingest accounts read every tenant (no --tenant)")
        username = service_username(name)
        secret = new_secret()
        with self._ctx(actor):
            try:
                self.conn.execute(
                    """INSERT INTO service_accounts (username, role, tenant, secret_hash, description, created_by)
                       VALUES (%s, %s, %s, %s, %s, %s)""",
                    (username, role, tenant, hash_secret(secret, iterations=self.iterations), description, actor))
            except psycopg.errors.UniqueViolation:
                raise IdentityError(f"service account {username} exists (rotate it instead)") from None
            except psycopg.errors.ForeignKeyViolation:
                raise IdentityError(f"unknown tenant {tenant!r}") from None
            self.audit(actor, "service_account.create", tenant, username, {"role": role})
        return Issued(username, secret)

    def rotate_service_account(self, name: str, actor: str) -> Issued:
        username = service_username(name)
        secret = new_secret()
        with self._ctx(actor):
            cur = self.conn.execute(
                """UPDATE service_accounts SET secret_hash = %s, rotated_at = now(), revoked_at = NULL
                   WHERE username = %s RETURNING tenant""",
                (hash_secret(secret, iterations=self.iterations), username))
            row = cur.fetchone()
            if row is None:
                raise IdentityError(f"no service account {username}")
            self.audit(actor, "service_account.rotate", row[0], username)
        return Issued(username, secret, 1)

    def revoke_service_account(self, name: str, actor: str) -> None:
        username = service_username(name)
        with self._ctx(actor):
            row = self.conn.execute(
                "UPDATE service_accounts SET revoked_at = now() WHERE username = %s AND revoked_at IS NULL RETURNING tenant",
                (username,)).fetchone()
            if row is None:
                raise IdentityError(f"no active service account {username}")
            self.audit(actor, "service_account.revoke", row[0], username)

    def service_accounts(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("""SELECT username, role, tenant, description, created_at, created_by, rotated_at,
                                          revoked_at FROM service_accounts ORDER BY username""")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # --- what the broker accepts ---
    def broker_entries(self) -> tuple[list[DeviceEntry], list[ServiceEntry]]:
        """Active credentials of active devices (a device still "provisioned" has not passed its
        self-test and stays off the network), and active service accounts."""
        devs = [DeviceEntry(*r) for r in self.conn.execute(
            """SELECT d.tenant, d.device_id, c.mqtt_username, c.secret_hash
               FROM device_credentials c JOIN devices d ON d.id = c.device_pk
               WHERE c.revoked_at IS NULL AND d.status = ANY(%s)
               ORDER BY c.mqtt_username""", (list(BROKER_STATUSES),))]
        svcs = [ServiceEntry(*r) for r in self.conn.execute(
            """SELECT username, role, tenant, secret_hash FROM service_accounts
               WHERE revoked_at IS NULL ORDER BY username""")]
        return devs, svcs

    def audit_entries(self, *, tenant: str | None = None, subject: str | None = None,
                      limit: int = 50) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            """SELECT id, at, actor, action, tenant, subject, details FROM audit_log
               WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
                 AND (%(subject)s::text IS NULL OR subject = %(subject)s)
               ORDER BY id DESC LIMIT %(limit)s""", {"tenant": tenant, "subject": subject, "limit": limit})
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
