"""The town's street graph: nodes with lat/lon, edges with length and speed.

A :class:`StreetGraph` is either generated deterministically from a seed and
a few parameters (:func:`generate_town`, a jittered grid with arterial roads,
a high street and missing links) or loaded from JSON.  The routing code uses
it for travel times and the depot / tipping site for plans.

>>> g = generate_town(seed=1, width_km=1.0, height_km=0.8, block_m=100)
>>> len(g.nodes) > 50 and len(g.edges) > 80
True
>>> e = g.edges[0]
>>> round(e.travel_time_s, 1) == round(e.length_m / (e.speed_kmh / 3.6), 1)
True
>>> path, seconds = g.shortest_path(g.depot.node, g.tipping.node)
>>> path[0] == g.depot.node and path[-1] == g.tipping.node and seconds > 0
True
>>> StreetGraph.from_dict(g.to_dict()).to_dict() == g.to_dict()
True
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulators.rng import substream

__all__ = ["Node", "Edge", "Site", "StreetGraph", "generate_town", "haversine_m", "ROAD_CLASSES"]

EARTH_R = 6_371_008.8
M_PER_DEG_LAT = 111_320.0

#: Road classes and their default speed (km/h): 30 mph arterials, 20 mph streets.
ROAD_CLASSES = {"arterial": 48.0, "high_street": 32.0, "residential": 32.0}


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres.

    >>> round(haversine_m(52.0, -1.0, 52.001, -1.0))
    111
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_R * math.asin(math.sqrt(a))


@dataclass(frozen=True, slots=True)
class Node:
    """A junction (or street end)."""

    id: int
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Edge:
    """A street segment between two junctions; two-way unless ``oneway``.

    ``surface`` is "good" or "worn" (worn surfaces make road sensors see more
    vibration events).
    """

    id: int
    u: int
    v: int
    length_m: float
    speed_kmh: float
    road_class: str
    name: str
    oneway: bool = False
    surface: str = "good"

    @property
    def travel_time_s(self) -> float:
        """Free-flow travel time at the speed limit."""
        return self.length_m / (self.speed_kmh / 3.6)


@dataclass(frozen=True, slots=True)
class Site:
    """A named place snapped to a graph node (depot, tipping site)."""

    name: str
    kind: str
    node: int
    lat: float
    lon: float


@dataclass
class StreetGraph:
    """Undirected street network plus the depot and tipping site.

    ``nodes[i].id == i`` and ``edges[j].id == j``.
    """

    nodes: list[Node]
    edges: list[Edge]
    depot: Site
    tipping: Site
    name: str = "town"
    _adj: list[list[tuple[int, int]]] | None = field(default=None, repr=False, compare=False)

    # ---- structure -----------------------------------------------------
    def adjacency(self) -> list[list[tuple[int, int]]]:
        """``adj[node]`` = list of (neighbour, edge id) that may be driven."""
        if self._adj is None:
            adj: list[list[tuple[int, int]]] = [[] for _ in self.nodes]
            for e in self.edges:
                adj[e.u].append((e.v, e.id))
                if not e.oneway:
                    adj[e.v].append((e.u, e.id))
            self._adj = adj
        return self._adj

    def neighbors(self, node: int) -> list[tuple[int, int]]:
        return self.adjacency()[node]

    @property
    def node_lat(self) -> np.ndarray:
        return np.array([n.lat for n in self.nodes])

    @property
    def node_lon(self) -> np.ndarray:
        return np.array([n.lon for n in self.nodes])

    @property
    def total_length_km(self) -> float:
        return sum(e.length_m for e in self.edges) / 1000.0

    def nearest_node(self, lat: float, lon: float) -> int:
        """Id of the node nearest (lat, lon)."""
        c = math.cos(math.radians(lat))
        d = (self.node_lat - lat) ** 2 + ((self.node_lon - lon) * c) ** 2
        return int(np.argmin(d))

    def point_on_edge(self, edge_id: int, offset_m: float, side_m: float = 0.0) -> tuple[float, float]:
        """(lat, lon) ``offset_m`` along the edge from ``u``, ``side_m`` to its left."""
        e = self.edges[edge_id]
        a, b = self.nodes[e.u], self.nodes[e.v]
        f = min(1.0, max(0.0, offset_m / e.length_m)) if e.length_m > 0 else 0.0
        lat = a.lat + (b.lat - a.lat) * f
        lon = a.lon + (b.lon - a.lon) * f
        if side_m:
            c = math.cos(math.radians(lat))
            dy = (b.lat - a.lat) * M_PER_DEG_LAT
            dx = (b.lon - a.lon) * M_PER_DEG_LAT * c
            n = math.hypot(dx, dy) or 1.0
            lat += (dx / n) * side_m / M_PER_DEG_LAT
            lon += (-dy / n) * side_m / (M_PER_DEG_LAT * c)
        return lat, lon

    # ---- routing -------------------------------------------------------
    def shortest_path(self, a: int, b: int, weight: str = "time") -> tuple[list[int], float]:
        """Dijkstra from ``a`` to ``b``; weight "time" (s) or "length" (m).

        Returns (node ids, cost); raises ValueError when ``b`` is unreachable.
        """
        costs = self._costs(a, weight, target=b)
        if b not in costs[0]:
            raise ValueError(f"node {b} unreachable from {a}")
        dist, prev = costs
        path = [b]
        while path[-1] != a:
            path.append(prev[path[-1]])
        return path[::-1], dist[b]

    def travel_times_from(self, a: int) -> dict[int, float]:
        """Seconds from ``a`` to every reachable node (free flow)."""
        return self._costs(a, "time")[0]

    def _costs(self, a: int, weight: str, target: int | None = None) -> tuple[dict[int, float], dict[int, int]]:
        adj = self.adjacency()
        w = [(e.travel_time_s if weight == "time" else e.length_m) for e in self.edges]
        dist: dict[int, float] = {a: 0.0}
        prev: dict[int, int] = {}
        done: set[int] = set()
        heap = [(0.0, a)]
        while heap:
            d, n = heapq.heappop(heap)
            if n in done:
                continue
            done.add(n)
            if n == target:
                break
            for m, eid in adj[n]:
                nd = d + w[eid]
                if nd < dist.get(m, math.inf):
                    dist[m] = nd
                    prev[m] = n
                    heapq.heappush(heap, (nd, m))
        return {k: v for k, v in dist.items() if k in done}, prev

    # ---- serialisation -------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able form (the format :meth:`load_json` reads)."""
        def site(s: Site) -> dict:
            return {"name": s.name, "kind": s.kind, "node": s.node, "lat": s.lat, "lon": s.lon}
        return {
            "name": self.name,
            "nodes": [[n.id, n.lat, n.lon] for n in self.nodes],
            "edges": [{"id": e.id, "u": e.u, "v": e.v, "length_m": e.length_m, "speed_kmh": e.speed_kmh,
                       "road_class": e.road_class, "name": e.name, "oneway": e.oneway, "surface": e.surface}
                      for e in self.edges],
            "depot": site(self.depot),
            "tipping": site(self.tipping),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "StreetGraph":
        nodes = [Node(int(i), float(la), float(lo)) for i, la, lo in d["nodes"]]
        edges = [Edge(int(e["id"]), int(e["u"]), int(e["v"]), float(e["length_m"]), float(e["speed_kmh"]),
                      e.get("road_class", "residential"), e.get("name", ""), bool(e.get("oneway", False)),
                      e.get("surface", "good")) for e in d["edges"]]
        for i, n in enumerate(nodes):
            if n.id != i:
                raise ValueError("node ids must be 0..n-1 in order")
        for i, e in enumerate(edges):
            if e.id != i:
                raise ValueError("edge ids must be 0..m-1 in order")
        return cls(nodes, edges, Site(**d["depot"]), Site(**d["tipping"]), d.get("name", "town"))

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load_json(cls, path: str | Path) -> "StreetGraph":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_geojson(self) -> dict:
        """Edges as LineStrings, sites as Points (for maps)."""
        feats = []
        for e in self.edges:
            a, b = self.nodes[e.u], self.nodes[e.v]
            feats.append({"type": "Feature", "geometry": {"type": "LineString",
                          "coordinates": [[a.lon, a.lat], [b.lon, b.lat]]},
                          "properties": {"id": e.id, "class": e.road_class, "speed_kmh": e.speed_kmh,
                                         "length_m": round(e.length_m, 1), "name": e.name}})
        for s in (self.depot, self.tipping):
            feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                          "properties": {"name": s.name, "kind": s.kind}})
        return {"type": "FeatureCollection", "features": feats}


