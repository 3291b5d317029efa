"""The crew app: one static page per route (HTML + inline JS + inline SVG map, no
external resources), and GPX / GeoJSON exports.

The page lists the ordered stops (street, bin, why, ETA) with large buttons —
collected / not out / blocked / contaminated / damaged.  Every tap is queued in
``localStorage`` with a client id and POSTed to ``reports``; failures stay queued
and are retried every few seconds and on the ``online`` event, so a flaky
connection loses nothing (the server ignores resends of the same id).  Print CSS
turns the page into a run sheet.  The route line joins the stops in order (depot,
stops, tipping site) over the street graph drawn beneath it.
"""

from __future__ import annotations

import html
import json
from xml.sax.saxutils import escape

__all__ = ["route_of", "crew_page", "route_svg", "route_gpx", "route_geojson", "STATUSES"]

STATUSES = ("collected", "not_out", "blocked", "contaminated", "damaged")
REASON_TEXT = {"scheduled": "scheduled round", "fill": "full (forecast)", "overflow_risk": "would overflow before next visit",
               "alert:overflow": "overflow alert", "alert:missed_collection": "missed collection alert"}


def route_of(plan: dict, route_id: str) -> dict | None:
    for r in plan.get("routes", []):
        if r["route_id"] == route_id:
            return r
    return None


def _stops(route: dict) -> list[dict]:
    return [e for e in route["events"] if e["type"] == "stop"]


def route_svg(graph, route: dict, width: int = 640, height: int = 480) -> str:
    lats = [n.lat for n in graph.nodes]; lons = [n.lon for n in graph.nodes]
    la0, la1, lo0, lo1 = min(lats), max(lats), min(lons), max(lons)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (round((lon - lo0) / (lo1 - lo0 or 1) * (width - 20) + 10, 1),
                round((la1 - lat) / (la1 - la0 or 1) * (height - 20) + 10, 1))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="route map" id="map">', '<g stroke="#bbb" stroke-width="1">']
    for e in graph.edges:
        a, b = graph.nodes[e.u], graph.nodes[e.v]
        (x1, y1), (x2, y2) = xy(a.lat, a.lon), xy(b.lat, b.lon)
        w = ' stroke-width="2.5"' if e.road_class != "residential" else ""
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"{w}/>')
    parts.append("</g>")
    pts = [xy(graph.depot.lat, graph.depot.lon)] + [xy(s["lat"], s["lon"]) for s in _stops(route)] + \
        [xy(graph.tipping.lat, graph.tipping.lon)]
    parts.append('<polyline fill="none" stroke="#d2451e" stroke-width="2" points="'
                 + " ".join(f"{x},{y}" for x, y in pts) + '"/>')
    for s, (x, y) in zip(_stops(route), pts[1:-1]):
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="#d2451e" data-asset="{html.escape(s["asset_id"])}"/>')
    for site, col in ((graph.depot, "#1f6feb"), (graph.tipping, "#2da44e")):
        x, y = xy(site.lat, site.lon)
        parts.append(f'<rect x="{x - 6}" y="{y - 6}" width="12" height="12" fill="{col}"><title>'
                     f'{html.escape(site.name)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def route_gpx(graph, plan_id: int, route: dict) -> str:
    stops = _stops(route)
    wpts = "".join(f'<wpt lat="{s["lat"]:.7f}" lon="{s["lon"]:.7f}"><name>{escape(str(s["seq"]))} '
                   f'{escape(s["asset_id"])}</name><desc>{escape(s["street"])}: '
                   f'{escape(", ".join(s["reasons"]))}</desc></wpt>' for s in stops)
    pts = [(graph.depot.lat, graph.depot.lon)] + [(s["lat"], s["lon"]) for s in stops] + \
        [(graph.tipping.lat, graph.tipping.lon)]
    trk = "".join(f'<trkpt lat="{a:.7f}" lon="{b:.7f}"/>' for a, b in pts)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="StreetSense" '
            'xmlns="http://www.topografix.com/GPX/1/1">' + wpts +
            f'<trk><name>plan {plan_id} {escape(route["route_id"])}</name><trkseg>{trk}</trkseg></trk></gpx>\n')


