"""The welfare consent register (admins; a resident for their own household only;
every read and change audited).

A household opts in to "not put out two rounds in a row" welfare checks by
naming one recipient (name, role, email) and the purpose, with evidence of
how consent was given. Withdrawing takes effect at once: open welfare alerts
for the household are closed and redacted, and deliveries not yet made are
cancelled, in the same transaction.
"""


from datetime import datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, status
from psycopg_pool import ConnectionPool  # noqa: F401  (router(pool) signature)
from pydantic import BaseModel, Field

from alerts import store
from api.audit import who
from api.auth import Principal, connection, require

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"

LIST = f"""SELECT {store.CONSENT_COLUMNS} FROM consents
    WHERE tenant = %(tenant)s AND (%(household)s::text IS NULL OR household = %(household)s)
      AND (%(active)s::boolean IS NULL OR (withdrawn_at IS NULL) = %(active)s)
    ORDER BY id LIMIT %(limit)s OFFSET %(offset)s"""


class ConsentIn(BaseModel):
    tenant: str = Field(pattern=ID_PATTERN)
    household: str = Field(min_length=1, max_length=128, description="The household's pseudonym (assets.household)")
    recipient_name: str = Field(min_length=1, max_length=200)
    recipient_role: str = Field(min_length=1, max_length=200, description="e.g. daughter, neighbour, council carer")
    recipient_contact: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320, description="email address")
    purpose: str = Field(min_length=1, max_length=2000)
    evidence: str = Field(min_length=1, max_length=2000, description="How consent was given (form ref, call log)")
    granted_at: datetime | None = None


class Consent(ConsentIn):
    id: int
    granted_at: datetime
    granted_by: str
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None
    withdrawal_reason: str | None = None


class Withdraw(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class Withdrawn(BaseModel):
    consent: Consent
    alerts_closed: int
    alerts_redacted: int
    deliveries_cancelled: int


def router(pool: ConnectionPool) -> APIRouter:
    r = APIRouter(tags=["consents"])

    Conn = Annotated[psycopg.Connection, Depends(connection)]
    Admin = Annotated[Principal, Depends(require("admin", "resident"))]

    def own_household(p: Principal, tenant: str, household: str) -> bool:
        """Residents act for their own household only (other callers: RLS decides the tenant)."""
        return p.role != "resident" or (p.tenant == tenant and p.household == household)

    @r.post("/consents", response_model=Consent, status_code=status.HTTP_201_CREATED)
    def create_consent(c: Conn, p: Admin, body: ConsentIn) -> dict:
        if not own_household(p, body.tenant, body.household):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "residents manage their own household's consent only")
        with c.transaction():
            if c.execute("SELECT 1 FROM tenants WHERE id = %s", (body.tenant,)).fetchone() is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tenant {body.tenant!r}")
            try:
                return store.grant_consent(c, actor=p.name, **body.model_dump())
            except store.Conflict as e:
                raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None

    @r.get("/consents", response_model=list[Consent])
    def list_consents(c: Conn, p: Admin, tenant: Annotated[str, Query(pattern=ID_PATTERN)],
                      household: Annotated[str | None, Query(max_length=128)] = None,
                      active: bool | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[dict]:
        if p.role == "resident":
            if not own_household(p, tenant, household or p.household):
                return []
            household = p.household
        with c.transaction():
            rows = c.execute(LIST, {"tenant": tenant, "household": household, "active": active,
                                    "limit": limit, "offset": offset}).fetchall()
            for row in rows:
                store.audit(c, p.name, "consent.view", tenant, row["household"], {"consent_id": row["id"], **who(p)})
        return rows

    @r.post("/consents/{consent_id}/withdraw", response_model=Withdrawn)
    def withdraw(c: Conn, p: Admin, consent_id: int, body: Withdraw | None = None) -> dict:
        row = c.execute("SELECT tenant, household FROM consents WHERE id = %s", (consent_id,)).fetchone()
        if row is None or not own_household(p, row["tenant"], row["household"]):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such consent")
        try:
            with c.transaction():
                return store.withdraw_consent(c, consent_id, p.name, body.reason if body else None)
        except store.NotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such consent") from None
        except store.Conflict as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None

    return r
