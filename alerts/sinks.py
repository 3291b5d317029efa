"""Delivery to council systems: Open311 GeoReport v2, signed webhooks, email.

Each sink sends one outbox row and returns a :class:`Sent` (acknowledged,
optionally with an external id), a :class:`Pending` (accepted, id not known
yet: an Open311 token), or raises :class:`SinkError`. Every send carries the
row's idempotency key, so a retry after a lost acknowledgement takes effect
once:

- **Open311**: the key goes in ``attribute[streetsense_ref]`` and in the
  description. Before any retry the sink looks the key up among the service's
  recent requests (``GET requests.json``) and adopts the request it finds
  instead of posting a second one.
- **Webhook**: ``Idempotency-Key`` header; receivers keep the keys they have
  processed. The body is signed: ``X-StreetSense-Signature: sha256=<hex>`` is
  HMAC-SHA256 with the endpoint's secret over ``"<timestamp>.<body>"``, with
  the timestamp (Unix seconds) in ``X-StreetSense-Timestamp``. Receivers check
  it with :func:`verify_webhook` and reject stale timestamps (replays).
- **Email**: ``Message-ID`` is derived from the key, which mail systems use to
  drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import httpx

from alerts.store import dumps

USER_AGENT = "StreetSense-Alerts/1"
SIGNATURE_HEADER = "X-StreetSense-Signature"
TIMESTAMP_HEADER = "X-StreetSense-Timestamp"
TOLERANCE_S = 300


class SinkError(Exception):
    """The sink did not acknowledge; the row is retried with backoff. ``down``: the sink is unreachable
    (the worker stops trying it for the rest of the cycle)."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


@dataclass(frozen=True)
class Sent:
    external_id: str | None = None


@dataclass(frozen=True)
class Pending:
    token: str


def _secret(config: dict, key: str) -> str:
    from streetsense.logs import register_secret

    value = _secret_value(config, key)
    register_secret(value)          # never shown in a log line from here on
    return value


def _secret_value(config: dict, key: str) -> str:
    if config.get(key):
        return config[key]
    env = config.get(f"{key}_env")
    if env and os.environ.get(env):
        return os.environ[env]
    if config.get(f"{key}_file"):       # a private (0600) file, e.g. a mounted secret
        from streetsense.settings import SecretFileError, read_secret_file

        try:
            return read_secret_file(config[f"{key}_file"])
        except SecretFileError as e:
            raise SinkError(str(e)) from None
    raise SinkError(f"sink has no {key} (set {key}, {key}_env or {key}_file)")


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def render(alert: dict, delivery: dict) -> dict:
    """The message for one delivery, from the alert as it is now (so retries carry the latest evidence).

    Welfare alerts carry only what the named recipient needs to go and check.
    """
    base = {"alert_id": alert["id"], "event": delivery["event"], "idempotency_key": delivery["idempotency_key"],
            "tenant": alert["tenant"], "kind": alert["kind"], "severity": alert["severity"],
            "status": alert["status"]}
    if alert["welfare"]:
        return {**base, "welfare": True, "household": alert["household"], "asset_id": alert["asset_id"],
                "recipient": delivery.get("recipient"), "explanation": alert["summary"],
                "suggested_action": alert["suggested_action"],
                "window_start": _iso(alert["window_start"]), "window_end": _iso(alert["window_end"])}
    if alert.get("asset_bin_kind") == "household":
        # a household's bin: the council's pseudonym only (its location and ids would point at a home)
        return {**base, "welfare": False, "household": alert.get("asset_household"), "ward": alert["ward"],
                "window_start": _iso(alert["window_start"]), "window_end": _iso(alert["window_end"]),
                "explanation": alert["summary"], "suggested_action": alert["suggested_action"],
                "findings": alert["findings"]}
    return {**base, "welfare": False, "entity": alert["entity"], "asset_id": alert["asset_id"],
            "lat": alert["lat"], "lon": alert["lon"], "ward": alert["ward"],
            "window_start": _iso(alert["window_start"]), "window_end": _iso(alert["window_end"]),
            "explanation": alert["summary"], "suggested_action": alert["suggested_action"],
            "evidence": alert["explanation"].get("evidence"), "findings": alert["findings"]}


# --- webhooks --------------------------------------------------------------------------------------

