"""Travel times and distances between bins from the town's street graph.

A bin stands on a street segment (``edge_id``) at ``offset_m`` from its ``u``
end; travel between two bins is the best of the four end-to-end shortest
paths (fastest for durations, shortest for
distances) plus the in-street legs (or the direct leg when both stand on the same
segment).  Shortest paths come from :class:`simulators.geo.StreetGraph`'s
edges (scipy's Dijkstra over the same weights as ``StreetGraph.travel_times_from``,
for speed); closed edges (a crew reported a blocked street) are left out.
Points without a segment, or unreachable once streets are closed, fall back to
haversine x ``detour`` at ``fallback_kmh``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.geo import StreetGraph, haversine_m

__all__ = ["Point", "Matrices", "matrices", "DETOUR", "FALLBACK_KMH", "haversine_matrix"]

DETOUR = 1.35          #: road distance / crow-fly distance in a grid town (≈ 4/π ≈ 1.27 plus cul-de-sacs)
FALLBACK_KMH = 25.0


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float
    edge_id: int | None = None
    offset_m: float | None = None   #: along the edge from u (None: snap to the nearer end by position)
    node: int | None = None         #: a graph node (sites); wins over edge_id


@dataclass
class Matrices:
    distance_m: np.ndarray    #: (n, n) int64
    duration_s: np.ndarray    #: (n, n) int64
    fallback: int             #: pairs that used the haversine fallback


def haversine_matrix(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    dp = la[:, None] - la[None, :]
    dl = lo[:, None] - lo[None, :]
    a = np.sin(dp / 2) ** 2 + np.cos(la[:, None]) * np.cos(la[None, :]) * np.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _node_costs(graph: StreetGraph, sources: np.ndarray, closed: set[int]) -> tuple[np.ndarray, np.ndarray]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    n = len(graph.nodes)
    us, vs, tt, ll = [], [], [], []
    for e in graph.edges:
        if e.id in closed:
            continue
        us.append(e.u); vs.append(e.v); tt.append(e.travel_time_s); ll.append(e.length_m)
        if not e.oneway:
            us.append(e.v); vs.append(e.u); tt.append(e.travel_time_s); ll.append(e.length_m)
    T = csr_matrix((tt, (us, vs)), shape=(n, n))
    times = dijkstra(T, directed=True, indices=sources)
    # distances: shortest by length (fast; differs from the length of the fastest path only where an
    # arterial detour is quicker than the direct residential street, i.e. a few per cent at most)
    lens = dijkstra(csr_matrix((ll, (us, vs)), shape=(n, n)), directed=True, indices=sources)
    return times, lens


def matrices(graph: StreetGraph | None, points: list[Point], closed_edges: set[int] | frozenset = frozenset(),
             detour: float = DETOUR, fallback_kmh: float = FALLBACK_KMH) -> Matrices:
    """Integer distance (m) and duration (s) matrices between ``points``."""
    n = len(points)
    lat = np.array([p.lat for p in points])
    lon = np.array([p.lon for p in points])
    hv = haversine_matrix(lat, lon) * detour
    if graph is None:
        return Matrices(np.rint(hv).astype(np.int64), np.rint(hv / (fallback_kmh / 3.6)).astype(np.int64), n * n)
    closed = set(closed_edges)
    # each point as (end a, cost to a) and (end b, cost to b)
    ea = np.zeros(n, dtype=np.int64); eb = np.zeros(n, dtype=np.int64)
    ta = np.zeros(n); tb = np.zeros(n); la_ = np.zeros(n); lb_ = np.zeros(n)
    on_edge = np.full(n, -1, dtype=np.int64); off = np.zeros(n); spd = np.ones(n)
    for i, p in enumerate(points):
        if p.node is not None:
            ea[i] = eb[i] = p.node
            continue
        if p.edge_id is None:
            ea[i] = eb[i] = graph.nearest_node(p.lat, p.lon)
            continue
        e = graph.edges[p.edge_id]
        a, b = graph.nodes[e.u], graph.nodes[e.v]
        if p.offset_m is not None:
            o = min(max(p.offset_m, 0.0), e.length_m)
        else:
            da = haversine_m(p.lat, p.lon, a.lat, a.lon); db = haversine_m(p.lat, p.lon, b.lat, b.lon)
            o = e.length_m * da / max(da + db, 1e-9)
        v = e.speed_kmh / 3.6
        ea[i], eb[i] = e.u, e.v
        la_[i], lb_[i] = o, e.length_m - o
        ta[i], tb[i] = o / v, (e.length_m - o) / v
        on_edge[i], off[i], spd[i] = e.id, o, v
    src = np.unique(np.concatenate([ea, eb]))
    times, lens = _node_costs(graph, src, closed)
    row = {int(s): r for r, s in enumerate(src)}
    ra = np.array([row[int(x)] for x in ea]); rb = np.array([row[int(x)] for x in eb])
    best_t = np.full((n, n), np.inf); best_l = np.full((n, n), np.inf)
    for r_i, t_i, l_i in ((ra, ta, la_), (rb, tb, lb_)):
        for c_j, t_j, l_j in ((ea, ta, la_), (eb, tb, lb_)):
            t = t_i[:, None] + times[r_i][:, c_j] + t_j[None, :]
            l_ = l_i[:, None] + lens[r_i][:, c_j] + l_j[None, :]
            better = t < best_t
            best_t = np.where(better, t, best_t)
            best_l = np.where(better, l_, best_l)
    same = (on_edge[:, None] == on_edge[None, :]) & (on_edge[:, None] >= 0)
    same &= ~np.isin(on_edge, list(closed))[:, None] if closed else same
    d_same = np.abs(off[:, None] - off[None, :])
    t_same = d_same / spd[:, None]
    use = same & (t_same < best_t)
    best_t = np.where(use, t_same, best_t)
    best_l = np.where(use, d_same, best_l)
    bad = ~np.isfinite(best_t)
    best_t = np.where(bad, hv / (fallback_kmh / 3.6), best_t)
    best_l = np.where(bad, hv, best_l)
    np.fill_diagonal(best_t, 0); np.fill_diagonal(best_l, 0)
    return Matrices(np.rint(best_l).astype(np.int64), np.rint(best_t).astype(np.int64), int(bad.sum()))
