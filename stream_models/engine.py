"""The model engine: events in, explained findings out.  Pure (no database, no MQTT, no clock).

``Engine(config).process(event) -> list[Finding]`` where an event is a
reading ``(tenant, device_id, kind, metric, time_ms, value)`` (or a
:class:`~stream_models.events.Reading`), a :class:`~stream_models.events.Status`
(with the device's announced ``next_wake``), a
:class:`~stream_models.events.DeviceInfo` registry row (device -> asset and
schedule), a :class:`~stream_models.events.Tick` (``tick(now_ms)``: silence
and missed-window judgements happen without new data), a
:class:`~stream_models.events.CrewReport` (collected / not_out / blocked) or
a :class:`~stream_models.events.Verdict` (operator feedback; also
``feedback(alert_kind, entity, verdict)``, which returns what changed).

Readings taken at one instant by one device are grouped into a *sample*
(the node writes all metrics of a sample with the same time) and handled
together; a sample is complete when the device's next reading has another
time, when its status arrives, or at the next tick.

Per device the engine keeps the kind's models (``stream_models.bins``,
``air``, ``noise``, ``roads``), a :class:`~stream_models.device.SilenceMonitor`,
a :class:`~stream_models.device.BatteryMonitor` and generic
:class:`~stream_models.anomaly.RobustAnomalyScorer` s for metrics nothing
more specific watches; per tenant the local clock, the collection rounds and
:class:`~stream_models.bins.CollectionJudge`, the air neighbourhood and the
road clusters.  ``dumps()`` / ``Engine.loads()`` persist all of it.

>>> from stream_models.events import DeviceInfo, Status, Tick
>>> e = Engine({"timezone": "UTC"})
>>> asset = {"asset_id": "hb-1", "bin_kind": "household", "depth_m": 0.95, "frequency_weeks": 1,
...          "round_days": [0], "slot_h": 9.0, "edge_id": 1, "household_id": "hh-1", "round_id": "mon-weekly"}
>>> _ = e.process(DeviceInfo("t", "bin-1", "bin_fill", 52.95, -1.15, asset))
>>> T = 1767571200000                               # Monday 2026-01-05 00:00Z
>>> out = e.process(("t", "bin-1", "bin_fill", "temp", T, 9.0))
>>> out += e.process(("t", "bin-1", "bin_fill", "temp", T + 60_000, 95.0))
>>> out += e.process(Status("t", "bin-1", T + 70_000, "sleeping", T + 6 * 3_600_000))
>>> [(f.kind, f.severity, f.entity) for f in out]
[('fire_risk', 'critical', 'hb-1')]
>>> [f.kind for f in e.tick(T + 9 * 3_600_000)]     # asleep until 06:00 + grace: silent by 09:00
['device_silent']
>>> Engine.loads(e.dumps()).version == e.version
True
"""

from __future__ import annotations

import bisect
import math
import pickle
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from stream_models.air import (
    AirFailureDetector,
    DaqiIndex,
    HumidityCorrector,
    NeighbourDriftDetector,
    NeighbourExcessDetector,
    PMEpisodeDetector,
)
from stream_models.anomaly import RobustAnomalyScorer
from stream_models.base import PACKAGE_VERSION
from stream_models.bins import (
    CollectionJudge,
    FillLevelModel,
    FillSensorFaults,
    FireRiskDetector,
    TiltClassifier,
)
from stream_models.device import BatteryMonitor, SilenceMonitor
from stream_models.events import CrewReport, DeviceInfo, Reading, Status, Tick, Verdict
from stream_models.findings import Finding, make_finding
from stream_models.noise import NoiseBaseline, NoiseLimits
from stream_models.roads import AssetRegister, BumpClusterClassifier, BumpClusterer, n_days, n_passes, severity_of
from stream_models.timeutil import DAY_MS, HOUR_MS, MIN_MS, LocalTime

__all__ = ["Engine", "EngineConfig", "ENGINE_VERSION"]

ENGINE_VERSION = "engine/1.0.0"
_HEALTH = frozenset(("bat_v", "rssi", "uptime", "buffered", "errors", "dropped"))
_BUMP = ("bump_g", "bump_dur", "speed", "lat", "lon")
#: day summaries kept for judging: a judgement reads only its own day's (the round's other bins), and
#: judgements wait at most judge_max_wait_h (hours) - two weeks is ample
_STATUS_DAYS = 14


@dataclass
class EngineConfig:
    """Engine settings (``Engine(dict)`` accepts the same keys)."""

    timezone: str = "Europe/London"
    #: per-tenant overrides, e.g. {"leeds": {"timezone": "Europe/London"}}
    tenants: dict = field(default_factory=dict)
    #: round windows (local hours) when the registry does not give them
    household_window_h: tuple = (7.0, 15.0)
    street_window_h: tuple = (5.5, 10.0)
    round_grace_h: float = 1.0
    judge_max_wait_h: float = 72.0
    welfare_rounds: int = 2
    overflow_threshold: float = 1.05
    full_now: float = 0.93
    #: humidity correction: "kohler" | "epa" | "none"
    rh_correction: str = "kohler"
    air_neighbour_km: float = 5.0
    regional_share: float = 0.5
    #: LAeq,15min limits (dB) by site type and period; "default" for unknown site types
    noise_limits: dict = field(
        default_factory=lambda: {
            "residential": {"day": 70.0, "evening": 65.0, "night": 62.0},
            "high_street": {"day": 74.0, "evening": 70.0, "night": 66.0},
            "arterial": {"day": 78.0, "evening": 75.0, "night": 72.0},
            "default": {"day": 72.0, "evening": 68.0, "night": 64.0},
        }
    )
    #: road asset register: {tenant: [(id, kind, lat, lon), ...]}
    road_register: dict = field(default_factory=dict)
    register_radius_m: float = 12.0
    #: hits a confirmed, unregistered cluster needs before the classifier names it
    road_class_min_hits: int = 6
    #: generic anomaly scoring: metrics per device kind ("*" = every kind)
    anomaly_metrics: dict = field(
        default_factory=lambda: {
            "air": ["co2", "temp"],
            "noise": [],
            "road": ["temp"],
            "bin_fill": [],
            "*": ["rssi"],
        }
    )
    #: generic scorer window (values) per device kind ("*" = the rest): a bin reports its RSSI with each
    #: upload, ~7 a day, so 1,000 values would be five months of it (and 16 KB of state per bin, growing
    #: all that time); 60 is about a week and a half, against the 3.5 days of 5-minute values (1,000) an
    #: air or noise node keeps
    anomaly_window: dict = field(default_factory=lambda: {"bin_fill": 60, "*": 1000})
    #: values normalised by the exact order statistic before the scorer's histogram takes over (the
    #: NAB-measured default, 5,000, is ~17 days of an air node; at a bin's ~7 RSSI a day it would be a
    #: sorted array growing for two years, so bins start on the histogram)
    anomaly_exact: dict = field(default_factory=lambda: {"bin_fill": 0, "*": 5000})
    anomaly_threshold: float = 3.0
    anomaly_cooldown_h: float = 12.0
    #: model hyperparameter overrides by class name, e.g. {"FillSensorFaults": {"stuck_n": 10}}
    models: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "EngineConfig":
        c = cls()
        for k, v in (d or {}).items():
            if not hasattr(c, k):
                raise ValueError(f"unknown engine setting {k!r}")
            setattr(c, k, v)
        return c


# ---- per-entity state --------------------------------------------------------


class _Dev:
    __slots__ = (
        "tenant",
        "device_id",
        "kind",
        "lat",
        "lon",
        "asset",
        "entity",
        "asset_id",
        "silence",
        "battery",
        "open_t",
        "open",
        "state",
        "scorers",
        "silent_since",
        "battery_flag",
        "cool",
        "last_t",
        "heard",
    )

    def __init__(self, tenant: str, device_id: str, kind: str) -> None:
        self.tenant, self.device_id, self.kind = tenant, device_id, kind
        self.lat = self.lon = None
        self.asset: dict = {}
        self.entity = device_id
        self.asset_id = None
        self.silence = SilenceMonitor()
        self.battery = BatteryMonitor(kind=kind)
        self.open_t: int | None = None
        self.open: dict = {}
        self.state: Any = None
        self.scorers: dict = {}
        self.silent_since: int | None = None
        self.battery_flag = False
        self.cool: dict = {}
        self.last_t = 0
        self.heard = False


#: sample times a bin keeps for gap checks: ~5 days of hourly samples (judgements look back < 2 days)
_SAMPLES_KEPT = 120