def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(secret: str, timestamp: str | None, signature: str | None, body: bytes, *,
                   tolerance_s: int = TOLERANCE_S, now: float | None = None) -> bool:
    """For receivers: the signature is right and the timestamp is within ``tolerance_s`` of now.

    >>> s = sign("k", 1700000000, b'{}')
    >>> verify_webhook("k", "1700000000", s, b'{}', now=1700000010)
    True
    >>> verify_webhook("k", "1700000000", s, b'{}', now=1700000400)     # stale: a replay
    False
    >>> verify_webhook("other", "1700000000", s, b'{}', now=1700000010)
    False
    """
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class WebhookSink:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def send(self, config: dict, alert: dict, delivery: dict) -> tuple[Sent, dict]:
        payload = render(alert, delivery)
        body = dumps(payload).encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Idempotency-Key": delivery["idempotency_key"],
                   "X-StreetSense-Event": delivery["event"].split(":")[0],
                   TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(_secret(config, "secret"), ts, body)}
        try:
            r = self.client.post(config["url"], content=body, headers=headers)
        except httpx.TransportError as e:
            raise SinkError(f"webhook {type(e).__name__}: {e}", down=True) from e
        if not r.is_success:
            raise SinkError(f"webhook HTTP {r.status_code}: {r.text[:200]}", down=r.status_code >= 500)
        return Sent(), payload


# --- email -----------------------------------------------------------------------------------------

def message_id(key: str) -> str:
    return f"<{key}@streetsense.invalid>"


class EmailSink:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def send(self, config: dict, alert: dict, delivery: dict) -> tuple[Sent, dict]:
        payload = render(alert, delivery)
        to = [delivery["recipient"]] if alert["welfare"] else list(config.get("to") or [])
        if not to or not all(to):
            raise SinkError("email sink has no recipient")
        msg = EmailMessage()
        msg["From"] = config.get("sender", "streetsense@localhost")
        msg["To"] = ", ".join(to)
        msg["Message-ID"] = message_id(delivery["idempotency_key"])
        msg["X-StreetSense-Idempotency-Key"] = delivery["idempotency_key"]
        msg["X-StreetSense-Alert"] = str(alert["id"])
        verb = {"opened": "New", "escalated": "Escalated"}.get(delivery["event"].split(":")[0], "Update")
        if alert["welfare"]:
            msg["Subject"] = f"[StreetSense] Please check on household {alert['household']}"
        else:
            where = f"household {payload['household']}" if "household" in payload else alert["entity"]
            msg["Subject"] = f"[StreetSense] {verb} {alert['severity']} alert: {alert['kind']} at {where}"
        lines = [payload["explanation"], "", f"Suggested action: {payload['suggested_action']}", ""]
        if alert["welfare"]:
            lines += ["You receive this because the household asked StreetSense to tell you, and only you.",
                      "Nothing else happens automatically: please check, and tell the council if help is needed."]
        elif "household" in payload:        # a household's bin: the pseudonym, no location
            lines += [f"Severity: {alert['severity']}", f"Window: {payload['window_start']} .. {payload['window_end']}",
                      f"Household: {payload['household']} (ward {alert['ward']})"]
        else:
            lines += [f"Severity: {alert['severity']}", f"Window: {payload['window_start']} .. {payload['window_end']}",
                      f"Location: {alert['lat']}, {alert['lon']} (ward {alert['ward']})",
                      f"Evidence: {json.dumps(payload.get('evidence'), default=str)[:2000]}"]
        lines += ["", f"Alert {alert['id']}, ref {delivery['idempotency_key']}"]
        msg.set_content("\n".join(lines))
        try:
            with smtplib.SMTP(config["host"], int(config.get("port", 25)), timeout=self.timeout) as smtp:
                if config.get("starttls"):
                    smtp.starttls()
                if config.get("username"):
                    smtp.login(config["username"], _secret(config, "password"))
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as e:
            raise SinkError(f"smtp {type(e).__name__}: {e}", down=True) from e
        except smtplib.SMTPException as e:
            raise SinkError(f"smtp {type(e).__name__}: {e}") from e
        return Sent(), payload


# --- Open311 GeoReport v2 --------------------------------------------------------------------------

REF_ATTRIBUTE = "streetsense_ref"


def _json_list(r: httpx.Response) -> list:
    try:
        data = r.json()
    except ValueError:
        raise SinkError(f"open311 answered {r.status_code} with no JSON: {r.text[:200]}") from None
    return data if isinstance(data, list) else [data]


