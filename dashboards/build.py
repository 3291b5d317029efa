"""Build the StreetSense Grafana dashboards with the Grafana Foundation SDK,
write them as JSON (``dashboards/json/``), and push them with grafana-client.

    from dashboards.build import build_command, push_command
    build_command()                                   # streetsense dashboards build
    push_command("http://grafana:3000", token, "StreetSense")   # streetsense dashboards push
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import (barchart, bargauge, common as cb, dashboard as db, geomap, piechart,
                                             stat, table, timeseries)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm, dashboard as dm, geomap as geomap_models

from dashboards import panels as P
from dashboards.sqlquery import Sql, datasource

JSON_DIR = Path(__file__).resolve().parent / "json"
SCHEMA_VERSION = 39   # what the SDK's Dashboard model emits (Grafana 10.x/11.x)


def _opt(value: str, text: str | None = None) -> dm.VariableOption:
    return dm.VariableOption(selected=True, text=text or value, value=value)


def variable(name: str):
    ds = datasource()
    if name == "tenant":
        return (db.QueryVariable("tenant").label("Tenant").datasource(ds)
                .query("SELECT id FROM tenants ORDER BY id").refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD))
    if name == "ward":
        return (db.QueryVariable("ward").label("Ward").datasource(ds)
                .query("SELECT DISTINCT ward FROM assets WHERE tenant = '$tenant' AND ward IS NOT NULL ORDER BY 1")
                .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD).multi(True).include_all(True)
                .all_value("'__all'").current(_opt("$__all", "All")))
    if name == "kind":
        return (db.CustomVariable("kind").label("Device kind").values("bin_fill,air,noise,road")
                .multi(True).include_all(True).current(_opt("$__all", "All")))
    if name == "tz":
        return db.ConstantVariable("tz").value("Europe/London")
    if name == "noise_day":
        return (db.CustomVariable("noise_day").label("Day limit (dB, 07-23)").values("50,55,60,65")
                .current(_opt("55")))
    if name == "noise_night":
        return (db.CustomVariable("noise_night").label("Night limit (dB, 23-07)").values("40,45,50")
                .current(_opt("45")))
    raise KeyError(name)


def panel(spec: P.PanelSpec):
    v = spec.viz
    if v == "stat":
        b = stat.Panel().reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(True))
    elif v == "timeseries":
        b = timeseries.Panel().fill_opacity(10)
    elif v == "table":
        b = table.Panel()
    elif v == "piechart":
        b = piechart.Panel().reduce_options(cb.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
    elif v == "barchart":
        b = barchart.Panel().x_field(spec.columns[1] if spec.columns[0] == "hour_of_week" else spec.columns[0])
    elif v == "bargauge":
        b = bargauge.Panel().reduce_options(cb.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
    elif v == "geomap":
        loc = cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS).latitude("latitude").longitude("longitude")
        value_field = spec.columns[6] if "fill_pct" in spec.columns else None
        style = {"size": {"fixed": 5}, "color": {"fixed": "dark-green"}}
        if value_field:
            style["color"] = {"field": value_field, "fixed": "dark-green"}
        layer = (cb.MapLayerOptions().type("markers").name(spec.title).location(loc).tooltip(True)
                 .config({"showLegend": True, "style": style}))
        b = (geomap.Panel().layers([layer])
             .view(geomap.MapViewConfig().id("fit").all_layers(True).zoom(13))
             .basemap(cb.MapLayerOptions().type("default").name("Basemap"))
             .tooltip(geomap.TooltipOptions().mode(geomap_models.TooltipMode.DETAILS)))
    else:
        raise ValueError(v)
    b = (b.title(spec.title).datasource(datasource()).height(spec.h).span(spec.w)
         .with_target(Sql(spec.sql, spec.format)))
    if spec.description:
        b = b.description(spec.description)
    if spec.unit:
        b = b.unit(spec.unit)
    return b


def dashboard(spec: P.DashboardSpec) -> dm.Dashboard:
    b = (db.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
         .editable().timezone("browser").refresh("5m").time("now-7d", "now"))
    for name in spec.variables:
        b = b.with_variable(variable(name))
    for p in spec.panels:
        b = b.with_panel(panel(p))
    d = b.build()
    d.schema_version = SCHEMA_VERSION
    return d


def to_dict(d: dm.Dashboard) -> dict:
    return json.loads(json.dumps(d, cls=JSONEncoder))


def models() -> dict[str, dict]:
    """uid -> dashboard JSON model, freshly built."""
    return {s.uid: to_dict(dashboard(s)) for s in P.ALL}


def render(model: dict) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_command(out_dir: Path | str = JSON_DIR, check: bool = False) -> list[Path]:
    """Write every dashboard to ``out_dir/<uid>.json``; with ``check``, fail if any file is stale."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, stale = [], []
    for uid, model in models().items():
        path = out / f"{uid}.json"
        text = render(model)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
        written.append(path)
    if stale:
        raise SystemExit("stale dashboard JSON (run `streetsense dashboards build`): "
                         + ", ".join(str(p) for p in stale))
    return written


def push_command(url: str, token: str, folder: str = "StreetSense", client=None) -> list[dict]:
    """Create/update every dashboard in ``folder`` (created if missing) through Grafana's HTTP API.

    ``client`` may be given (tests); otherwise a ``grafana_client.GrafanaApi`` for ``url`` with ``token``.
    """
    if client is None:
        from grafana_client import GrafanaApi, TokenAuth

        client = GrafanaApi.from_url(url, credential=TokenAuth(token))
    uid = "streetsense-" + "".join(c if c.isalnum() else "-" for c in folder.lower())[:30]
    try:
        f = client.folder.get_folder(uid)
    except Exception:  # noqa: BLE001 - grafana_client raises GrafanaClientError subclasses for 404
        f = client.folder.create_folder(folder, uid=uid)
    results = []
    for model in models().values():
        results.append(client.dashboard.update_dashboard({"dashboard": {**model, "id": None}, "folderUid": f["uid"],
                                                          "overwrite": True, "message": "streetsense dashboards push"}))
    return results
