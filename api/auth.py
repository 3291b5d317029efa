"""Who is calling, what they may do, and which tenant's rows their queries see.

* **Authentication.** ``Authorization: Bearer <token>`` (or ``X-API-Key``); tokens
  are made by ``streetsense tokens create`` (:mod:`streetsense.tokens`) and only
  their SHA-256 is stored.  No credential = the anonymous ``public`` role.  A
  credential that is malformed, unknown, revoked or expired is refused (401)
  even on public routes.
* **Authorization.** Every route declares the roles it allows with
  :func:`require` (route- or router-level); :func:`check_declared` refuses to
  build an app with an undeclared route.  Not authenticated and not allowed =
  401; authenticated but not allowed = 403.
* **Tenancy.** Each request's connection runs as the database role
  ``streetsense_api`` (set once per pooled connection by :func:`make_pool`), which
  is subject to row-level security (ingest/migrate.py :func:`secure_tables`).
  The principal's tenant is bound to the connection at check-out
  (``streetsense.tenant``; ``*`` for platform admins and anonymous open-data
  reads) and cleared again when the pool takes it back, so one request's tenant
  can never serve another's queries.  Direct ids of another tenant's rows are
  therefore simply not found (404).

>>> Principal("ops", "operations", "leeds").scope, ANONYMOUS.scope
('leeds', '*')
>>> require("admin", "crew").roles == frozenset({"admin", "crew"})
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from streetsense.tokens import parse as parse_token, token_hash

ROLES = ("admin", "operations", "field_engineer", "crew", "resident", "public", "integration")
#: Every role, anonymous callers included: open data and health.
EVERYONE = ROLES
API_DB_ROLE = "streetsense_api"
TENANT_SETTING = "streetsense.tenant"

_bearer = HTTPBearer(auto_error=False, description="ss_… token from `streetsense tokens create`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same token, as an API key")


@dataclass(frozen=True)
class Principal:
    """The caller: a token's holder, or the anonymous public."""
    name: str
    role: str
    tenant: str | None = None        # None = every tenant (platform admins; anonymous open data)
    household: str | None = None     # residents only
    token_id: int | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset({self.role})

    @property
    def scope(self) -> str:
        """The value bound to ``streetsense.tenant`` for this caller's queries."""
        return "*" if self.tenant is None else self.tenant


ANONYMOUS = Principal("anonymous", "public")


class Unauthenticated(HTTPException):
    """401, optionally with an HTML page for browsers (see :func:`require` ``page``)."""

    def __init__(self, detail: str, page: str | None = None) -> None:
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
        self.page = page


@dataclass
class Session:
    """One request's database connection, bound to its principal's tenant."""
    conn: psycopg.Connection
    principal: Principal


# --- the pool ----------------------------------------------------------------

def _configure(conn: psycopg.Connection) -> None:
    conn.execute(f"SET ROLE {API_DB_ROLE}")
    conn.execute("SELECT set_config('search_path', 'ss_restricted, ' || current_setting('search_path'), false)")
    _bind(conn, None)


def _reset(conn: psycopg.Connection) -> None:
    # back to no tenant (and, defensively, the API role: no route changes it), in one round trip
    conn.execute("SELECT set_config('role', %s, false), set_config(%s, '', false), "
                 "set_config('streetsense.actor', '', false)", (API_DB_ROLE, TENANT_SETTING))


def _bind(conn: psycopg.Connection, p: Principal | None) -> None:
    """Bind (or, with None, clear: sees no tenant) the tenant scope and the audit actor, session-wide."""
    conn.execute("SELECT set_config(%s, %s, false), set_config('streetsense.actor', %s, false)",
                 (TENANT_SETTING, p.scope if p else "", f"api:{p.name}" if p else ""))


def make_pool(database_url: str, *, max_size: int = 4, open: bool = False) -> ConnectionPool:
    """The API's pool: dict rows, autocommit, every connection as ``streetsense_api`` bound to no tenant."""
    return ConnectionPool(database_url, min_size=1, max_size=max_size, open=open, configure=_configure, reset=_reset,
                          kwargs={"row_factory": dict_row, "autocommit": True})


# --- authentication ----------------------------------------------------------

def authenticate(conn: psycopg.Connection, token: str | None) -> Principal:
    """The principal for ``token`` (None = anonymous); raises 401 for a bad one."""
    if token is None:
        return ANONYMOUS
    key_id = parse_token(token)
    row = None
    if key_id is not None:
        row = conn.execute("SELECT * FROM ss_api_principal(%s, %s)", (key_id, token_hash(token))).fetchone()
    if row is None:
        raise Unauthenticated("invalid, expired or revoked token")
    return Principal(row["name"], row["role"], row["tenant"], row["household"], row["id"])