class _Bin:
    """Everything the engine knows about one bin."""

    def __init__(self, asset: dict, cfg: EngineConfig, mk) -> None:
        self.asset_id = asset.get("asset_id")
        self.bin_kind = asset.get("bin_kind", "household")
        self.depth = float(asset.get("depth_m") or 0.95)
        self.freq = int(asset.get("frequency_weeks") or 1)
        self.round_days = tuple(int(d) for d in (asset.get("round_days") or ()))
        self.parity = int(asset.get("week_parity") or 0)
        self.round_id = asset.get("round_id") or ""
        self.slot_h = float(asset.get("slot_h") or 0.0)
        self.edge = asset.get("edge_id")
        self.household = asset.get("household_id")
        dw = cfg.household_window_h if self.bin_kind == "household" else cfg.street_window_h
        self.win = (float(asset.get("window_start_h", dw[0])), float(asset.get("window_end_h", dw[1])))
        prior = float(asset.get("expected_fill_per_day") or 0.1) or 0.1
        self.fill = mk(FillLevelModel, prior_rate=prior)
        self.tilt = mk(TiltClassifier, depth_m=self.depth)
        self.fire = mk(FireRiskDetector)
        self.faults = mk(FillSensorFaults)
        self.motions: deque = deque(maxlen=64)
        self.tips: deque = deque(maxlen=32)
        self.drops: deque = deque(maxlen=32)
        self.crew: deque = deque(maxlen=16)
        self.coverage = 0
        self.lid_since: int | None = None
        self.knock_since: int | None = None
        self.fire_since: int | None = None
        self.stuck = self.noisy = self.jumpy = False
        self.np_streak = 0
        self.reliability = [4.0, 1.0]
        self.overflow_flag = False
        self.welfare_rounds = cfg.welfare_rounds
        self.overflow_extra = 0.0
        self.next_due: tuple[int, int] | None = None  # (t of window end, local day)
        self.last_emptied = 0
        self.cool: dict[str, int] = {}  # kind -> no new finding before (re-arm delay)
        self.fire_last = -(1 << 62)  # time of the last hot sample
        self.samples = array("q")  # sorted times of recent scheduled samples (gaps), flat: no int objects

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        if not isinstance(self.samples, array):  # a checkpoint from before the flat array
            self.samples = array("q", self.samples)

    def due_on(self, day: int) -> bool:
        if ((day + 3) % 7) not in self.round_days:
            return False
        return self.freq == 1 or ((day + 3) // 7) % 2 == self.parity


class _Air:
    def __init__(self, cfg: EngineConfig, mk) -> None:
        self.corr = mk(HumidityCorrector, method=cfg.rh_correction)
        self.daqi = mk(DaqiIndex)
        self.local = mk(NeighbourExcessDetector)
        self.drift = mk(NeighbourDriftDetector)
        self.failure = mk(AirFailureDetector)
        self.band: str | None = None
        self.band_cand: str | None = None
        self.band_n = 0
        self.band_hour = -1
        self.day: int | None = None
        self.hourly: dict[int, list] = {}
        self.prev_day: int | None = None
        self.prev_hourly: dict[int, list] = {}
        self.failing = False
        self.drift_flag = False
        self.in_episode = False
        self.level: float | None = None  # smoothed corrected PM2.5 (~25 min)


class _Noise:
    def __init__(self, limits: dict, mk) -> None:
        self.base = mk(NoiseBaseline)
        self.limits = mk(NoiseLimits, limits=limits)


class _Tenant:
    def __init__(self, name: str, cfg: EngineConfig, mk) -> None:
        self.name = name
        tz = (cfg.tenants.get(name) or {}).get("timezone", cfg.timezone)
        self.lt = LocalTime(tz)
        self.judge = mk(CollectionJudge)
        self.bins: dict[str, tuple[str, str]] = {}  # asset id -> device key
        self.by_edge: dict[Any, list[str]] = {}
        self.planned_day: int | None = None
        self.pending: list[tuple[int, int, str]] = []  # (window end, day, asset id)
        self.day_status: dict[tuple[int, str], dict] = {}  # (day, asset) -> evidence summary
        self.air: dict[tuple[str, str], None] = {}
        self.regional = mk(PMEpisodeDetector, alpha_fast=0.5, warmup=288, z_on=3.0, floor=20.0, exit_n=4)
        self.air_day_done: int | None = None
        self.clusterer = mk(BumpClusterer)
        self.road_class = mk(BumpClusterClassifier)
        self.register = AssetRegister(cfg.road_register.get(name, ()))
        self.last_prune = 0
        self.status_cut: int | None = None  # local day day_status was last pruned
        self.stats = {"judged": 0, "collected": 0, "undecided_no_data": 0, "unobservable": 0}


# ---- the engine ----------------------------------------------------------------


class Engine:
    """See the module docstring."""

    VERSION = ENGINE_VERSION

    def __init__(self, config: dict | EngineConfig | None = None) -> None:
        self.config = config if isinstance(config, EngineConfig) else EngineConfig.from_dict(config)
        self.devices: dict[tuple[str, str], _Dev] = {}
        self.tenants: dict[str, _Tenant] = {}
        self.now = 0
        self.open: set = set()
        self.audit: deque = deque(maxlen=10000)
        self.counts: dict[str, int] = {}
        self.n_readings = 0

    @property
    def version(self) -> str:
        return f"{PACKAGE_VERSION} {ENGINE_VERSION}"

    def _mk(self, cls, **kw):
        p = dict(kw)
        p.update(self.config.models.get(cls.__name__, {}))
        return cls(**p)

    # ---- persistence ---------------------------------------------------------
    def dumps(self) -> bytes:
        return b"SSE1" + pickle.dumps(
            {"version": ENGINE_VERSION, "package": PACKAGE_VERSION, "engine": self},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, data: bytes) -> "Engine":
        if not data.startswith(b"SSE1"):
            raise ValueError("not a StreetSense engine state")
        d = pickle.loads(data[4:])
        if d["version"].split("/")[1].split(".")[0] != ENGINE_VERSION.split("/")[1].split(".")[0]:
            raise ValueError(f"engine state {d['version']} is incompatible with {ENGINE_VERSION}")
        return d["engine"]

    def dump_parts(self) -> tuple[bytes, dict[tuple[str, str], bytes]]:
        """The state in parts: the engine without its devices (:meth:`dumps`), and each device's state
        on its own, by ``(tenant, device_id)``. A checkpoint can then rewrite only the devices whose
        bytes changed, not the whole town each time (a device's state references nothing outside it).

        >>> e = Engine({"timezone": "UTC"})
        >>> e.register(DeviceInfo("t", "bin-1", "bin_fill", 52.9, -1.1, {"asset_id": "b1"}))
        >>> core, devs = e.dump_parts()
        >>> e2 = Engine.load_parts(core, devs.items())
        >>> sorted(devs), e2.devices[("t", "bin-1")].state.asset_id, e2.tenants["t"].bins["b1"]
        ([('t', 'bin-1')], 'b1', ('t', 'bin-1'))
        """
        devices = self.devices
        self.devices = {}
        try:
            core = self.dumps()
        finally:
            self.devices = devices
        return core, {k: pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL) for k, ds in devices.items()}

    @classmethod
    def load_parts(cls, core: bytes, devices: Iterable[tuple[tuple[str, str], bytes]]) -> "Engine":
        """The engine :meth:`dump_parts` split (devices in any order)."""
        e = cls.loads(core)
        for k, blob in devices:
            e.devices[(k[0], k[1])] = pickle.loads(blob)
        return e

    # ---- dispatch --------------------------------------------------------------
    def process(self, event: Any) -> list[Finding]:
        if isinstance(event, tuple) and not hasattr(event, "_fields") and len(event) == 6:
            return self.reading(*event)
        if isinstance(event, Reading):
            return self.reading(*event)
        if isinstance(event, Status):
            return self.status(event)
        if isinstance(event, DeviceInfo):
            self.register(event)
            return []
        if isinstance(event, Tick):
            return self.tick(event.now_ms)
        if isinstance(event, CrewReport):
            return self.crew_report(event)
        if isinstance(event, Verdict):
            self.feedback(event.alert_kind, event.entity, event.true_positive, tenant=event.tenant)
            return []
        raise TypeError(f"unknown event {type(event).__name__}")

    def process_many(self, events: Iterable[Any]) -> list[Finding]:
        out: list[Finding] = []
        for ev in events:
            r = self.process(ev)
            if r:
                out.extend(r)
        return out

    def _tenant(self, name: str) -> _Tenant:
        t = self.tenants.get(name)
        if t is None:
            t = self.tenants[name] = _Tenant(name, self.config, self._mk)
        return t

    def register(self, info: DeviceInfo) -> None:
        """Add or update a device's registry row (asset, schedule, position)."""
        key = (info.tenant, info.device_id)
        ds = self.devices.get(key)
        if ds is None:
            ds = self.devices[key] = _Dev(info.tenant, info.device_id, info.kind)
        ds.kind = info.kind
        ds.lat, ds.lon = info.lat, info.lon
        ds.asset = dict(info.asset or {})
        ten = self._tenant(info.tenant)
        if info.kind == "bin_fill":
            b = _Bin(ds.asset, self.config, self._mk)
            if isinstance(ds.state, _Bin):  # keep what was learned
                old = ds.state
                for k in (
                    "fill",
                    "tilt",
                    "fire",
                    "faults",
                    "motions",
                    "tips",
                    "drops",
                    "crew",
                    "coverage",
                    "np_streak",
                    "reliability",
                ):
                    setattr(b, k, getattr(old, k))
            ds.state = b
            ds.asset_id = b.asset_id
            ds.entity = b.asset_id or info.device_id
            if b.asset_id:
                ten.bins[b.asset_id] = key
                lst = ten.by_edge.setdefault((b.edge, b.round_id), [])
                if b.asset_id not in lst:
                    lst.append(b.asset_id)
        elif info.kind == "air":
            if not isinstance(ds.state, _Air):
                ds.state = _Air(self.config, self._mk)
            ten.air[key] = None
            ds.asset_id = ds.asset.get("site_id")
        elif info.kind == "noise":
            site = ds.asset.get("site_type", "default")
            lim = self.config.noise_limits.get(site, self.config.noise_limits.get("default"))
            if not isinstance(ds.state, _Noise):
                ds.state = _Noise(lim, self._mk)
            ds.asset_id = ds.asset.get("site_id")
        else:
            ds.asset_id = ds.asset.get("vehicle_id") or ds.asset.get("asset_id")

    def _device(self, tenant: str, device_id: str, kind: str) -> _Dev:
        key = (tenant, device_id)
        ds = self.devices.get(key)
        if ds is None:  # unregistered: still watched for health and generic anomalies
            self.register(DeviceInfo(tenant, device_id, kind, None, None, {}))
            ds = self.devices[key]
        return ds

    # ---- readings ----------------------------------------------------------------
    def reading(
        self, tenant: str, device_id: str, kind: str, metric: str, time_ms: int, value: float
    ) -> list[Finding]:
        self.n_readings += 1
        ds = self.devices.get((tenant, device_id))
        if ds is None:
            ds = self._device(tenant, device_id, kind)
        if time_ms == ds.open_t:
            ds.open[metric] = value
            return []
        out = self._flush(ds) if ds.open_t is not None else []
        ds.open_t = time_ms
        ds.open = {metric: value}
        self.open.add((tenant, device_id))
        return out

    def _flush(self, ds: _Dev) -> list[Finding]:
        t, vals = ds.open_t, ds.open
        ds.open_t = None
        ds.open = {}
        if t is None:
            return []
        out: list[Finding] = []
        if t > ds.last_t:
            ds.last_t = t
            ds.silence.learn_one({"t": t})
            if ds.silent_since is not None:
                ds.silent_since = None
        if "bat_v" in vals:
            self._battery(ds, t, vals["bat_v"], out)
        k = ds.kind
        if k == "bin_fill":
            if isinstance(ds.state, _Bin):
                self._bin_sample(ds, t, vals, out)
        elif k == "air":
            if isinstance(ds.state, _Air):
                self._air_sample(ds, t, vals, out)
        elif k == "noise":
            if isinstance(ds.state, _Noise):
                self._noise_sample(ds, t, vals, out)
        elif k == "road":
            if "bump_g" in vals:
                self._road_event(ds, t, vals, out)
        am = self.config.anomaly_metrics
        for m in am.get(k) or ():
            if m in vals:
                self._generic(ds, t, m, vals[m], out)
        for m in am.get("*") or ():
            if m in vals:
                self._generic(ds, t, m, vals[m], out)
        return out

    def flush(self) -> list[Finding]:
        """Complete every open sample (done at each tick)."""
        out: list[Finding] = []
        for key in list(self.open):
            ds = self.devices.get(key)
            if ds is not None and ds.open_t is not None:
                out.extend(self._flush(ds))
        self.open.clear()
        return out

    # ---- findings ----------------------------------------------------------------
    def _find(
        self,
        kind: str,
        severity: str,
        ds: _Dev | None,
        t0: int,
        t1: int | None,
        explanation: str,
        evidence: dict,
        action: str,
        model: str,
        version: str,
        *,
        entity: str | None = None,
        tenant: str | None = None,
        lat=None,
        lon=None,
        welfare: bool = False,
        household: str | None = None,
        asset_id: str | None = None,
    ) -> Finding:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ev = dict(evidence)
        ev["engine_version"] = ENGINE_VERSION
        if ds is not None:
            return make_finding(
                kind,
                severity,
                tenant=ds.tenant,
                entity=entity or ds.entity,
                device_id=ds.device_id,
                asset_id=asset_id if asset_id is not None else ds.asset_id,
                lat=ds.lat if lat is None else lat,
                lon=ds.lon if lon is None else lon,
                window_start_ms=t0,
                window_end_ms=t1,
                explanation=explanation,
                evidence=ev,
                suggested_action=action,
                welfare=welfare,
                household=household,
                model=model,
                version=version,
            )
        return make_finding(
            kind,
            severity,
            tenant=tenant or "",
            entity=entity or "",
            window_start_ms=t0,
            window_end_ms=t1,
            explanation=explanation,
            evidence=ev,
            suggested_action=action,
            lat=lat,
            lon=lon,
            asset_id=asset_id,
            model=model,
            version=version,
        )

    # ---- device health -------------------------------------------------------------
    def _battery(self, ds: _Dev, t: int, v: float, out: list) -> None:
        bm = ds.battery
        bm.learn_one({"bat_v": v})
        r = bm.predict_one()
        if r["low"] and not ds.battery_flag:
            ds.battery_flag = True
            where = f" (bin {ds.asset_id})" if ds.asset_id else ""
            supply = r["supply"] == "vehicle"
            expl = f"Device {ds.device_id}{where} reports {v:.2f} V, below its {r['threshold_v']:.2f} V " + (
                "supply threshold: the vehicle supply is lost and it is running on its backup cell."
                if supply
                else "low-battery threshold; it is likely to stop reporting within days."
            )
            out.append(
                self._find(
                    "battery_low",
                    "medium",
                    ds,
                    t,
                    None,
                    expl,
                    {
                        "bat_v": v,
                        **{k: r[k] for k in ("threshold_v", "typical_v", "readings_below")},
                        "rule": "bat_v < threshold for consecutive readings",
                    },
                    "Check the vehicle supply." if supply else "Schedule a battery replacement.",
                    "battery",
                    bm.VERSION,
                    entity=ds.device_id,
                )
            )
        elif (
            not r["low"]
            and ds.battery_flag
            and r["last_v"] is not None
            and r["last_v"] > r["threshold_v"] + 0.05
        ):
            ds.battery_flag = False

    def status(self, st: Status) -> list[Finding]:
        ds = self.devices.get((st.tenant, st.device_id))
        if ds is None:
            ds = self._device(st.tenant, st.device_id, "unknown")
        out = self._flush(ds) if ds.open_t is not None else []
        self.open.discard((st.tenant, st.device_id))
        t = st.received_ms if st.received_ms else st.time_ms
        ds.silence.learn_one({"t": t, "state": st.state, "next_wake": st.next_wake_ms})
        if st.state != "offline":
            ds.silent_since = None
            ds.heard = True
        if t > self.now:
            self.now = t
        return out

    def _silence_check(self, ds: _Dev, now: int, out: list) -> None:
        sm = ds.silence
        exp = sm.expected_by()
        if exp is None or now <= exp or ds.silent_since is not None:
            return
        ds.silent_since = now
        r = sm.predict_one({"now": now})
        why = (
            "its connection dropped (the broker published its last will)"
            if r["state"] == "offline"
            else (
                f"it announced it would wake by {_iso(r['next_wake_ms'])}"
                if r["next_wake_ms"]
                else "it normally reports every few minutes"
            )
        )
        bat = ds.battery.predict_one()
        hint = " Its battery was low, so it has probably run flat." if ds.battery_flag else ""
        what = f"bin {ds.asset_id}" if ds.asset_id and ds.kind == "bin_fill" else f"{ds.kind} device"
        expl = (
            f"Device {ds.device_id} ({what}) has not been heard from since {_iso(r['last_heard_ms'])}; "
            f"{why}, so it is overdue by {(now - exp) / HOUR_MS:.1f} h.{hint}"
        )
        out.append(
            self._find(
                "device_silent",
                "high" if ds.battery_flag else "medium",
                ds,
                r["last_heard_ms"] or now,
                None,
                expl,
                {
                    "expected_by_ms": exp,
                    "last_heard_ms": r["last_heard_ms"],
                    "next_wake_ms": r["next_wake_ms"],
                    "state": r["state"],
                    "last_bat_v": bat["last_v"],
                    "rule": "now > next_wake + grace",
                },
                "Check the device on site (power, antenna) if it stays silent.",
                "silence",
                sm.VERSION,
                entity=ds.device_id,
            )
        )

    # ---- generic anomalies -----------------------------------------------------------
    def _generic(self, ds: _Dev, t: int, metric: str, v: float, out: list) -> None:
        sc = ds.scorers.get(metric)
        if sc is None:
            aw, ae = self.config.anomaly_window, self.config.anomaly_exact
            sc = ds.scorers[metric] = self._mk(RobustAnomalyScorer, window=int(aw.get(ds.kind, aw.get("*", 1000))),
                                               exact=int(ae.get(ds.kind, ae.get("*", 5000))))
        s = sc.score_learn_one(v)
        thr = self.config.anomaly_threshold * ds.cool.get(("thr", metric), 1.0)
        if s >= thr and t >= ds.cool.get(metric, 0):
            ds.cool[metric] = t + int(self.config.anomaly_cooldown_h * HOUR_MS)
            info = sc.last
            expl = (
                f"{metric} on {ds.device_id} read {v:g}, unusual against its recent typical "
                f"{info.get('median', 0):.3g} (spread {info.get('scale', 0):.3g}); score {s:.1f} "
                f"against an alert threshold of {thr:.1f}."
            )
            out.append(
                self._find(
                    "anomaly",
                    "low",
                    ds,
                    t,
                    None,
                    expl,
                    {
                        "metric": metric,
                        "value": v,
                        "score": round(s, 3),
                        "threshold": thr,
                        "median": info.get("median"),
                        "scale": info.get("scale"),
                    },
                    "Look at the device's recent readings; confirm or dismiss.",
                    "robust-anomaly",
                    sc.VERSION,
                    entity=ds.device_id,
                )
            )

    # ---- bins --------------------------------------------------------------------------
    def _bin_sample(self, ds: _Dev, t: int, vals: dict, out: list) -> None:
        b: _Bin = ds.state
        motion = len(vals) == 1 and "tilt" in vals
        cls = "rest"
        d = vals.get("distance")
        if "tilt" in vals:
            tx = {"tilt": vals["tilt"], "motion": motion, "distance": d}
            cls = b.tilt.predict_one(tx)
            if cls == "tipped":
                b.tips.append(t)
                b.overflow_flag = False
                b.last_emptied = max(b.last_emptied, t)
            elif cls == "handled" and motion:
                b.motions.append(t)
            elif cls == "knocked":
                if b.knock_since is None and t >= b.cool.get("knocked_over", 0):
                    b.knock_since = t
                    b.cool["knocked_over"] = t + 6 * HOUR_MS
                    out.append(
                        self._find(
                            "knocked_over",
                            "medium",
                            ds,
                            t,
                            None,
                            f"Bin {b.asset_id} is lying on its side: tilt {vals['tilt']:.0f} deg"
                            + (f" with the sensor {d:.2f} m from the ground." if d is not None else "."),
                            {
                                "tilt_deg": vals["tilt"],
                                "distance_m": d,
                                "resting_tilt_deg": round(b.tilt.rest, 1),
                                "rule": f"tilt >= {b.tilt.knock_min} deg and distance <= depth",
                            },
                            "Ask the street team to right the bin and clear any spilled rubbish.",
                            "tilt",
                            b.tilt.VERSION,
                        )
                    )
            elif cls == "lid_open" and not motion:
                if b.lid_since is None and t >= b.cool.get("lid_open", 0):
                    b.lid_since = t
                    b.cool["lid_open"] = t + 6 * HOUR_MS
                    out.append(
                        self._find(
                            "lid_open",
                            "low",
                            ds,
                            t,
                            None,
                            f"The lid of bin {b.asset_id} is open: tilt {vals['tilt']:.0f} deg and the "
                            "sensor sees "
                            f"{d:.2f} m, past the bin floor ({b.depth:.2f} m).",
                            {
                                "tilt_deg": vals["tilt"],
                                "distance_m": d,
                                "depth_m": b.depth,
                                "rule": f"tilt >= {b.tilt.lid_min} deg and distance > depth",
                            },
                            "Close the lid (rain, pests, litter).",
                            "tilt",
                            b.tilt.VERSION,
                        )
                    )
            elif not motion and cls in ("rest", "propped"):
                # only a *later* sample ends an episode (a pack's older samples arrive after an alarm)
                if b.knock_since is not None and t > b.knock_since:
                    b.knock_since = None
                if b.lid_since is not None and t > b.lid_since:
                    b.lid_since = None
                b.tilt.learn_one(tx)
        temp = vals.get("temp")
        hot = False
        if temp is not None:
            fx = {"temp": temp}
            risk = b.fire.predict_one(fx)
            hot = risk or temp >= b.fire.min_c
            if hot and t > b.fire_last:
                b.fire_last = t
            if risk and b.fire_since is None and t >= b.cool.get("fire_risk", 0):
                b.fire_since = t
                b.cool["fire_risk"] = t + 6 * HOUR_MS
                sc = b.fire.score_one(fx)
                out.append(
                    self._find(
                        "fire_risk",
                        "critical",
                        ds,
                        t,
                        None,
                        f"Bin {b.asset_id}: lid temperature {temp:.0f} C, {sc['excess_c']:.0f} C above its "
                        "usual "
                        f"{sc['baseline_c']:.0f} C. This looks like a fire in the bin.",
                        {
                            "temp_c": temp,
                            "baseline_c": sc["baseline_c"],
                            "excess_c": round(sc["excess_c"], 1),
                            "rule": f"temp >= {b.fire.abs_c} C or (>= {b.fire.min_c} C and "
                            f"{b.fire.jump_c} C above baseline)",
                        },
                        "Call the fire service if flames or smoke are reported; send the street team to "
                        "check.",
                        "fire-risk",
                        b.fire.VERSION,
                    )
                )
            elif not hot:
                if b.fire_since is not None and temp < 35.0 and t > b.fire_since + HOUR_MS:
                    b.fire_since = None
                if b.fire_since is None:
                    b.fire.learn_one(fx)
        if motion:
            return
        if d is not None or "fill" in vals:
            if t > b.coverage:
                b.coverage = t
            sm = b.samples
            if not sm or t > sm[-1]:
                sm.append(t)
            else:
                bisect.insort(sm, t)
            if len(sm) > _SAMPLES_KEPT:
                del sm[:24]
        f = vals.get("fill")
        if f is None or cls in ("knocked", "lid_open") or hot or b.fire_since is not None:
            return
        if not (-0.05 <= f <= 1.1):
            return
        # sensor faults
        b.faults.learn_one({"t": t, "distance": d, "fill": f})
        fr = b.faults.predict_one()
        self._fault_findings(ds, b, t, fr, out)
        if b.noisy or b.stuck:
            return
        loc = self._tenant(ds.tenant).lt.local_ms(t)
        ev = b.fill.update({"t": t, "local": loc, "fill": f})
        if ev is not None and ev["t1"] - b.fire_last > 6 * HOUR_MS:  # (a fire burns rubbish down too)
            b.drops.append((ev["t0"], ev["t1"]))
            b.overflow_flag = False
            b.last_emptied = max(b.last_emptied, ev["t1"])
        self._overflow_check(ds, b, t, out)

    def _fault_findings(self, ds: _Dev, b: _Bin, t: int, fr: dict, out: list) -> None:
        def arm(kind: str) -> bool:
            # one finding per episode; a fault that comes back within 48 h of clearing is the same episode
            if t < b.cool.get(kind, 0):
                return False
            b.cool[kind] = t + 48 * HOUR_MS
            return True

        def cleared(kind: str) -> None:
            b.cool[kind] = max(b.cool.get(kind, 0), t + 48 * HOUR_MS)

        if fr["stuck"] and not b.stuck:
            b.stuck = True
            if arm("sensor_stuck"):
                out.append(
                    self._find(
                        "sensor_stuck",
                        "medium",
                        ds,
                        t,
                        None,
                        f"The fill sensor in bin {b.asset_id} has reported exactly "
                        f"{fr['stuck_value_m']:.3f} m "
                        f"{fr['run']} times in a row; a working sensor's reading varies by millimetres.",
                        {
                            "run": fr["run"],
                            "value_m": fr["stuck_value_m"],
                            "rule": f"identical distance x {b.faults.stuck_n}",
                        },
                        "Inspect the sensor (obstruction, condensation, fault); fill forecasts for this bin "
                        "are paused.",
                        "fill-faults",
                        b.faults.VERSION,
                    )
                )
        elif not fr["stuck"] and b.stuck:
            b.stuck = False
            cleared("sensor_stuck")
        if fr["noisy"] and not b.noisy:
            b.noisy = True
            if arm("sensor_noisy"):
                out.append(
                    self._find(
                        "sensor_noisy",
                        "low",
                        ds,
                        t,
                        None,
                        f"The fill sensor in bin {b.asset_id} is erratic: readings scatter by "
                        f"{fr['noise_m'] * 100:.0f} cm "
                        f"around their running median and jump {fr['step_m'] * 100:.0f} cm between samples "
                        "(normally "
                        f"about 1 cm).",
                        {
                            "median_residual_m": round(fr["noise_m"], 4),
                            "median_step_m": round(fr["step_m"], 4),
                            "threshold_m": b.faults.noise_m,
                            "rule": "median |d - running median of 3| and median step",
                        },
                        "Clean or replace the sensor; fill forecasts for this bin are paused.",
                        "fill-faults",
                        b.faults.VERSION,
                    )
                )
        elif not fr["noisy"] and b.noisy:
            b.noisy = False
            cleared("sensor_noisy")
        if fr["jumpy"] and not b.jumpy and not b.noisy:
            b.jumpy = True
            if arm("impossible_jump"):
                out.append(
                    self._find(
                        "impossible_jump",
                        "low",
                        ds,
                        t,
                        None,
                        f"The fill reading of bin {b.asset_id} jumped and came straight back "
                        f"{fr['spikes_24h']} times "
                        f"in 24 h, which rubbish cannot do (spurious echoes).",
                        {
                            "spikes_24h": fr["spikes_24h"],
                            "jump": b.faults.spike_jump,
                            "rule": f">= {b.faults.spikes_per_day} single-sample excursions in 24 h",
                        },
                        "Check the sensor's mounting and lens.",
                        "fill-faults",
                        b.faults.VERSION,
                    )
                )
        elif not fr["jumpy"] and b.jumpy:
            b.jumpy = False
            cleared("impossible_jump")

    def _next_round_end(self, ten: _Tenant, b: _Bin, t: int) -> tuple[int, int] | None:
        nd = b.next_due
        if nd is not None and nd[0] > t:
            return nd
        day = ten.lt.local_day(t)
        for dd in range(day, day + 29):
            if b.due_on(dd):
                te = ten.lt.at_local(dd, b.win[1])
                if te > t:
                    b.next_due = (te, dd)
                    return b.next_due
        return None

    def _overflow_check(self, ds: _Dev, b: _Bin, t: int, out: list, reason: str = "") -> None:
        if b.overflow_flag or b.fill.level is None or b.fill.n < 6:
            return
        ten = self._tenant(ds.tenant)
        nd = self._next_round_end(ten, b, t)
        if nd is None:
            return
        lt = ten.lt
        loc = lt.local_ms(t)
        level = b.fill.level
        pred = level + b.fill.gain_between(loc, lt.local_ms(nd[0]))
        thr = self.config.overflow_threshold + b.overflow_extra
        if pred < thr:
            return
        full_now = level >= self.config.full_now + b.overflow_extra
        b.overflow_flag = True
        ttf = b.fill.time_to_full_h(loc)
        eta = t + int(ttf * HOUR_MS) if ttf is not None else None
        days = (nd[0] - t) / DAY_MS
        rate = b.fill.rate_per_day((loc // DAY_MS + 3) % 7)
        if full_now:
            expl = (
                f"Bin {b.asset_id} is already {level * 100:.0f}% full and its next collection window ends "
                f"{_iso(nd[0])} ({days:.1f} days away)."
            )
            sev = "high"
        else:
            expl = (
                f"Bin {b.asset_id} is {level * 100:.0f}% full and fills about {rate * 100:.0f}% a day; it is "
                f"forecast to reach {pred * 100:.0f}% before its next collection ({_iso(nd[0])}, "
                f"{days:.1f} days away)" + (f", full around {_iso(eta)}." if eta else ".")
            )
            sev = "high" if ttf is not None and ttf < 24 else "medium"
        if reason:
            expl += " " + reason
        action = (
            "Add the bin to an extra collection before it overflows."
            if b.bin_kind == "street"
            else "Offer an extra collection or ask the household to present the bin at the next round."
        )
        out.append(
            self._find(
                "overflow_forecast",
                sev,
                ds,
                t,
                eta or nd[0],
                expl,
                {
                    "fill_level": round(level, 3),
                    "forecast_at_next_round": round(pred, 3),
                    "threshold": thr,
                    "rate_per_day_by_weekday": [round(b.fill.rate_per_day(k), 4) for k in range(7)],
                    "next_round_end_ms": nd[0],
                    "time_to_full_h": None if ttf is None else round(ttf, 1),
                    "rule": "level + learned daily rates to the next round >= threshold",
                },
                action,
                "fill-level",
                b.fill.VERSION,
            )
        )

    def crew_report(self, r: CrewReport) -> list[Finding]:
        ten = self._tenant(r.tenant)
        key = ten.bins.get(r.asset_id)
        if key is None:
            return []
        b = self.devices[key].state
        b.crew.append((int(r.time_ms), r.outcome))
        if r.outcome == "collected":
            b.overflow_flag = False
            b.last_emptied = max(b.last_emptied, int(r.time_ms))
        return []

    # ---- rounds: missed collection / not put out ---------------------------------------
    def _plan_days(self, ten: _Tenant, now: int) -> None:
        today = ten.lt.local_day(now)
        if ten.planned_day is None:
            ten.planned_day = today - 1
        while ten.planned_day < today:
            ten.planned_day += 1
            day = ten.planned_day
            for aid, key in ten.bins.items():
                ds = self.devices.get(key)
                if ds is None or not isinstance(ds.state, _Bin):
                    continue
                b = ds.state
                if b.due_on(day):
                    we = ten.lt.at_local(day, b.win[1])
                    ten.pending.append((we, day, aid))
            ten.pending.sort()

    def _evidence(self, ten: _Tenant, b: _Bin, day: int) -> dict:
        lt = ten.lt
        ws, we = lt.at_local(day, b.win[0]), lt.at_local(day, b.win[1])
        lo, hi = ws - HOUR_MS, we + 2 * HOUR_MS
        tip = any(lo <= x <= hi for x in b.tips)
        drop = any(a <= hi and c >= lo for a, c in b.drops)
        crew = None
        for tc, oc in b.crew:
            if ws - 12 * HOUR_MS <= tc <= we + 12 * HOUR_MS:
                crew = oc
        m_lo = lt.at_local(day - 1, 12.0)
        motion = any(m_lo <= x <= we + 12 * HOUR_MS for x in b.motions)
        return {
            "tip": tip,
            "drop": drop,
            "crew": crew,
            "motion": motion,
            "has_data": b.coverage >= we,
            "window": (ws, we),
            "emptied": tip or drop or crew == "collected",
        }

    def _judge_due(self, now: int, out: list) -> None:
        grace = int(self.config.round_grace_h * HOUR_MS)
        maxw = int(self.config.judge_max_wait_h * HOUR_MS)
        for ten in self.tenants.values():
            if not ten.bins:
                continue
            self._plan_days(ten, now)
            keep = []
            for item in ten.pending:
                we, day, aid = item
                if we + grace > now:
                    keep.append(item)
                    continue
                key = ten.bins.get(aid)
                ds = self.devices.get(key) if key else None
                if ds is None or not isinstance(ds.state, _Bin):
                    continue
                b = ds.state
                waiting = (
                    b.coverage < we
                    or (b.fill.pending is not None and b.fill.pending[0] >= we - 6 * HOUR_MS)
                    or self._gap(b, ten.lt.at_local(day - 1, 12.0), we)
                )
                # no data past the window yet, a drop awaiting its confirming sample, or a pack still missing
                # from the window (delivered out of order / buffered): wait, up to judge_max_wait_h
                if waiting and now - we <= maxw:
                    keep.append(item)
                    continue
                if b.coverage < we:
                    ten.stats["undecided_no_data"] += 1
                    continue
                self._judge_one(ten, ds, b, day, now, out)
            ten.pending = keep
            # forget old day summaries (once a local day; was only past 50,000 of them: grew with time)
            today = ten.lt.local_day(now)
            if getattr(ten, "status_cut", None) != today:
                ten.status_cut = today
                cut = today - _STATUS_DAYS
                ten.day_status = {k: v for k, v in ten.day_status.items() if k[0] >= cut}

    @staticmethod
    def _gap(b: _Bin, t0: int, t1: int) -> bool:
        """True when the samples covering [t0, t1] have a hole (> 2.5 x the usual interval)."""
        sm = b.samples
        if len(sm) < 4:
            return False
        i = bisect.bisect_left(sm, t0)
        j = bisect.bisect_right(sm, t1)
        seg = sm[max(0, i - 1) : min(len(sm), j + 1)]
        if len(seg) < 2:
            return True
        diffs = sorted(y - x for x, y in zip(sm[-25:], sm[-24:]))
        usual = diffs[len(diffs) // 2] if diffs else HOUR_MS
        lim = 2.5 * max(usual, 60_000)
        return any(y - x > lim for x, y in zip(seg, seg[1:]))

    def _judge_one(self, ten: _Tenant, ds: _Dev, b: _Bin, day: int, now: int, out: list) -> None:
        ev = self._evidence(ten, b, day)
        ten.stats["judged"] += 1
        ws, we = ev["window"]
        ten.day_status[(day, b.asset_id)] = ev
        if ev["emptied"]:
            ten.stats["collected"] += 1
            if b.bin_kind == "household":
                if ev["motion"]:
                    b.reliability[0] += 1
                else:
                    b.reliability[1] += 1
            b.np_streak = 0
            ten.judge.learn_one({}, "collected")
            return
        if b.bin_kind == "street" and ev["crew"] is None:
            lv = b.fill.level_at(ws)
            if lv is None or lv < b.fill.drop_min + 0.1 or b.noisy or b.stuck:
                ten.stats["unobservable"] += 1  # too empty (or sensor unreliable) to see an emptying
                return
        # round-level evidence: the bin's street (same round) and the round as a whole
        sl = se = 0
        for aid in ten.by_edge.get((b.edge, b.round_id), ()):
            if aid == b.asset_id:
                continue
            o = ten.day_status.get((day, aid))
            if o is None:
                key = ten.bins.get(aid)
                ods = self.devices.get(key) if key else None
                if ods is None or not ods.state.due_on(day):
                    continue
                o = self._evidence(ten, ods.state, day)
                if not o["has_data"]:
                    continue
            if o["emptied"]:
                se += 1
            elif o["motion"] or self.devices[ten.bins[aid]].state.bin_kind == "street":
                sl += 1
        rn = re_ = 0
        for (dd, aid), o in ten.day_status.items():
            if dd == day and aid != b.asset_id:
                key = ten.bins.get(aid)
                if key and self.devices[key].state.round_id == b.round_id:
                    rn += 1
                    re_ += 1 if o["emptied"] else 0
        x = {
            "motion_seen": ev["motion"] if b.bin_kind == "household" else True,
            "reliability": tuple(b.reliability) if b.bin_kind == "household" else (99.0, 1.0),
            "street_left": sl,
            "street_emptied": se,
            "round_emptied_frac": (re_ / rn) if rn else 1.0,
            "round_n": rn,
            "crew": ev["crew"],
        }
        res = ten.judge.predict_one(x)
        level = b.fill.level
        common = {
            "round_id": b.round_id,
            "scheduled_day": _iso(ten.lt.day_start(day))[:10],
            "window_start_ms": ws,
            "window_end_ms": we,
            "tip_seen": ev["tip"],
            "fill_drop_seen": ev["drop"],
            "put_out_motion_seen": ev["motion"],
            "crew_report": ev["crew"],
            "street_bins_left": sl,
            "street_bins_emptied": se,
            "round_emptied_share": round(x["round_emptied_frac"], 3),
            "round_bins_seen": rn,
            "fill_level": None if level is None else round(level, 3),
            "motion_reliability": [round(v, 1) for v in b.reliability],
            "log_odds_missed": res["log_odds"],
            "p_missed": round(res["p_missed"], 4),
            "terms": res["terms"],
        }
        day_txt = common["scheduled_day"]
        if res["decision"] == "missed_collection":
            b.np_streak = 0
            cause = res.get("cause", "crew_missed_bin")
            ten.judge.learn_one({"cause": cause}, "missed_collection")
            why = {
                "street_skipped": f"the other bins on the street that were out ({sl}) were left too - "
                f"the crew "
                "seems to have skipped the street",
                "round_not_run": "almost none of the round's bins were emptied",
                "blocked": "the crew reported the street blocked",
                "crew_missed_bin": "the rest of the round was emptied",
            }.get(cause, "")
            pres = (
                (
                    "its sensor recorded it being wheeled out"
                    if ev["motion"]
                    else "it is on a street the crew skipped"
                )
                if b.bin_kind == "household"
                else "it is a street bin"
            )
            expl = (
                f"Bin {b.asset_id} was due on {day_txt} (round {b.round_id}) but was not emptied: no tip by "
                "the "
                f"lifter and no drop in fill in the collection window. The bin was out ({pres}); {why}."
            )
            sev = "high" if cause in ("street_skipped", "round_not_run") or (level or 0) > 0.8 else "medium"
            out.append(
                self._find(
                    "missed_collection",
                    sev,
                    ds,
                    ws,
                    we,
                    expl,
                    {**common, "cause": cause},
                    "Send a crew back to empty the bin"
                    + (" and the rest of the street." if cause == "street_skipped" else "."),
                    "collection-judge",
                    ten.judge.VERSION,
                )
            )
            self._overflow_check(ds, b, now, out, reason="(Its scheduled collection was missed.)")
            return
        # not put out
        ten.judge.learn_one({}, "not_put_out")
        b.np_streak += 1
        n = b.np_streak
        household = b.bin_kind == "household"
        common["rounds_in_a_row"] = n
        if n >= b.welfare_rounds and household:
            expl = (
                f"Bin {b.asset_id} has not been put out for collection {n} rounds in a row (latest "
                f"{day_txt}, "
                f"round {b.round_id}): no movement of the bin and no emptying, while the rest of the round "
                f"was collected. This can be a sign that the household needs help."
            )
            out.append(
                self._find(
                    "not_put_out_2",
                    "medium",
                    ds,
                    ws,
                    we,
                    expl,
                    common,
                    "Welfare check under the assisted-collection policy (only for households that "
                    "have consented).",
                    "collection-judge",
                    ten.judge.VERSION,
                    welfare=True,
                    household=b.household,
                )
            )
        else:
            expl = (
                f"Bin {b.asset_id} was not put out for its collection on {day_txt} (round {b.round_id}): its "
                f"sensor recorded no movement and no emptying, while "
                f"{'the rest of the street was emptied' if se else 'the round went ahead'}."
            )
            out.append(
                self._find(
                    "not_put_out",
                    "low" if n == 1 else "medium",
                    ds,
                    ws,
                    we,
                    expl,
                    common,
                    "No action needed for a single round; the bin may overflow before the next one.",
                    "collection-judge",
                    ten.judge.VERSION,
                )
            )
        self._overflow_check(ds, b, now, out, reason="(It was not put out for its last collection.)")

    # ---- air -----------------------------------------------------------------------------
    def _air_sample(self, ds: _Dev, t: int, vals: dict, out: list) -> None:
        a: _Air = ds.state
        pm25 = vals.get("pm25")
        if pm25 is None:
            return
        ten = self._tenant(ds.tenant)
        rh = vals.get("rh")
        corr25 = a.corr.predict_one({"pm25": pm25, "rh": rh})
        pm10 = vals.get("pm10")
        corr10 = a.corr.predict_one({"pm25": pm10, "rh": rh}) if pm10 is not None else None
        nb = self._air_neighbour_level(ds, ten)
        a.failure.learn_one({"pm25": pm25, "neighbours": nb})
        fr = a.failure.predict_one()
        if fr["failure"] and not a.failing:
            a.failing = True
            mode = fr["mode"]
            expl = f"Air sensor {ds.device_id} reads {pm25:g} ug/m3 " + (
                "near zero for " + str(fr['zero_run']) + " samples while its neighbours read "
                f"{nb:.1f} ug/m3: the fan has probably stopped."
                if mode == "fan_stopped"
                else f"with {fr['spikes_in_window']} huge spikes between normal readings in the last hour: "
                "the laser or optics are failing."
            )
            out.append(
                self._find(
                    "air_sensor_failure",
                    "high",
                    ds,
                    t,
                    None,
                    expl,
                    {
                        "mode": mode,
                        "pm25_raw": pm25,
                        "neighbours_pm25": nb,
                        **fr,
                        "rule": "flat near-zero vs neighbours, or intermittent spikes",
                    },
                    "Replace or service the PM sensor; its readings are excluded meanwhile.",
                    "air-failure",
                    a.failure.VERSION,
                )
            )
        elif not fr["failure"]:
            a.failing = False
        if a.failing:
            return
        lt = ten.lt
        loc = lt.local_ms(t)
        hour = (loc // HOUR_MS) % 24
        day = loc // DAY_MS
        if a.day != day:
            if a.day is not None:
                a.prev_day, a.prev_hourly = a.day, a.hourly
            a.day = day
            a.hourly = {}
        h = a.hourly.setdefault(hour, [0.0, 0])
        h[0] += corr25
        h[1] += 1
        a.daqi.learn_one({"t": t, "pm25": corr25, "pm10": corr10})
        hk = t // HOUR_MS
        if hk != a.band_hour:
            a.band_hour = hk
            dq = a.daqi.predict_one()
            band = dq["band"]
            # a band change is reported once it has held for 3 hourly checks (no flapping at a boundary)
            if band != a.band_cand:
                a.band_cand, a.band_n = band, 0
            a.band_n += 1
            if band is not None and band != a.band and (a.band_n >= 3 or a.band is None):
                prev = a.band
                a.band = band
                if prev is not None or band != "Low":
                    sev = {"Low": "info", "Moderate": "low", "High": "high", "Very High": "critical"}[band]
                    expl = (
                        f"Air quality at {ds.device_id} is now '{band}' on the UK Daily Air Quality Index "
                        f"(index {dq['index']}): 24-hour mean PM2.5 {dq['pm25_24h']} ug/m3"
                        + (f", PM10 {dq['pm10_24h']} ug/m3" if dq['pm10_24h'] is not None else "")
                        + f" (humidity-corrected){'; it was ' + prev if prev else ''}."
                    )
                    out.append(
                        self._find(
                            "daqi_band",
                            sev,
                            ds,
                            t - DAY_MS,
                            t,
                            expl,
                            {
                                **dq,
                                "previous_band": prev,
                                "correction": a.corr.method,
                                "rule": "DEFRA DAQI bands on 24 h running means",
                            },
                            "Publish the band; at High or above issue the health advice to "
                            "at-risk groups.",
                            "daqi",
                            a.daqi.VERSION,
                        )
                    )
        a.level = corr25 if a.level is None else a.level + 0.2 * (corr25 - a.level)
        if nb is None:
            return
        ev = a.local.update({"t": t, "hour": hour, "own": a.level, "neighbours": nb})
        if ev == "start":
            a.in_episode = True
            last = a.local.last
            expl = (
                f"Local particulate episode at {ds.device_id}: PM2.5 {last['own']:.0f} ug/m3 "
                "(humidity-corrected), "
                f"{last['excess_ratio']:.1f}x above its usual ratio to the neighbouring sensors "
                f"({last['neighbours']:.0f} ug/m3) for this hour - a local source (bonfire, works, idling "
                f"vehicles)."
            )
            out.append(
                self._find(
                    "pm_episode",
                    "high" if last["own"] >= 54 else "medium",
                    ds,
                    t,
                    None,
                    expl,
                    {
                        "scope": "local",
                        **_r(last),
                        "ratio_on": a.local.ratio_on * a.local.scale,
                        "rule": "smoothed own / neighbours' median vs the usual ratio for the hour",
                    },
                    "Look for a local source near the sensor; advise nearby residents if it persists.",
                    "pm-local",
                    a.local.VERSION,
                )
            )
        elif ev == "end":
            a.in_episode = False

    def _air_regional(self, ten: _Tenant, now: int, out: list) -> None:
        """Town-wide episodes: the median sensor level against its own hour-of-day baseline (at each tick)."""
        levels = []
        for key in ten.air:
            o = self.devices.get(key)
            if (
                o is not None
                and isinstance(o.state, _Air)
                and not o.state.failing
                and o.state.level is not None
                and now - o.last_t < 2 * HOUR_MS
            ):
                levels.append(o.state.level)
        if len(levels) < 2:
            return
        levels.sort()
        med = levels[len(levels) // 2]
        hour = ten.lt.hour(now)
        det = ten.regional
        ev = det.update({"t": now, "hour": hour, "pm25": med})
        if ev == "start":
            last = det.last
            high = sum(1 for v in levels if v >= 2.0 * last["baseline"])
            expl = (
                f"Town-wide particulate episode: the median of {len(levels)} air sensors is "
                f"{last['level']:.0f} "
                f"ug/m3 (humidity-corrected), {last['ratio']:.1f}x the usual level for this hour "
                f"({last['baseline']:.0f}); {high} of them read at least twice the usual level."
            )
            out.append(
                self._find(
                    "pm_episode",
                    "high",
                    None,
                    now,
                    None,
                    expl,
                    {
                        "scope": "regional",
                        "sensors": len(levels),
                        "sensors_doubled": high,
                        **_r(last),
                        "rule": "median sensor level vs its hour-of-day baseline",
                    },
                    "Issue public health advice for at-risk groups; check DEFRA's regional forecast.",
                    "pm-episode",
                    det.VERSION,
                    entity=ten.name,
                    tenant=ten.name,
                )
            )

    def _air_neighbour_level(self, ds: _Dev, ten: _Tenant) -> float | None:
        vals = []
        for key in ten.air:
            if key == (ds.tenant, ds.device_id):
                continue
            o = self.devices.get(key)
            if o is None or not isinstance(o.state, _Air) or o.state.failing or o.state.level is None:
                continue
            if self._near(ds, o):
                vals.append(o.state.level)
        if not vals:
            return None
        vals.sort()
        return vals[len(vals) // 2]

    def _near(self, a: _Dev, b: _Dev) -> bool:
        if a.lat is None or b.lat is None:
            return True
        dy = (a.lat - b.lat) * 111.0
        dx = (a.lon - b.lon) * 111.0 * math.cos(math.radians(a.lat))
        return dx * dx + dy * dy <= self.config.air_neighbour_km**2

    def _air_daily(self, ten: _Tenant, now: int, out: list) -> None:
        """Once a local day is over: daily medians -> neighbour drift."""
        if not ten.air:
            return
        lt = ten.lt
        day = lt.local_day(now - 2 * HOUR_MS) - 1
        if ten.air_day_done is not None and day <= ten.air_day_done:
            return
        ten.air_day_done = day
        meds: dict = {}
        for key in ten.air:
            o = self.devices.get(key)
            if o is None or not isinstance(o.state, _Air):
                continue
            a = o.state
            hv = a.hourly if a.day == day else a.prev_hourly if a.prev_day == day else {}
            vals = sorted(s / n for s, n in hv.values() if n)
            if len(vals) >= 12 and not a.failing:
                meds[key] = vals[len(vals) // 2]
        for key, own in meds.items():
            o = self.devices[key]
            others = sorted(v for k2, v in meds.items() if k2 != key and self._near(o, self.devices[k2]))
            if len(others) < 2:
                continue
            nb = others[len(others) // 2]
            a = o.state
            a.drift.learn_one({"own": own, "neighbours": nb})
            r = a.drift.predict_one()
            if r["drift"] and not a.drift_flag:
                a.drift_flag = True
                ratio = math.exp(r["log_ratio"] - r["baseline_log_ratio"])
                expl = (
                    f"Air sensor {o.device_id} is drifting {r['direction']}: its daily PM2.5 is now "
                    f"{ratio:.2f}x what it used to be relative to its {len(others)} neighbours "
                    f"({own:.1f} vs their {nb:.1f} ug/m3 on {_iso(lt.day_start(day))[:10]})."
                )
                out.append(
                    self._find(
                        "air_sensor_drift",
                        "medium",
                        o,
                        lt.day_start(day),
                        now,
                        expl,
                        {
                            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()},
                            "own_daily_median": round(own, 2),
                            "neighbours_median": round(nb, 2),
                            "rule": "CUSUM on log(own / neighbours) against the learned ratio",
                        },
                        "Co-locate with a reference or recalibrate / replace the sensor.",
                        "air-drift",
                        a.drift.VERSION,
                    )
                )
            elif not r["drift"]:
                a.drift_flag = False

    # ---- noise ---------------------------------------------------------------------------
    def _noise_sample(self, ds: _Dev, t: int, vals: dict, out: list) -> None:
        n: _Noise = ds.state
        laeq = vals.get("laeq")
        if laeq is None:
            return
        lt = self._tenant(ds.tenant).lt
        tm = t - 150_000  # middle of the 5-minute interval that ended at t
        how = lt.hour_of_week(tm)
        hour = how % 24
        ev = n.base.update(
            {"t": t, "how": how, "laeq": laeq, "l90": vals.get("l90"), "lamax": vals.get("lamax")}
        )
        if ev == "start":
            res = n.base.last
            parts = ", ".join(
                f"{m.upper()} +{v['residual_db']:.0f} dB" for m, v in res.items() if v["residual_db"] > 3
            )
            kind = (
                "steady (music-like: the background level L90 rose)"
                if res.get("l90", {}).get("residual_db", 0) >= 8
                else (
                    "impulsive (LAmax up: works or banging)"
                    if res.get("lamax", {}).get("residual_db", 0) >= 15
                    else "louder than usual"
                )
            )
            expl = (
                f"Unusual noise at {ds.device_id} ({ds.asset.get('site_type', 'site')}): {parts} over 15 "
                "minutes "
                f"against this site's usual level for {_how_txt(how)}; the sound is {kind}."
            )
            out.append(
                self._find(
                    "noise_unusual",
                    "medium",
                    ds,
                    t - 15 * MIN_MS,
                    None,
                    expl,
                    {
                        "residuals": res,
                        "hour_of_week": how,
                        "z_on": n.base.z_on * n.base.z_scale,
                        "rule": "15-min mean residual vs hour-of-week baseline",
                    },
                    "Check for a party, works or an alarm; contact the environmental health team "
                    "if it continues.",
                    "noise-baseline",
                    n.base.VERSION,
                )
            )
        ev2 = n.limits.update({"t": t, "hour": hour, "laeq": laeq})
        if ev2 == "start":
            p = n.limits.predict_one()
            over = p["level_db"] - p["limit_db"]
            expl = (
                f"Noise at {ds.device_id} exceeds the {p['period']} limit: LAeq,15min {p['level_db']:.1f} dB "
                f"against {p['limit_db']:.0f} dB (+{over:.1f} dB)."
            )
            out.append(
                self._find(
                    "noise_exceedance",
                    "high" if over >= 10 else "medium",
                    ds,
                    t - 15 * MIN_MS,
                    None,
                    expl,
                    {**p, "rule": "LAeq,15min > configured limit for the period"},
                    "Record the exceedance; the environmental health team decides on action.",
                    "noise-limits",
                    n.limits.VERSION,
                )
            )

    # ---- roads -------------------------------------------------------------------------------
    def _road_event(self, ds: _Dev, t: int, vals: dict, out: list) -> None:
        if "lat" not in vals or "lon" not in vals:
            return
        ten = self._tenant(ds.tenant)
        ev = {
            "t": t,
            "device": ds.device_id,
            "lat": vals["lat"],
            "lon": vals["lon"],
            "peak": vals["bump_g"],
            "dur": vals.get("bump_dur", 0.0),
            "speed": vals.get("speed", 5.0),
        }
        c, new = ten.clusterer.update(ev)
        if c is None or not c.confirmed:
            return
        mh = self.config.road_class_min_hits
        if (
            (new and c.source is None)
            or (c.source is None and c.n >= mh and c.classified_at == 0)
            or (c.source == "classifier" and c.n >= 2 * max(c.classified_at, 1))
        ):
            self._classify_cluster(ds, ten, c, t, out)

    def _classify_cluster(self, ds: _Dev, ten: _Tenant, c, t: int, out: list) -> None:
        feats = c.features()
        c.classified_at = c.n
        if c.source is None:
            reg = ten.register.near(c.lat, c.lon, self.config.register_radius_m)
            if reg:
                c.kind, c.source = reg[0][1], "register"
                ten.road_class.learn_one(feats, c.kind)
                return
        if c.source in ("register", "verdict"):
            return
        if c.n < self.config.road_class_min_hits:
            c.classified_at = 0  # not enough hits to tell a pothole from a casting yet
            return
        probs = ten.road_class.predict_proba_one(feats)
        kind = max(probs, key=probs.get)
        c.kind, c.source = kind, "classifier"
        if c.emitted == "pothole" or (c.emitted and kind != "pothole"):
            return
        np_ = c.norm_peak()
        evidence = {
            "cluster_id": c.id,
            "hits": c.n,
            "passes": n_passes(c),
            "vehicles": len(c.devices),
            "days": n_days(c),
            "p_value_vs_background": c.p_value,
            "background_lambda": round(c.bg_lambda, 3),
            "class_probabilities": {k: round(v, 3) for k, v in probs.items()},
            "features": {k: round(v, 3) for k, v in feats.items()},
            "speed_normalised_peak_ms2": round(np_, 2),
            "register_match": None,
            "rule": "hot spot of independent passes (Poisson) + naive Bayes on event features",
        }
        if kind == "pothole":
            sev = severity_of(np_)
            expl = (
                f"Probable pothole at {c.lat:.5f}, {c.lon:.5f}: {n_passes(c)} separate passes by "
                f"{len(c.devices)} vehicle(s) felt a jolt here (peak {math.exp(feats['log_peak']):.1f} m/s2 "
                "at "
                f"{feats['speed'] * 3.6:.0f} km/h; {np_:.1f} m/s2 scaled to 30 km/h), far more than the road "
                f"around it; no casting or hump is registered here."
            )
            c.emitted = "pothole"
            out.append(
                self._find(
                    "pothole",
                    sev,
                    None,
                    c.t_first,
                    t,
                    expl,
                    evidence,
                    "Send a highways inspector; make safe if severity is high or critical.",
                    "bump-class",
                    ten.road_class.VERSION,
                    entity=c.id,
                    tenant=ds.tenant,
                    lat=c.lat,
                    lon=c.lon,
                )
            )
        elif kind == "other":
            return  # a rough patch (texture hot spot): kept as a cluster, not an alert
        else:
            what = {
                "casting": "an unregistered casting (manhole cover)",
                "speed_hump": "an unregistered speed hump",
                "other": "a rough patch",
            }.get(kind, kind)
            expl = (
                f"A recurring bump at {c.lat:.5f}, {c.lon:.5f} ({n_passes(c)} passes) that looks like "
                f"{what}, "
                f"not a pothole."
            )
            c.emitted = "road_defect_other"
            out.append(
                self._find(
                    "road_defect_other",
                    "low" if kind == "other" else "info",
                    None,
                    c.t_first,
                    t,
                    expl,
                    evidence,
                    "Check it against the asset register; add it or inspect it.",
                    "bump-class",
                    ten.road_class.VERSION,
                    entity=c.id,
                    tenant=ds.tenant,
                    lat=c.lat,
                    lon=c.lon,
                )
            )

    # ---- clock ---------------------------------------------------------------------------------
    def tick(self, now_ms: int) -> list[Finding]:
        """Advance the clock: complete open samples, judge silences, closed round windows, daily models."""
        out = self.flush()
        now = int(now_ms)
        if now > self.now:
            self.now = now
        for ds in self.devices.values():
            self._silence_check(ds, now, out)
        self._judge_due(now, out)
        for ten in self.tenants.values():
            if ten.air:
                self._air_regional(ten, now, out)
            self._air_daily(ten, now, out)
            if now - ten.last_prune > DAY_MS:
                ten.last_prune = now
                ten.clusterer.prune(now)
        return out

    # ---- feedback --------------------------------------------------------------------------------
    def feedback(self, alert_kind: str, entity: str, verdict: bool, tenant: str | None = None) -> list[dict]:
        """Operator verdict (``verdict`` True = true positive).

        Adapts thresholds / baselines; returns the changes (also kept in ``audit``)."""
        changes: list[dict] = []

        def ch(param: str, old, new, target: str) -> None:
            changes.append(
                {
                    "alert_kind": alert_kind,
                    "entity": entity,
                    "target": target,
                    "parameter": param,
                    "old": old,
                    "new": new,
                    "verdict": "true_positive" if verdict else "false_positive",
                }
            )

        tenants = [self.tenants[tenant]] if tenant in self.tenants else list(self.tenants.values())
        ds = None
        for ten in tenants:
            key = ten.bins.get(entity)
            if key is None:
                for k in ((ten.name, entity),):
                    if k in self.devices:
                        key = k
            if key is not None:
                ds = self.devices.get(key)
                break
        if alert_kind in ("missed_collection", "not_put_out", "not_put_out_2") and ds is not None:
            ten = self._tenant(ds.tenant)
            b = ds.state
            j = ten.judge
            if not verdict:
                old = j.bias
                # a wrong "missed" means the bin was not out (and vice versa): nudge the decision
                j.bias = round(old + (-0.5 if alert_kind == "missed_collection" else 0.5), 3)
                ch("bias", old, j.bias, "CollectionJudge")
                if alert_kind == "not_put_out_2":
                    old = b.welfare_rounds
                    b.welfare_rounds = old + 1
                    ch("welfare_rounds", old, b.welfare_rounds, f"bin {b.asset_id}")
                if alert_kind in ("not_put_out", "not_put_out_2"):
                    old = list(b.reliability)
                    b.reliability[1] += 2.0  # motions are missed more often than assumed for this device
                    ch("motion_reliability", old, list(b.reliability), f"bin {b.asset_id}")
        elif alert_kind == "fire_risk" and ds is not None and not verdict:
            f = ds.state.fire
            old = f.abs_c
            f.abs_c = min(old + 5.0, 90.0)
            f.jump_c += 5.0
            ch("abs_c", old, f.abs_c, f"bin {ds.entity}")
        elif alert_kind in ("lid_open", "knocked_over") and ds is not None and not verdict:
            tc = ds.state.tilt
            name = "lid_min" if alert_kind == "lid_open" else "knock_min"
            old = getattr(tc, name)
            setattr(tc, name, old + 5.0)
            ch(name, old, old + 5.0, f"bin {ds.entity}")
        elif alert_kind == "sensor_stuck" and ds is not None and not verdict:
            fm = ds.state.faults
            old = fm.stuck_n
            fm.stuck_n = old + 4
            ch("stuck_n", old, fm.stuck_n, f"bin {ds.entity}")
        elif alert_kind in ("sensor_noisy", "impossible_jump") and ds is not None and not verdict:
            fm = ds.state.faults
            if alert_kind == "sensor_noisy":
                old = fm.noise_m
                fm.noise_m = round(old * 1.25, 4)
                ch("noise_m", old, fm.noise_m, f"bin {ds.entity}")
            else:
                old = fm.spikes_per_day
                fm.spikes_per_day = old + 2
                ch("spikes_per_day", old, fm.spikes_per_day, f"bin {ds.entity}")
        elif alert_kind == "overflow_forecast" and ds is not None and not verdict:
            b = ds.state
            old = b.overflow_extra
            b.overflow_extra = round(min(old + 0.05, 0.3), 3)
            ch("overflow_margin", old, b.overflow_extra, f"bin {b.asset_id}")
        elif alert_kind == "device_silent" and ds is not None and not verdict:
            sm = ds.silence
            old = sm.grace_scale
            sm.grace_scale = round(old * 1.5, 3)
            ch("grace_scale", old, sm.grace_scale, f"device {ds.device_id}")
        elif alert_kind == "battery_low" and ds is not None and not verdict:
            bm = ds.battery
            old = bm.threshold()
            bm.low_v = round(old - 0.05, 3)
            ch("low_v", old, bm.low_v, f"device {ds.device_id}")
        elif alert_kind == "anomaly" and ds is not None and not verdict:
            for m in ds.scorers:
                old = ds.cool.get(("thr", m), 1.0)
                ds.cool[("thr", m)] = round(old * 1.25, 3)
                ch(f"threshold_scale[{m}]", old, ds.cool[("thr", m)], f"device {ds.device_id}")
        elif alert_kind == "pm_episode" and not verdict:
            if ds is not None and isinstance(ds.state, _Air):
                e = ds.state.local
                old = e.scale
                e.scale = round(old * 1.1, 3)
                ch("local_episode_scale", old, e.scale, f"device {ds.device_id}")
            else:
                for ten in tenants:
                    if ten.name == entity:
                        e = ten.regional
                        old = e.scale
                        e.scale = round(old * 1.1, 3)
                        ch("regional_episode_scale", old, e.scale, f"tenant {ten.name}")
        elif alert_kind in ("air_sensor_drift", "air_sensor_failure") and ds is not None and not verdict:
            a = ds.state
            if alert_kind == "air_sensor_drift":
                old = a.drift.mu
                a.drift.rebaseline()
                ch("baseline_log_ratio", old, a.drift.mu, f"device {ds.device_id}")
            else:
                old = a.failure.min_spikes
                a.failure.min_spikes = old + 1
                ch("min_spikes", old, a.failure.min_spikes, f"device {ds.device_id}")
        elif alert_kind == "noise_unusual" and ds is not None and not verdict:
            nb = ds.state.base
            old = nb.z_scale
            nb.z_scale = round(old + 0.15, 3)
            ch("z_scale", old, nb.z_scale, f"device {ds.device_id}")
        elif alert_kind == "noise_exceedance" and ds is not None and not verdict:
            nl = ds.state.limits
            old = nl.margin_db
            nl.margin_db = old + 1.0
            ch("margin_db", old, nl.margin_db, f"device {ds.device_id}")
        elif alert_kind in ("pothole", "road_defect_other"):
            for ten in tenants:
                c = ten.clusterer.clusters.get(entity)
                if c is None:
                    continue
                label = (
                    ("pothole" if alert_kind == "pothole" else (c.kind or "other"))
                    if verdict
                    else ("other" if alert_kind == "pothole" else "pothole")
                )
                old = c.kind
                ten.road_class.learn_one(c.features(), label)
                c.kind, c.source = label, "verdict"
                ch("cluster_class", old, label, f"cluster {c.id} (classifier learned one example)")
        if not changes:
            changes.append(
                {
                    "alert_kind": alert_kind,
                    "entity": entity,
                    "target": None,
                    "parameter": None,
                    "old": None,
                    "new": None,
                    "verdict": "true_positive" if verdict else "false_positive",
                    "note": "recorded; nothing to adapt",
                }
            )
        self.audit.extend(changes)
        return changes


def _r(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def _iso(ms: int | None) -> str:
    if ms is None:
        return "?"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _how_txt(how: int) -> str:
    return f"{('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')[how // 24]} {how % 24:02d}:00"
