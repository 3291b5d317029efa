"""Alert routes: list and filter, the explanation view, and the operator lifecycle
(open -> acknowledged -> resolved / dismissed, with a verdict).

Welfare alerts are shown only to the admin and operations roles, and every
time one is shown or decided on, it is written to ``audit_log``. Verdicts are
audited and queued for the model runner, which hands them to the engine.
"""


from datetime import datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, status
from psycopg_pool import ConnectionPool  # noqa: F401  (router(pool) signature)
from pydantic import BaseModel, Field

from alerts import store
from api.audit import who
from api.auth import Principal, connection, require

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
Severity = Literal["info", "low", "medium", "high", "critical"]
AlertStatus = Literal["open", "acknowledged", "resolved", "dismissed"]
Verdict = Literal["true_positive", "false_positive"]

COLUMNS = """a.id, a.tenant, a.kind, a.severity, a.first_severity, a.status, a.entity, d.device_id AS device,
    a.asset_id, a.lat, a.lon, a.ward, a.window_start, a.window_end, a.summary, a.suggested_action, a.findings,
    a.welfare, a.household, a.muted, a.suppressed, a.created_at, a.updated_at, a.acknowledged_at,
    a.acknowledged_by, a.closed_at, a.closed_by, a.resolution, a.verdict, a.comment, a.redacted_at,
    cs.household AS audit_household"""

FROM = """alerts a LEFT JOIN devices d ON d.id = a.device_id LEFT JOIN consents cs ON cs.id = a.consent_id"""

LIST = f"""SELECT {COLUMNS} FROM {FROM}
    WHERE a.tenant = %(tenant)s
      AND (%(kind)s::text IS NULL OR a.kind = %(kind)s)
      AND (%(status)s::text IS NULL OR a.status = %(status)s)
      AND (%(entity)s::text IS NULL OR a.entity = %(entity)s)
      AND (%(severity)s::text IS NULL OR ss_severity_rank(a.severity) >= ss_severity_rank(%(severity)s))
      AND (%(since)s::timestamptz IS NULL OR coalesce(a.window_end, a.window_start) >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR a.window_start < %(until)s)
      AND (%(welfare)s::boolean IS NULL OR a.welfare = %(welfare)s)
      AND (%(sees_welfare)s OR NOT a.welfare)
    ORDER BY a.id DESC LIMIT %(limit)s OFFSET %(offset)s"""

ONE = f"""SELECT {COLUMNS}, a.explanation, a.evidence FROM {FROM}
    WHERE a.id = %(id)s"""

DELIVERIES = """SELECT sink, event, status, attempts, next_attempt_at, last_error, external_id, remote_status,
    created_at, delivered_at, cancelled_reason FROM alert_deliveries WHERE alert_id = %s ORDER BY id"""

FEEDBACK = """SELECT verdict, actor, created_at, applied_at, result FROM alert_feedback
    WHERE alert_id = %s ORDER BY id"""


class Alert(BaseModel):
    id: int
    tenant: str
    kind: str
    severity: Severity
    first_severity: Severity | None = None
    status: AlertStatus
    entity: str
    device: str | None = None
    asset_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    ward: str | None = None
    window_start: datetime
    window_end: datetime | None = None
    summary: str = Field(description="The plain-language explanation (the latest finding's)")
    suggested_action: str
    findings: int = Field(description="Findings folded into this alert")
    welfare: bool
    household: str | None = None
    muted: bool
    suppressed: int
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    resolution: str | None = None
    verdict: Verdict | None = None
    comment: str | None = None
    redacted_at: datetime | None = None


class Delivery(BaseModel):
    sink: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    external_id: str | None = None
    remote_status: str | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    cancelled_reason: str | None = None


class Feedback(BaseModel):
    verdict: Verdict
    actor: str
    created_at: datetime
    applied_at: datetime | None = None
    result: dict | None = None


class AlertDetail(Alert):
    explanation: dict = Field(description="The latest finding: explanation, suggested action and evidence "
                                          "(readings, learned baseline, rule or score, model and version)")
    evidence: list[dict] = Field(description="Every finding folded in, oldest first (the first and newest kept)")
    deliveries: list[Delivery]
    feedback: list[Feedback]


class Acknowledge(BaseModel):
    comment: str | None = Field(default=None, max_length=2000)