def route_geojson(graph, plan_id: int, route: dict) -> dict:
    stops = _stops(route)
    line = [[graph.depot.lon, graph.depot.lat]] + [[s["lon"], s["lat"]] for s in stops] + \
        [[graph.tipping.lon, graph.tipping.lat]]
    feats = [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
              "properties": {"plan_id": plan_id, "route_id": route["route_id"], "km": route["km"]}}]
    for s in stops:
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [s["lon"], s["lat"]]},
                      "properties": {k: s[k] for k in ("seq", "asset_id", "street", "reasons", "eta", "trip",
                                                       "bin_kind", "predicted_fill")}})
    return {"type": "FeatureCollection", "features": feats}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Round __TITLE__</title>
<style>
body{font:16px/1.4 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#111}
header{position:sticky;top:0;background:#123;color:#fff;padding:.6em 1em;z-index:2}
header small{display:block;opacity:.85}
#net{float:right;font-size:.85em;padding:.2em .6em;border-radius:1em;background:#2da44e}
#net.off{background:#b42318}
main{padding:.5em}
#map{width:100%;max-height:45vh;background:#fff;border:1px solid #ccc}
ol{list-style:none;padding:0;margin:0}
li.stop{background:#fff;border:1px solid #ccc;border-radius:.5em;margin:.5em 0;padding:.6em}
li.stop.done{opacity:.55}
li.stop h3{margin:0;font-size:1.1em}
.why{color:#555;font-size:.9em}
.btns{display:flex;flex-wrap:wrap;gap:.4em;margin-top:.5em}
.btns button{flex:1 1 30%;min-height:48px;min-width:48px;font-size:1em;border:0;border-radius:.4em;background:#ddd}
.btns button.collected{background:#2da44e;color:#fff}
.btns button.sel{outline:3px solid #123}
.state{font-weight:bold}
nav a{color:#fff;margin-right:1em}
@media print{header{position:static;background:#fff;color:#000}nav,#net,.btns{display:none}
 li.stop{break-inside:avoid;border:0;border-bottom:1px solid #999;border-radius:0;margin:0;padding:.2em 0}
 #map{max-height:none;page-break-after:always}body{background:#fff}}
</style></head>
<body>
<header><span id="net">online</span><strong>__TITLE__</strong>
<small>__SUB__</small>
<nav><a href="__BASE__.gpx">GPX</a><a href="__BASE__.geojson">GeoJSON</a><a href="#" onclick="print();return false">Print run sheet</a></nav>
</header>
<main>
__SVG__
<p id="queue">queued: <span id="qn">0</span></p>
<ol id="stops"></ol>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
(function(){
var D=JSON.parse(document.getElementById('data').textContent);
var KEY='streetsense-crew-queue', SKEY='streetsense-crew-state-'+D.plan_id+'-'+D.route_id;
var LABEL={collected:'Collected',not_out:'Not out',blocked:'Blocked',contaminated:'Contaminated',damaged:'Damaged'};
function load(k,d){try{return JSON.parse(localStorage.getItem(k))||d}catch(e){return d}}
function save(k,v){localStorage.setItem(k,JSON.stringify(v))}
var state=load(SKEY,{});
function uid(){return Date.now().toString(36)+'-'+Math.random().toString(36).slice(2,10)}
function render(){
  var ol=document.getElementById('stops');ol.innerHTML='';
  D.stops.forEach(function(s){
    var li=document.createElement('li');li.className='stop'+(state[s.asset_id]?' done':'');li.id='stop-'+s.asset_id;
    li.dataset.asset=s.asset_id;
    var h=document.createElement('h3');h.textContent=s.seq+'. '+s.street+' \u2014 '+s.asset_id;li.appendChild(h);
    var p=document.createElement('div');p.className='why';
    p.textContent=s.eta+' \u00b7 trip '+s.trip+' \u00b7 '+s.bin_kind+' bin \u00b7 why: '+s.why;li.appendChild(p);
    var st=document.createElement('div');st.className='state';st.textContent=state[s.asset_id]?LABEL[state[s.asset_id]]:'';
    li.appendChild(st);
    var b=document.createElement('div');b.className='btns';
    D.statuses.forEach(function(k){var bt=document.createElement('button');bt.type='button';
      bt.className=k+(state[s.asset_id]===k?' sel':'');bt.textContent=LABEL[k];bt.dataset.status=k;
      bt.onclick=function(){mark(s,k)};b.appendChild(bt)});
    li.appendChild(b);ol.appendChild(li)});
  document.getElementById('qn').textContent=load(KEY,[]).length;
}
function mark(s,k){
  state[s.asset_id]=k;save(SKEY,state);
  var q=load(KEY,[]);q.push({url:D.reports_url,body:{client_id:uid(),asset_id:s.asset_id,status:k,
    reported_at:new Date().toISOString(),edge_id:s.edge_id}});save(KEY,q);render();flush();
}
var busy=false;
function setNet(ok){var n=document.getElementById('net');n.textContent=ok?'online':'offline \u2014 saving on phone';n.className=ok?'':'off'}
function flush(){
  if(busy)return;var q=load(KEY,[]);if(!q.length){setNet(true);return}
  busy=true;var item=q[0];
  var h={'Content-Type':'application/json'};var tok=localStorage.getItem('streetsense-token');if(tok)h.Authorization='Bearer '+tok;
  fetch(item.url,{method:'POST',headers:h,body:JSON.stringify(item.body)}).then(function(r){
    if(r.ok){r.clone().json().then(function(j){if(j&&j.replan_id){
      setTimeout(function(){location.href='/crew/'+j.replan_id+'/'+encodeURIComponent(D.route_id)},800)}}).catch(function(){})}
    if(r.ok||(r.status>=400&&r.status<500&&r.status!==401&&r.status!==408&&r.status!==429)){
      var q2=load(KEY,[]);if(q2.length&&q2[0].body.client_id===item.body.client_id){q2.shift();save(KEY,q2)}
      setNet(true);busy=false;render();flush();
    }else{throw new Error('http '+r.status)}
  }).catch(function(){busy=false;setNet(false);render()});
}
window.addEventListener('online',flush);
setInterval(flush,3000);
render();flush();
window.crewApp={flush:flush,queue:function(){return load(KEY,[])}};
})();
</script>
</body></html>
"""


def crew_page(graph, plan_id: int, route: dict, reports_url: str, base: str) -> str:
    stops = [{"seq": s["seq"], "asset_id": s["asset_id"], "street": s["street"] or "(unnamed street)",
              "bin_kind": s["bin_kind"], "eta": s["eta"], "trip": s["trip"], "edge_id": s["edge_id"],
              "why": ", ".join(REASON_TEXT.get(r, r) for r in s["reasons"])} for s in _stops(route)]
    data = {"plan_id": plan_id, "route_id": route["route_id"], "stops": stops, "statuses": list(STATUSES),
            "reports_url": reports_url}
    title = html.escape(f"{route['route_id']} \u00b7 plan {plan_id}")
    brk = next((e for e in route["events"] if e["type"] == "break"), None)
    sub = html.escape(f"{route['stops']} stops, {route['trips']} trip(s) to the tip, {route['km']} km, "
                      f"{route['start']}\u2013{route['end']}"
                      + (f", break {brk['eta']} ({brk['minutes']:g} min)" if brk else ""))
    js = json.dumps(data).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", title).replace("__SUB__", sub).replace("__BASE__", html.escape(base))
            .replace("__SVG__", route_svg(graph, route)).replace("__DATA__", js))