def generate_town(seed: int, *, center_lat: float = 52.95, center_lon: float = -1.15,
                  width_km: float = 4.0, height_km: float = 3.0, block_m: float = 110.0,
                  jitter_m: float = 15.0, drop_fraction: float = 0.12, arterial_every: int = 7,
                  high_street_blocks: int = 8, worn_fraction: float = 0.10,
                  speeds_kmh: dict[str, float] | None = None,
                  depot_at: tuple[float, float] = (0.04, 0.08), tipping_at: tuple[float, float] = (0.97, 0.35),
                  depot_name: str = "Council depot", tipping_name: str = "Waste transfer station",
                  name: str = "town") -> StreetGraph:
    """Generate a deterministic grid-like town.

    Streets form a grid of ``block_m`` blocks jittered by ``jitter_m``; every
    ``arterial_every``-th row and column is an arterial road; a central run of
    ``high_street_blocks`` blocks is the high street; ``drop_fraction`` of the
    residential links are removed (cul-de-sacs, parks) keeping the largest
    connected part; ``worn_fraction`` of edges have a worn surface.  Sites are
    placed at the node nearest the relative position (x, y) in [0, 1]².
    """
    rng = substream(seed, "geo")
    speeds = dict(ROAD_CLASSES)
    speeds.update(speeds_kmh or {})
    nx = max(2, int(round(width_km * 1000 / block_m)) + 1)
    ny = max(2, int(round(height_km * 1000 / block_m)) + 1)
    xs = (np.arange(nx) - (nx - 1) / 2) * block_m
    ys = (np.arange(ny) - (ny - 1) / 2) * block_m
    gx, gy = np.meshgrid(xs, ys, indexing="xy")        # shape (ny, nx)
    gx = gx + rng.normal(0, jitter_m, gx.shape)
    gy = gy + rng.normal(0, jitter_m, gy.shape)
    coslat = math.cos(math.radians(center_lat))
    lat = center_lat + gy / M_PER_DEG_LAT
    lon = center_lon + gx / (M_PER_DEG_LAT * coslat)

    def nid(i: int, j: int) -> int:
        return j * nx + i

    ai = max(1, arterial_every)
    art_cols = {i for i in range(nx) if i % ai == (nx // 2) % ai}
    art_rows = {j for j in range(ny) if j % ai == (ny // 2) % ai}
    hs_row = ny // 2 if (ny // 2) in art_rows else min(art_rows, key=lambda r: abs(r - ny // 2))
    hs_i0 = max(0, nx // 2 - high_street_blocks // 2)
    hs_i1 = min(nx - 1, hs_i0 + high_street_blocks)

    raw: list[tuple[int, int, str, str]] = []
    for j in range(ny):
        for i in range(nx - 1):
            cls = "arterial" if j in art_rows else "residential"
            if j == hs_row and hs_i0 <= i < hs_i1:
                cls = "high_street"
            nm = ("High Street" if cls == "high_street" else
                  f"{'Road' if cls == 'arterial' else 'Street'} E{j}")
            raw.append((nid(i, j), nid(i + 1, j), cls, nm))
    for i in range(nx):
        for j in range(ny - 1):
            cls = "arterial" if i in art_cols else "residential"
            raw.append((nid(i, j), nid(i, j + 1), cls, f"{'Avenue' if cls == 'arterial' else 'Lane'} N{i}"))
    keep = rng.random(len(raw)) >= drop_fraction
    raw = [r for r, k in zip(raw, keep) if k or r[2] != "residential"]

    # largest connected component
    n_all = nx * ny
    parent = list(range(n_all))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for u, v, _, _ in raw:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
    roots = [find(a) for a in range(n_all)]
    used = {u for u, *_ in raw} | {v for _, v, *_ in raw}
    counts: dict[int, int] = {}
    for a in used:
        counts[roots[a]] = counts.get(roots[a], 0) + 1
    big = max(counts, key=lambda r: (counts[r], -r))
    old_ids = sorted(a for a in used if roots[a] == big)
    remap = {a: k for k, a in enumerate(old_ids)}
    flat_lat, flat_lon = lat.ravel(), lon.ravel()
    nodes = [Node(k, round(float(flat_lat[a]), 7), round(float(flat_lon[a]), 7)) for k, a in enumerate(old_ids)]
    worn = rng.random(len(raw)) < worn_fraction
    curv = 1.0 + rng.uniform(0.0, 0.04, len(raw))
    edges: list[Edge] = []
    for (u, v, cls, nm), w, c in zip(raw, worn, curv):
        if u not in remap:
            continue
        a, b = nodes[remap[u]], nodes[remap[v]]
        length = round(haversine_m(a.lat, a.lon, b.lat, b.lon) * float(c), 2)
        edges.append(Edge(len(edges), a.id, b.id, length, speeds[cls], cls, nm, False, "worn" if w else "good"))

    tmp = StreetGraph(nodes, edges, Site("", "", 0, 0, 0), Site("", "", 0, 0, 0), name)

    def site_at(rel: tuple[float, float], nm: str, kind: str) -> Site:
        la = center_lat + (rel[1] - 0.5) * height_km * 1000 / M_PER_DEG_LAT
        lo = center_lon + (rel[0] - 0.5) * width_km * 1000 / (M_PER_DEG_LAT * coslat)
        n = tmp.nearest_node(la, lo)
        return Site(nm, kind, n, nodes[n].lat, nodes[n].lon)

    return StreetGraph(nodes, edges, site_at(depot_at, depot_name, "depot"),
                       site_at(tipping_at, tipping_name, "tipping"), name)