class Open311Sink:
    """One service request per alert, created with ``POST requests.json`` and followed with
    ``GET requests/{id}.json``.  Config: ``base_url`` (ending before ``requests.json``), ``api_key``,
    ``service_code`` or ``service_codes`` by alert kind, optional ``jurisdiction_id``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    @staticmethod
    def _url(config: dict, path: str) -> str:
        return config["base_url"].rstrip("/") + "/" + path

    @staticmethod
    def _params(config: dict) -> dict:
        return {"jurisdiction_id": config["jurisdiction_id"]} if config.get("jurisdiction_id") else {}

    def _get(self, url: str, params: dict) -> httpx.Response:
        try:
            return self.client.get(url, params=params)
        except httpx.TransportError as e:
            raise SinkError(f"open311 {type(e).__name__}: {e}", down=True) from e

    def find(self, config: dict, service_code: str, key: str, since: datetime) -> str | None:
        """The id of a request already made for ``key`` (a POST whose answer was lost), if any."""
        r = self._get(self._url(config, "requests.json"), {
            **self._params(config), "service_code": service_code,
            "start_date": (since - timedelta(hours=1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_date": (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
        if not r.is_success:
            raise SinkError(f"open311 lookup HTTP {r.status_code}: {r.text[:200]}", down=r.status_code >= 500)
        for req in _json_list(r):
            attrs = req.get("attributes") or {}
            if key in (req.get("description") or "") or (isinstance(attrs, dict) and attrs.get(REF_ATTRIBUTE) == key):
                if req.get("service_request_id"):
                    return str(req["service_request_id"])
        return None

    def resolve_token(self, config: dict, token: str) -> str | None:
        r = self._get(self._url(config, f"tokens/{token}.json"), self._params(config))
        if r.status_code == 404:
            return None
        if not r.is_success:
            raise SinkError(f"open311 token HTTP {r.status_code}", down=r.status_code >= 500)
        for item in _json_list(r):
            if item.get("service_request_id"):
                return str(item["service_request_id"])
        return None

    def service_code(self, config: dict, kind: str) -> str:
        code = (config.get("service_codes") or {}).get(kind) or config.get("service_code")
        if not code:
            raise SinkError(f"open311 sink has no service code for {kind!r}")
        return code

    def send(self, config: dict, alert: dict, delivery: dict) -> tuple[Sent | Pending, dict]:
        key = delivery["idempotency_key"]
        code = self.service_code(config, alert["kind"])
        payload = render(alert, delivery)
        if delivery.get("external_token"):
            sid = self.resolve_token(config, delivery["external_token"])
            if sid is None:
                raise SinkError("open311 token not yet turned into a service request")
            return Sent(sid), payload
        if delivery["attempts"] > 1:       # an earlier attempt may have created it: never a second request
            sid = self.find(config, code, key, delivery["created_at"])
            if sid is not None:
                return Sent(sid), payload
        household = alert.get("asset_bin_kind") == "household"
        if household:       # the council resolves its own pseudonym; no coordinates of a home leave
            if not alert.get("asset_household"):
                raise SinkError("open311: a household bin without a household pseudonym")
            where = {"address_id": alert["asset_household"]}
        elif alert["lat"] is None or alert["lon"] is None:
            raise SinkError("open311 needs a location and the alert has none")
        else:
            where = {"lat": f"{alert['lat']:.6f}", "long": f"{alert['lon']:.6f}"}
        description = (f"{alert['summary']}\n\nSuggested action: {alert['suggested_action']}\n\n"
                       f"StreetSense alert {alert['id']} ref {key}")
        if len(description) > 4000:
            description = alert["summary"][:3800] + f"\n\nStreetSense alert {alert['id']} ref {key}"
        form = {**self._params(config), "api_key": _secret(config, "api_key"), "service_code": code,
                **where, "description": description,
                f"attribute[{REF_ATTRIBUTE}]": key, "attribute[streetsense_alert]": str(alert["id"]),
                "attribute[severity]": alert["severity"]}
        try:
            r = self.client.post(self._url(config, "requests.json"), data=form)
        except httpx.TransportError as e:
            raise SinkError(f"open311 {type(e).__name__}: {e}", down=True) from e
        if not r.is_success:
            raise SinkError(f"open311 POST HTTP {r.status_code}: {r.text[:200]}", down=r.status_code >= 500)
        items = _json_list(r)
        first = items[0] if items else {}
        payload = {**payload, "service_code": code, "service_notice": first.get("service_notice")}
        if first.get("service_request_id"):
            return Sent(str(first["service_request_id"])), payload
        if first.get("token"):
            return Pending(str(first["token"])), payload
        raise SinkError(f"open311 POST answer has neither service_request_id nor token: {r.text[:200]}")

    def status(self, config: dict, service_request_id: str) -> dict | None:
        """The request as the council's system sees it (``status`` is ``open`` or ``closed``)."""
        r = self._get(self._url(config, f"requests/{service_request_id}.json"), self._params(config))
        if r.status_code == 404:
            return None
        if not r.is_success:
            raise SinkError(f"open311 status HTTP {r.status_code}", down=r.status_code >= 500)
        items = _json_list(r)
        return items[0] if items else None
