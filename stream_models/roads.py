"""Road models: bump events from many passes -> located, classified, confirmed road defects.

A road node in a council vehicle reports each bump above its threshold as
five records sharing a time: ``bump_g`` (peak |a_z - g|, m/s2), ``bump_dur``
(span above 30 % of the peak, s), ``speed`` (m/s), ``lat``, ``lon``.

* :class:`BumpClusterer` gathers events by location (online leader
  clustering, radius ``radius_m``, on a grid hash in local metres).  Rough
  surfaces make false events everywhere, so a cluster is **confirmed** only
  when (a) it was hit on ``min_passes`` independent passes (distinct vehicle
  and ``pass_gap_s``) by at least two vehicles or on two days, and (b) its
  count is a hot spot against the local background: a Poisson tail
  probability below ``alpha`` for the count expected from the median of the
  non-empty cells in a ring around it (``ring_m``; non-empty cells follow the
  streets, so the background is not diluted by buildings, and the median is
  not inflated by other hot spots such as castings nearby).
  Only feature-like events (span >= ``gate_span_s``: short spikes are the
  texture of the road) take part.
* :class:`BumpClusterClassifier` tells pothole / casting / speed hump /
  other from a confirmed cluster's summary (mean and spread of log peak,
  mean log span, mean speed, speed-normalised peak): a Gaussian naive Bayes
  learned online from the asset register (clusters on registered castings
  and humps) and from operator verdicts, starting from weak prior
  pseudo-examples set from the real clips of Gonzalez et al. (2017) (peak
  and span medians per class; see ``simulators/models/road.py``).
* :class:`AssetRegister` holds the council's known castings and humps.
* :func:`clip_features` and :class:`ClipClassifier` classify raw 50 Hz
  ``acc_z`` clips (``streetsense eval roads``).
* Severity from the speed-normalised peak (peak x 30 km/h / speed).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from stream_models.base import StreamModel, register
from stream_models.timeutil import DAY_MS

__all__ = [
    "BumpClusterer",
    "BumpClusterClassifier",
    "AssetRegister",
    "Cluster",
    "ClipClassifier",
    "clip_features",
    "severity_of",
    "CLIP_CLASSES",
]

M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQ = 111_320.0


def _poisson_sf(n: int, lam: float) -> float:
    """P(X >= n) for X ~ Poisson(lam).

    >>> round(_poisson_sf(3, 0.5), 4)
    0.0144
    """
    if n <= 0:
        return 1.0
    term = math.exp(-lam)
    cdf = term
    for k in range(1, n):
        term *= lam / k
        cdf += term
    return max(0.0, 1.0 - cdf)


def severity_of(norm_peak: float) -> str:
    """Severity from the speed-normalised peak (m/s2 at 30 km/h).

    >>> [severity_of(p) for p in (4.0, 6.0, 9.0, 14.0)]
    ['low', 'medium', 'high', 'critical']
    """
    if norm_peak < 5.0:
        return "low"
    if norm_peak < 8.0:
        return "medium"
    if norm_peak < 12.0:
        return "high"
    return "critical"


@dataclass(slots=True)
class Cluster:
    id: str
    x: float
    y: float
    lat: float
    lon: float
    n: int = 0
    passes: int = 0  # independent passes (distinct device, pass_gap bucket) so far
    devices: set = field(default_factory=set)  # vehicles that hit it: bounded by the fleet
    days: int = 0  # distinct days with a hit
    last_pass: dict = field(default_factory=dict)  # device -> its last pass bucket (one per device)
    last_day: int = -1
    s_lp: float = 0.0  # sum log peak
    s_lp2: float = 0.0
    s_ls: float = 0.0  # sum log span
    s_sp: float = 0.0  # sum speed
    s_np: float = 0.0  # sum log(speed-normalised peak)
    t_first: int = 0
    t_last: int = 0
    confirmed: bool = False
    confirmed_ms: int | None = None
    kind: str | None = None  # registered / predicted class
    source: str | None = None  # "register" | "classifier" | "verdict"
    emitted: str | None = None  # finding kind emitted
    classified_at: int = 0
    p_value: float = 1.0
    bg_lambda: float = 0.0

    def features(self) -> dict:
        n = max(self.n, 1)
        m = self.s_lp / n
        var = max(0.0, self.s_lp2 / n - m * m)
        return {
            "log_peak": m,
            "sd_log_peak": math.sqrt(var),
            "log_span": self.s_ls / n,
            "speed": self.s_sp / n,
            "log_norm_peak": self.s_np / n,
        }

    def norm_peak(self) -> float:
        return math.exp(self.s_np / max(self.n, 1))


#: an unconfirmed hot spot nobody has hit for 4 x prune_days (8 weeks by default) is not going to be
#: confirmed by passes that old (the vans pass weekly): forget it, else clusters grow with time
STALE_FACTOR = 4.0


def _migrate(c: Cluster) -> None:
    """Sets of an older checkpoint -> the counts."""
    if isinstance(c.passes, set):
        ps = c.passes
        c.passes = len(ps)
        c.last_pass = {}
        for dev, b in sorted(ps, key=lambda p: p[1]):
            c.last_pass[dev] = b
    if isinstance(c.days, set):
        ds = c.days
        c.days = len(ds)
        c.last_day = max(ds) if ds else -1


def n_passes(c: Cluster) -> int:
    _migrate(c)
    return c.passes


def n_days(c: Cluster) -> int:
    _migrate(c)
    return c.days


class AssetRegister:
    """Known castings / speed humps (lat, lon, kind, id) with a grid index.

    >>> r = AssetRegister([("c1", "casting", 52.95, -1.15)])
    >>> r.near(52.95003, -1.15, 10.0)[0][:2]
    ('c1', 'casting')
    >>> r.near(52.951, -1.15, 10.0)
    []
    """

    def __init__(self, items=(), cell_m: float = 20.0) -> None:
        self.cell_m = cell_m
        self.items: list[tuple[str, str, float, float]] = []
        self.grid: dict[tuple[int, int], list[int]] = {}
        self.lat0: float | None = None
        self.coslat = 1.0
        for it in items:
            self.add(*it)

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        if self.lat0 is None:
            self.lat0 = lat
            self.coslat = math.cos(math.radians(lat))
        return lon * M_PER_DEG_LON_EQ * self.coslat, lat * M_PER_DEG_LAT

    def add(self, asset_id: str, kind: str, lat: float, lon: float) -> None:
        x, y = self._xy(lat, lon)
        k = (int(x // self.cell_m), int(y // self.cell_m))
        self.grid.setdefault(k, []).append(len(self.items))
        self.items.append((asset_id, kind, lat, lon))

    def near(self, lat: float, lon: float, r_m: float) -> list[tuple[str, str, float]]:
        """Register entries within ``r_m`` metres, nearest first: (id, kind, distance)."""
        if not self.items:
            return []
        x, y = self._xy(lat, lon)
        cx, cy = int(x // self.cell_m), int(y // self.cell_m)
        span = int(r_m // self.cell_m) + 1
        out = []
        for i in range(cx - span, cx + span + 1):
            for j in range(cy - span, cy + span + 1):
                for idx in self.grid.get((i, j), ()):
                    a, k, la, lo = self.items[idx]
                    xx, yy = self._xy(la, lo)
                    d = math.hypot(xx - x, yy - y)
                    if d <= r_m:
                        out.append((a, k, d))
        return sorted(out, key=lambda t: t[2])


@register
class BumpClusterer(StreamModel):
    """Online clustering of bump events by location, with confirmation from independent passes.

    :meth:`update` takes one event ``{"t", "device", "lat", "lon", "peak",
    "dur", "speed"}`` and returns ``(cluster, newly_confirmed)`` (cluster is
    None for events below the span gate).

    >>> c = BumpClusterer()
    >>> rnd = random.Random(2)
    >>> news = []
    >>> for k in range(12):                   # a pothole hit on 12 passes by two vans
    ...     lat = 52.95 + rnd.gauss(0, 3) / M_PER_DEG_LAT
    ...     ev = {"t": k * 3_600_000, "device": f"road-{k % 2}", "lat": lat, "lon": -1.15, "peak": 6.0,
    ...           "dur": 1.2, "speed": 7.0}
    ...     cl, new = c.update(ev)
    ...     news.append(new)
    >>> news.index(True), cl.n, len(c.clusters)
    (3, 12, 1)
    """

    VERSION = "bump-cluster/1"

    def __init__(
        self,
        radius_m: float = 12.0,
        min_passes: int = 3,
        alpha: float = 1e-3,
        ring_m: float = 72.0,
        gate_span_s: float = 0.7,
        pass_gap_s: float = 60.0,
        prune_days: float = 14.0,
        min_lambda: float = 0.3,
    ) -> None:
        self.radius_m = radius_m
        self.min_passes = min_passes
        self.alpha = alpha
        self.ring_m = ring_m
        self.gate_span_s = gate_span_s
        self.pass_gap_s = pass_gap_s
        self.prune_days = prune_days
        self.min_lambda = min_lambda
        self.cell = radius_m
        self.lat0: float | None = None
        self.coslat = 1.0
        self.grid: dict[tuple[int, int], list[str]] = {}
        self.bg: dict[tuple[int, int], int] = {}
        self.clusters: dict[str, Cluster] = {}
        self.next_id = 1
        self.n_events = 0
        self.n_gated = 0

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        if self.lat0 is None:
            self.lat0 = lat
            self.coslat = math.cos(math.radians(lat))
        return lon * M_PER_DEG_LON_EQ * self.coslat, lat * M_PER_DEG_LAT

    def _cell(self, x: float, y: float) -> tuple[int, int]:
        return int(math.floor(x / self.cell)), int(math.floor(y / self.cell))

    def nearest(self, lat: float, lon: float) -> Cluster | None:
        x, y = self._xy(lat, lon)
        cx, cy = self._cell(x, y)
        best, bd = None, self.radius_m
        for i in (cx - 1, cx, cx + 1):
            for j in (cy - 1, cy, cy + 1):
                for cid in self.grid.get((i, j), ()):
                    c = self.clusters[cid]
                    d = math.hypot(c.x - x, c.y - y)
                    if d <= bd:
                        best, bd = c, d
        return best

    def background_lambda(self, c: Cluster) -> float:
        cx, cy = self._cell(c.x, c.y)
        R = int(self.ring_m // self.cell)
        vals = []
        for i in range(cx - R, cx + R + 1):
            for j in range(cy - R, cy + R + 1):
                if max(abs(i - cx), abs(j - cy)) < 2:
                    continue
                v = self.bg.get((i, j))
                if v:
                    vals.append(v)
        if not vals:
            return self.min_lambda
        vals.sort()
        med = vals[len(vals) // 2]  # the median cell: other hot spots (castings) do not inflate it
        return max(self.min_lambda, 2.0 * med)  # footprint: ~2 cells along the street

    def update(self, ev: dict) -> tuple[Cluster | None, bool]:
        self.n_events += 1
        if float(ev["dur"]) < self.gate_span_s:
            return None, False
        self.n_gated += 1
        t = int(ev["t"])
        lat, lon = float(ev["lat"]), float(ev["lon"])
        x, y = self._xy(lat, lon)
        k = self._cell(x, y)
        self.bg[k] = self.bg.get(k, 0) + 1
        c = self.nearest(lat, lon)
        if c is None:
            cid = f"rd-{self.next_id:06d}"
            self.next_id += 1
            c = Cluster(cid, x, y, lat, lon, t_first=t)
            self.clusters[cid] = c
            self.grid.setdefault(k, []).append(cid)
        else:
            # running centroid (the cluster stays indexed at its first cell; radius > drift)
            w = 1.0 / (c.n + 1)
            c.x += w * (x - c.x)
            c.y += w * (y - c.y)
            c.lat += w * (lat - c.lat)
            c.lon += w * (lon - c.lon)
        peak = max(float(ev["peak"]), 1e-3)
        sp = max(float(ev["speed"]), 0.5)
        c.n += 1
        lp = math.log(peak)
        c.s_lp += lp
        c.s_lp2 += lp * lp
        c.s_ls += math.log(max(float(ev["dur"]), 1e-3))
        c.s_sp += sp
        c.s_np += math.log(peak * (30.0 / 3.6) / sp)
        dev = str(ev.get("device", ""))
        # counts instead of the sets of every (device, bucket) / day ever seen (they grew with time):
        # a device's events reach a cluster in time order, so a pass is new when its bucket differs
        # from that device's last one, a day when it is later than the last day
        if isinstance(c.passes, set):  # a checkpoint from before the counts
            _migrate(c)
        b = t // int(self.pass_gap_s * 1000)
        if c.last_pass.get(dev) != b:
            c.last_pass[dev] = b
            c.passes += 1
        c.devices.add(dev)
        d = t // DAY_MS
        if d != c.last_day:
            c.last_day = d
            c.days += 1
        c.t_last = t
        new = False
        if not c.confirmed and c.passes >= self.min_passes and (len(c.devices) >= 2 or c.days >= 2):
            lam = self.background_lambda(c)
            p = _poisson_sf(c.passes, lam)
            c.p_value, c.bg_lambda = p, lam
            if p < self.alpha:
                c.confirmed, c.confirmed_ms, new = True, t, True
        return c, new

    def learn_one(self, x: dict) -> None:
        self.update(x)

    def predict_one(self, x: dict) -> dict | None:
        """The cluster at a location (``{"lat", "lon"}``) as a summary, or None."""
        c = self.nearest(float(x["lat"]), float(x["lon"]))
        if c is None:
            return None
        return {
            "id": c.id,
            "hits": c.n,
            "passes": n_passes(c),
            "confirmed": c.confirmed,
            "kind": c.kind,
            "lat": c.lat,
            "lon": c.lon,
            **c.features(),
        }

    def prune(self, now_ms: int) -> int:
        """Forget unconfirmed single-pass clusters older than ``prune_days`` and unconfirmed ones of any
        size not hit for ``STALE_FACTOR * prune_days``; returns how many."""
        cut = now_ms - int(self.prune_days * DAY_MS)
        cut_stale = now_ms - int(STALE_FACTOR * self.prune_days * DAY_MS)
        dead = [
            cid
            for cid, c in self.clusters.items()
            if not c.confirmed and ((n_passes(c) <= 1 and c.t_last < cut) or c.t_last < cut_stale)
        ]
        for cid in dead:
            c = self.clusters.pop(cid)
            lst = self.grid.get(self._cell(*self._first_xy(c)))
            if lst is not None and cid in lst:
                lst.remove(cid)
            else:
                for lst in self.grid.values():
                    if cid in lst:
                        lst.remove(cid)
                        break
        return len(dead)

    def _first_xy(self, c: Cluster) -> tuple[float, float]:
        return c.x, c.y

    @classmethod
    def _contract_data(cls):
        xs = [
            {
                "t": k * 3_600_000,
                "device": f"v{k % 3}",
                "lat": 52.95 + (k % 3) * 1e-5,
                "lon": -1.15,
                "peak": 5.0 + k % 4,
                "dur": 1.0,
                "speed": 6.0,
            }
            for k in range(15)
        ]
        return {"radius_m": 10.0}, xs, [{"lat": 52.95, "lon": -1.15}, {"lat": 52.96, "lon": -1.15}]


#: prior class summaries: (median peak m/s2, log-sd, median span s, log-sd, typical speed m/s).
#: Spans from the Gonzalez et al. (2017) clips (potholes 1.26 s, metal bumps 0.96 s, asphalt bumps
#: 1.42 s; road texture that crosses the threshold is short); peaks are those *reported*, i.e. above
#: the node's 4 m/s2 threshold, which leaves every class near 5-6 m/s2; traffic slows for humps.
#: Weak priors: the register and verdicts teach the rest.
_PRIORS = {
    "speed_hump": (5.6, 0.20, 1.30, 0.25, 4.8),
    "casting": (5.9, 0.23, 0.99, 0.28, 6.5),
    "pothole": (6.1, 0.30, 1.15, 0.32, 6.5),
    "other": (5.5, 0.20, 0.88, 0.20, 5.5),
}
_FEATS = ("log_peak", "sd_log_peak", "log_span", "speed", "log_norm_peak")


@register
class BumpClusterClassifier(StreamModel):
    """Gaussian naive Bayes over cluster summaries, with prior pseudo-examples per class.

    ``class_prior``: "uniform" (default) or "counts" (training label frequencies).

    >>> m = BumpClusterClassifier()
    >>> hump = {"log_peak": math.log(5.5), "sd_log_peak": 0.2, "log_span": math.log(1.35), "speed": 4.8,
    ...         "log_norm_peak": math.log(5.5 * 8.33 / 4.8)}
    >>> m.predict_one(hump)
    'speed_hump'
    >>> pot = {"log_peak": 1.9, "sd_log_peak": 0.5, "log_span": 0.2, "speed": 6.0, "log_norm_peak": 2.2}
    >>> m.learn_one(pot, "pothole")
    >>> sorted(m.predict_proba_one(pot).items(), key=lambda kv: -kv[1])[0][0]
    'pothole'
    """

    VERSION = "bump-class/1"

    def __init__(
        self, prior_n: int = 12, seed: int = 7, min_var: float = 0.005, class_prior: str = "uniform"
    ) -> None:
        self.prior_n = prior_n
        self.seed = seed
        self.min_var = min_var
        self.class_prior = class_prior
        self.stats: dict[str, list[list[float]]] = {}  # class -> per feature [n, mean, M2]
        self.counts: dict[str, float] = {}
        rnd = random.Random(seed)
        for cls_, (pk, psd, sp, ssd, v) in _PRIORS.items():
            for _ in range(prior_n):
                # a prior cluster: its own severity, street speed and hits scattered around them
                hits = 12
                mu_p = math.log(pk) + rnd.gauss(0, 0.6 * psd)
                v_c = max(2.0, v + rnd.gauss(0, 0.2 if cls_ == "speed_hump" else 1.3))
                lps = [mu_p + rnd.gauss(0, 0.8 * psd) for _ in range(hits)]
                lss = [math.log(sp) + rnd.gauss(0, ssd) for _ in range(hits)]
                sps = [max(1.0, v_c + rnd.gauss(0, 0.3)) for _ in range(hits)]
                m = sum(lps) / hits
                x = {
                    "log_peak": m,
                    "sd_log_peak": math.sqrt(sum((a - m) ** 2 for a in lps) / hits),
                    "log_span": sum(lss) / hits,
                    "speed": sum(sps) / hits,
                    "log_norm_peak": sum(a + math.log(8.333 / s) for a, s in zip(lps, sps)) / hits,
                }
                self._add(x, cls_, 1.0)

    def _add(self, x: dict, y: str, w: float) -> None:
        st = self.stats.setdefault(y, [[0.0, 0.0, 0.0] for _ in _FEATS])
        self.counts[y] = self.counts.get(y, 0.0) + w
        for i, f in enumerate(_FEATS):
            v = float(x[f])
            s = st[i]
            s[0] += w
            d = v - s[1]
            s[1] += w * d / s[0]
            s[2] += w * d * (v - s[1])

    def learn_one(self, x: dict, y: str) -> None:
        self._add(x, y, 1.0)

    def predict_proba_one(self, x: dict) -> dict[str, float]:
        tot = sum(self.counts.values())
        logp = {}
        for y, st in self.stats.items():
            # "uniform": the register already explains most castings and humps, so an unregistered cluster is
            # not a priori a casting just because castings dominate the training labels
            lp = 0.0 if self.class_prior == "uniform" else math.log(self.counts[y] / tot)
            for i, f in enumerate(_FEATS):
                n, mu, m2 = st[i]
                var = max(self.min_var, m2 / max(n, 1.0))
                lp += -0.5 * math.log(2 * math.pi * var) - (float(x[f]) - mu) ** 2 / (2 * var)
            logp[y] = lp
        mx = max(logp.values())
        ex = {y: math.exp(v - mx) for y, v in logp.items()}
        z = sum(ex.values())
        return {y: v / z for y, v in ex.items()}

    def predict_one(self, x: dict) -> str:
        p = self.predict_proba_one(x)
        return max(p, key=p.get)

    @classmethod
    def _contract_data(cls):
        xs = [
            (
                {
                    "log_peak": 1.5 + 0.01 * k,
                    "sd_log_peak": 0.3,
                    "log_span": 0.1,
                    "speed": 6.0,
                    "log_norm_peak": 1.8,
                },
                "casting",
            )
            for k in range(5)
        ]
        return (
            {"prior_n": 4},
            xs,
            [{"log_peak": 1.6, "sd_log_peak": 0.3, "log_span": 0.0, "speed": 6.0, "log_norm_peak": 1.9}],
        )


# ---- raw clips (eval roads) ----------------------------------------------

CLIP_CLASSES = ("pothole", "metal_bump", "asphalt_bump", "texture")


def clip_features(acc_z, hz: float = 50.0) -> dict:
    """Features of one vertical-acceleration clip (m/s2 at ``hz``).

    Peak, spread and shape of ``a = acc_z - median``: peak |a|, positive
    and negative peaks and their asymmetry, the order of the extreme
    excursions, standard deviation, RMS, crest factor, kurtosis, skewness,
    span above 30 % / 50 % of the peak, count of local peaks above
    2 m/s2, zero-crossing rate, mean and max jerk, energy concentration in
    the loudest 0.5 s, and spectral energy shares in 0-2, 2-5, 5-10, 10-25
    Hz bands.

    >>> import math
    >>> f = clip_features([9.81 + (6.0 if 50 <= k < 60 else 0.0) for k in range(120)])
    >>> round(f["peak"], 2), round(f["span30_s"], 2)
    (6.0, 0.2)
    """
    import numpy as np

    z = np.asarray(acc_z, dtype=np.float64)
    a = z - np.median(z)
    n = len(a)
    absa = np.abs(a)
    peak = float(absa.max()) if n else 0.0
    pp, pn = float(a.max()), float(-a.min())
    sd = float(a.std())
    rms = float(math.sqrt(float((a * a).mean())))
    m2 = float(((a - a.mean()) ** 2).mean()) + 1e-12
    kurt = float(((a - a.mean()) ** 4).mean()) / (m2 * m2)
    skew = float(((a - a.mean()) ** 3).mean()) / (m2**1.5)
    above30 = np.nonzero(absa >= 0.3 * peak)[0]
    span30 = float(above30[-1] - above30[0] + 1) / hz if len(above30) else 0.0
    above50 = np.nonzero(absa >= 0.5 * peak)[0]
    span50 = float(above50[-1] - above50[0] + 1) / hz if len(above50) else 0.0
    loc = (absa[1:-1] > absa[:-2]) & (absa[1:-1] >= absa[2:]) & (absa[1:-1] > 2.0)
    zc = float(np.sum(np.signbit(a[1:]) != np.signbit(a[:-1]))) * hz / max(n - 1, 1)
    jerk = np.abs(np.diff(a)) * hz
    w = max(1, int(0.5 * hz))
    e = a * a
    cs = np.concatenate([[0.0], np.cumsum(e)])
    win = cs[w:] - cs[:-w] if n > w else np.array([cs[-1]])
    conc = float(win.max() / (cs[-1] + 1e-12))
    spec = np.abs(np.fft.rfft(a - a.mean())) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / hz)
    tot = float(spec.sum()) + 1e-12
    bands = {}
    for lo, hi in ((0, 2), (2, 5), (5, 10), (10, 25.1)):
        bands[f"band_{lo}_{int(hi)}"] = float(spec[(freqs >= lo) & (freqs < hi)].sum()) / tot
    imax, imin = int(np.argmax(a)), int(np.argmin(a))
    return {
        "peak": peak,
        "log_peak": math.log(peak + 1e-3),
        "peak_pos": pp,
        "peak_neg": pn,
        "asym": (pp - pn) / (peak + 1e-9),
        "down_first": 1.0 if imin < imax else 0.0,
        "sd": sd,
        "rms": rms,
        "crest": peak / (rms + 1e-9),
        "kurtosis": kurt,
        "skew": skew,
        "span30_s": span30,
        "span50_s": span50,
        "n_peaks2": float(loc.sum()),
        "zcr": zc,
        "jerk_mean": float(jerk.mean()) if len(jerk) else 0.0,
        "jerk_max": float(jerk.max()) if len(jerk) else 0.0,
        "conc_05s": conc,
        "len_s": n / hz,
        **bands,
    }


@register
class ClipClassifier(StreamModel):
    """Online classifier of clip features (River: standard scaler + the chosen learner).

    ``learner``: "logreg" (one-vs-rest logistic regression), "knn", "arf"
    (adaptive random forest) or "gnb" (Gaussian naive Bayes).

    >>> m = ClipClassifier(learner="knn")
    >>> for k in range(20):
    ...     m.learn_one({"a": float(k % 2), "b": 1.0}, "x" if k % 2 else "y")
    >>> m.predict_one({"a": 1.0, "b": 1.0})
    'x'
    """

    VERSION = "clip-class/1"

    def __init__(self, learner: str = "logreg", seed: int = 42) -> None:
        self.learner = learner
        self.seed = seed
        self.model = self._build()

    def _build(self):
        from river import forest, linear_model, multiclass, naive_bayes, neighbors, optim, preprocessing

        if self.learner == "logreg":
            est = multiclass.OneVsRestClassifier(
                linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=1e-3)
            )
        elif self.learner == "knn":
            est = neighbors.KNNClassifier(n_neighbors=5)
        elif self.learner == "arf":
            est = forest.ARFClassifier(n_models=25, seed=self.seed, grace_period=20)
        elif self.learner == "gnb":
            est = naive_bayes.GaussianNB()
        else:
            raise ValueError(f"unknown learner {self.learner!r}")
        return preprocessing.StandardScaler() | est

    def learn_one(self, x: dict, y: str) -> None:
        self.model.learn_one(x, y)

    def predict_one(self, x: dict) -> str | None:
        return self.model.predict_one(x)

    def predict_proba_one(self, x: dict) -> dict:
        return self.model.predict_proba_one(x)

    @classmethod
    def _contract_data(cls):
        xs = [({"a": float(k % 3), "b": 0.5 * k}, "c" + str(k % 3)) for k in range(30)]
        return {"learner": "gnb"}, xs, [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 10.0}]
