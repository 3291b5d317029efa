"""A Grafana PostgreSQL-datasource query for the foundation SDK.

The SDK ships no builder for the core ``grafana-postgresql-datasource``, so
this module adds one in the SDK's own terms: a :class:`SqlQuery` dataquery
model (``to_json``/``from_json``), a builder, and a registration with the
SDK's runtime so ``Dashboard.from_json`` decodes our targets back into
:class:`SqlQuery` (not the SDK's opaque ``UnknownDataquery``).
"""

from __future__ import annotations

import typing

from grafana_foundation_sdk.cog import builder as cogbuilder, runtime as cogruntime, variants as cogvariants
from grafana_foundation_sdk.models import dashboard

DS_TYPE = "grafana-postgresql-datasource"
DS_UID = "streetsense-pg"
FORMATS = ("time_series", "table")


def datasource() -> dashboard.DataSourceRef:
    return dashboard.DataSourceRef(type_val=DS_TYPE, uid=DS_UID)


class SqlQuery(cogvariants.Dataquery):
    def __init__(self, ref_id: str = "A", raw_sql: str = "", format: str = "table",
                 hide: bool | None = None) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"refId": self.ref_id, "datasource": {"type": DS_TYPE, "uid": DS_UID},
                                  "editorMode": "code", "rawQuery": True, "format": self.format,
                                  "rawSql": self.raw_sql}
        if self.hide is not None:
            out["hide"] = self.hide
        return out

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        ds = data.get("datasource") or {}
        if ds.get("type") != DS_TYPE:
            raise ValueError(f"not a {DS_TYPE} query: {ds!r}")
        if data.get("format") not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}: {data.get('format')!r}")
        if not isinstance(data.get("rawSql"), str) or not data["rawSql"].strip():
            raise ValueError("rawSql missing")
        return cls(data.get("refId", "A"), data["rawSql"], data["format"], data.get("hide"))


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, format: str = "table", ref_id: str = "A") -> None:
        if format not in FORMATS:
            raise ValueError(format)
        self._internal = SqlQuery(ref_id, raw_sql.strip(), format)

    def build(self) -> SqlQuery:
        return self._internal


cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier=DS_TYPE, from_json_hook=SqlQuery.from_json))