def _credential(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    key = request.headers.get("x-api-key")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("use Authorization: Bearer <token>")
        return value.strip()
    return key.strip() if key else None


def session(request: Request, _b: Any = Depends(_bearer), _k: Any = Depends(_api_key)) -> Iterator[Session]:
    """Dependency (cached per request): the caller and a pooled connection bound to their tenant."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        p = authenticate(conn, _credential(request))
        _bind(conn, p)
        request.state.principal = p
        yield Session(conn, p)


def connection(s: Session = Depends(session)) -> psycopg.Connection:
    """Dependency: the request's connection (tenant-bound; same one as the principal's)."""
    return s.conn


def require(*roles: str, page: Callable[[], str] | None = None) -> Callable[..., Principal]:
    """Dependency and declaration: the caller, who must hold one of ``roles``.

    ``page``: for browser routes, the HTML served (with the 401) to a caller
    without a credential, e.g. :func:`token_loader_page`.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}" if unknown else "require() needs at least one role")
    allowed = frozenset(roles)

    def dep(s: Session = Depends(session)) -> Principal:
        p = s.principal
        if p.role in allowed:
            return p
        if p is ANONYMOUS:
            raise Unauthenticated("authentication required", page() if page else None)
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {p.role} role may not do this")

    dep.roles = allowed  # type: ignore[attr-defined]
    return dep


def api_routes(app: FastAPI) -> Iterator[tuple[frozenset[str], str, Any]]:
    """(methods, path, dependant) of every API route, those of included routers too."""
    try:
        from fastapi.routing import iter_route_contexts     # FastAPI >= 0.16x keeps included routers nested
    except ImportError:                                      # pragma: no cover - older FastAPI: a flat list
        contexts: Any = app.routes
    else:
        contexts = iter_route_contexts(app.routes)
    for rc in contexts:
        if isinstance(getattr(rc, "original_route", rc), APIRoute):
            yield frozenset(rc.methods), rc.path, rc.dependant


def declared_roles(dependant: Any) -> frozenset[str] | None:
    """The roles a route (its ``dependant``) allows: every :func:`require` on it must pass. None if undeclared."""
    found: list[frozenset[str]] = []
    stack = [dependant]
    while stack:
        d = stack.pop()
        roles = getattr(d.call, "roles", None)
        if isinstance(roles, frozenset):
            found.append(roles)
        stack.extend(d.dependencies)
    if not found:
        return None
    return frozenset.intersection(*found)


def check_declared(app: FastAPI) -> None:
    """Refuse an app with a route that declares no roles (fail closed)."""
    missing = sorted(f"{','.join(sorted(m))} {path}" for m, path, dep in api_routes(app) if declared_roles(dep) is None)
    if missing:
        raise RuntimeError(f"routes without a role declaration (api.auth.require): {missing}")


def install(app: FastAPI, pool: ConnectionPool) -> None:
    """Give ``app`` its pool and the auth error responses (create_app does this; tests mounting routers too)."""
    app.state.pool = pool

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated):
        if exc.page is not None and "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(exc.page, status_code=401, headers={**(exc.headers or {}), "Cache-Control": "no-store"})
        return JSONResponse({"detail": exc.detail}, status_code=401, headers=exc.headers)

    @app.exception_handler(psycopg.errors.InsufficientPrivilege)
    async def not_permitted(request: Request, exc: psycopg.errors.InsufficientPrivilege):
        # a write into another tenant's rows (RLS WITH CHECK): say no, show nothing
        return JSONResponse({"detail": "not permitted"}, status_code=status.HTTP_403_FORBIDDEN)


def token_loader_page() -> str:
    """A page for browser routes: takes a token from the URL fragment (``#token=…``, which
    browsers never send to the server, so it is in no log) into localStorage
    (``streetsense-token``), then loads the page with it as a bearer header."""
    return """<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>StreetSense</title></head><body><p id="msg">Loading…</p><script>
(function(){var K='streetsense-token',m=location.hash.match(/(?:^#|&)token=([^&]+)/);
if(m){localStorage.setItem(K,decodeURIComponent(m[1]));history.replaceState(null,'',location.pathname+location.search)}
var t=localStorage.getItem(K);
if(!t){document.getElementById('msg').textContent='Open the link you were given (it carries your access token).';return}
fetch(location.href,{headers:{'Authorization':'Bearer '+t,'Accept':'text/html'},cache:'no-store'}).then(function(r){
if(!r.ok){document.getElementById('msg').textContent=r.status==401?'Your access token is not valid any more.':'Error '+r.status;return}
if(r.url&&r.url!==location.href)history.replaceState(null,'',r.url);
return r.text().then(function(h){document.open();document.write(h);document.close()})
}).catch(function(){document.getElementById('msg').textContent='No connection. Try again when online.'})})();
</script></body></html>"""
