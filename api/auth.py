"""Authentication seam. Today: one optional bearer token from settings
(``STREETSENSE_API_TOKEN``). Every route already depends on :func:`require`,
so per-user tokens and roles slot in here without touching the routes."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False)


class Principal:
    def __init__(self, name: str, roles: frozenset[str]) -> None:
        self.name = name
        self.roles = roles


def require(*roles: str) -> Callable[..., Principal]:
    """Dependency: the caller, who must hold one of ``roles`` (when auth is on)."""

    def dep(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        token = request.app.state.api_token
        if token is None:
            return Principal("anonymous-dev", frozenset(roles) | {"admin"})
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal("token", frozenset({"admin"}))

    return dep
