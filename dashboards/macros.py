"""Expand Grafana macros and template variables as Grafana's PostgreSQL
datasource does, so every panel's SQL can be run for real in tests and benches.

Implemented (the ones the dashboards use), with Grafana's semantics:

* ``$__timeFilter(col)``        -> ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC)
* ``$__timeFrom()``, ``$__timeTo()`` -> ``'<from>'``, ``'<to>'``
* ``$__timeGroup(col, '5m')``   -> ``floor(extract(epoch from col)/300)*300``
* ``$__timeGroupAlias(col, '5m')`` -> the same ``AS "time"``
* ``$__unixEpochFilter(col)``   -> ``col >= <from s> AND col <= <to s>``
* template variables ``$name``, ``${name}``, ``[[name]]``: a variable that is
  neither multi nor include-All is substituted raw with ``'`` doubled (the SQL
  writes ``'$tenant'``); a multi / include-All variable becomes a quoted,
  comma-separated list (``'a','b'``); the All option of a variable with a
  custom ``allValue`` inserts that value unformatted, as Grafana does.

Anything left that looks like a macro or variable is an error, never passed on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

ALL = "$__all"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass(frozen=True)
class Var:
    name: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: tuple[str, ...] = ()


def interval_seconds(text: str) -> float:
    m = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)'?\s*", text)
    if not m:
        raise ValueError(f"bad interval {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _args(sql: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at ``start``; returns (args, index after ')')."""
    depth, i, cur, out = 0, start, [], []
    while i < len(sql):
        c = sql[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                out.append("".join(cur).strip())
                return [a for a in out if a != ""], i + 1
            cur.append(c)
        elif c == "," and depth == 1:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise ValueError("unbalanced macro call")


def _fmt(v: Var, value: str | list[str]) -> str:
    values = value if isinstance(value, list) else [value]
    if ALL in values:
        if not v.include_all:
            raise ValueError(f"${v.name} has no All option")
        if v.all_value is not None:
            return v.all_value
        values = list(v.options)
    if v.multi or v.include_all:
        return ",".join("'" + x.replace("'", "''") + "'" for x in values)
    if len(values) != 1:
        raise ValueError(f"${v.name} takes one value")
    return values[0].replace("'", "''")


def expand(sql: str, start: datetime, end: datetime, variables: dict[str, Var] | None = None,
           values: dict[str, str | list[str]] | None = None) -> str:
    variables, values = variables or {}, values or {}
    out, i = [], 0
    pat = re.compile(r"\$__(timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup|unixEpochFilter)\b")
    while True:
        m = pat.search(sql, i)
        if not m:
            out.append(sql[i:])
            break
        out.append(sql[i:m.start()])
        j = m.end()
        while j < len(sql) and sql[j] == " ":
            j += 1
        if j >= len(sql) or sql[j] != "(":
            raise ValueError(f"macro $__{m.group(1)} without arguments")
        args, i = _args(sql, j)
        name = m.group(1)
        if name == "timeFilter":
            (col,) = args
            out.append(f"{col} BETWEEN '{_ts(start)}' AND '{_ts(end)}'")
        elif name == "timeFrom":
            out.append(f"'{_ts(start)}'")
        elif name == "timeTo":
            out.append(f"'{_ts(end)}'")
        elif name == "unixEpochFilter":
            (col,) = args
            out.append(f"{col} >= {int(start.timestamp())} AND {col} <= {int(end.timestamp())}")
        else:
            col, width = args[0], interval_seconds(args[1])
            w = int(width) if width == int(width) else width
            expr = f"floor(extract(epoch from {col})/{w})*{w}"
            out.append(expr + (' AS "time"' if name == "timeGroupAlias" else ""))
    sql = "".join(out)

    def sub(mm: re.Match) -> str:
        name = mm.group(1) or mm.group(2) or mm.group(3)
        if name not in variables:
            raise ValueError(f"unknown template variable ${name}")
        if name not in values:
            raise ValueError(f"no value for template variable ${name}")
        return _fmt(variables[name], values[name])

    sql = re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(?!__)([A-Za-z_]\w*)", sub, sql)
    if "$__" in sql:
        raise ValueError(f"unexpanded macro in: {sql}")
    return sql


def dashboard_variables(model: dict) -> dict[str, Var]:
    """The template variables of a dashboard JSON model, as the expander needs them."""
    out = {}
    for v in model.get("templating", {}).get("list", []):
        opts = tuple(o["value"] for o in v.get("options") or [] if o.get("value") not in (ALL, None))
        if not opts and v.get("type") == "custom":
            opts = tuple(x.strip() for x in str(v.get("query", "")).split(",") if x.strip())
        out[v["name"]] = Var(v["name"], bool(v.get("multi")), bool(v.get("includeAll")), v.get("allValue"), opts)
    return out