class Resolve(BaseModel):
    verdict: Verdict
    comment: str | None = Field(default=None, max_length=2000)


class Dismiss(BaseModel):
    verdict: Verdict = "false_positive"
    comment: str | None = Field(default=None, max_length=2000)


def router(pool: ConnectionPool) -> APIRouter:
    r = APIRouter(tags=["alerts"])

    Conn = Annotated[psycopg.Connection, Depends(connection)]
    Ops = Annotated[Principal, Depends(require("admin", "operations"))]
    Reader = Annotated[Principal, Depends(require("admin", "operations", "integration"))]

    def sees_welfare(p: Principal) -> bool:
        return bool(p.roles & store.WELFARE_ROLES)

    def audit_views(c: psycopg.Connection, p: Principal, rows: list[dict], how: str) -> None:
        welfare = [a for a in rows if a["welfare"]]
        if welfare:
            with c.transaction():
                for a in welfare:      # filed under the household (from the register, even once redacted)
                    store.audit(c, p.name, "welfare.view", a["tenant"], a["audit_household"] or f"alert-{a['id']}",
                                {"alert_id": a["id"], "via": how, **who(p)})

    def load(c: psycopg.Connection, p: Principal, alert_id: int) -> dict:
        a = c.execute(ONE, {"id": alert_id}).fetchone()
        if a is None or (a["welfare"] and not sees_welfare(p)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
        return a

    @r.get("/alerts", response_model=list[Alert])
    def list_alerts(c: Conn, p: Reader, tenant: Annotated[str, Query(pattern=ID_PATTERN)],
                    kind: Annotated[str | None, Query(max_length=64)] = None,
                    status_: Annotated[AlertStatus | None, Query(alias="status")] = None,
                    entity: Annotated[str | None, Query(max_length=128)] = None,
                    severity: Annotated[Severity | None, Query(description="this severity or higher")] = None,
                    since: Annotated[datetime | None, Query(description="window ends at or after")] = None,
                    until: Annotated[datetime | None, Query(description="window starts before")] = None,
                    welfare: bool | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[dict]:
        rows = c.execute(LIST, {"tenant": tenant, "kind": kind, "status": status_, "entity": entity,
                                "severity": severity, "since": since, "until": until, "welfare": welfare,
                                "sees_welfare": sees_welfare(p), "limit": limit, "offset": offset}).fetchall()
        audit_views(c, p, rows, "list")
        return rows

    @r.get("/alerts/{alert_id}", response_model=AlertDetail)
    def get_alert(c: Conn, p: Reader, alert_id: int) -> dict:
        """The explanation view: the plain-language text, the evidence behind it, deliveries and verdicts."""
        a = load(c, p, alert_id)
        audit_views(c, p, [a], "detail")
        return {**a, "deliveries": c.execute(DELIVERIES, (alert_id,)).fetchall(),
                "feedback": c.execute(FEEDBACK, (alert_id,)).fetchall()}

    def act(c: psycopg.Connection, p: Principal, alert_id: int, fn) -> dict:
        load(c, p, alert_id)
        try:
            with c.transaction():
                fn()
        except store.NotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert") from None
        except store.Conflict as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
        return c.execute(ONE, {"id": alert_id}).fetchone()

    @r.post("/alerts/{alert_id}/acknowledge", response_model=Alert)
    def acknowledge(c: Conn, p: Ops, alert_id: int, body: Acknowledge | None = None) -> dict:
        return act(c, p, alert_id, lambda: store.acknowledge(c, alert_id, p.name, body.comment if body else None))

    @r.post("/alerts/{alert_id}/resolve", response_model=Alert)
    def resolve(c: Conn, p: Ops, alert_id: int, body: Resolve) -> dict:
        """Close as dealt with, with the operator's verdict (fed back to the models)."""
        return act(c, p, alert_id, lambda: store.close(c, alert_id, p.name, "resolved", body.verdict, body.comment))

    @r.post("/alerts/{alert_id}/dismiss", response_model=Alert)
    def dismiss(c: Conn, p: Ops, alert_id: int, body: Dismiss | None = None) -> dict:
        """Close without action (by default a false positive, fed back to the models)."""
        body = body or Dismiss()
        return act(c, p, alert_id, lambda: store.close(c, alert_id, p.name, "dismissed", body.verdict, body.comment))

    return r
