"""The output of every model: a :class:`Finding`, explained for a council officer.

Alert storage, de-duplication, consent filtering and the council sinks are
built on this type elsewhere; this module only defines it (plus a few
helpers the models share).  A finding is immutable; ``evidence`` carries the
readings, the learned baseline, the rule or score and threshold, and the model
name and version, so every alert can be audited.

>>> f = make_finding("fire_risk", "critical", tenant="demo-town", entity="hb-000012",
...                  device_id="bin-000012", asset_id="hb-000012", lat=52.95, lon=-1.15,
...                  window_start_ms=1767225600000, explanation="Lid temperature 96 C.",
...                  evidence={"temp_c": 96.0}, suggested_action="Call the fire service.",
...                  model="fire-risk", version="1")
>>> f.kind, f.severity, f.welfare, f.evidence["model"]
('fire_risk', 'critical', False, 'fire-risk')
>>> make_finding("nope", "low", tenant="t", entity="e", window_start_ms=0)
Traceback (most recent call last):
...
ValueError: unknown finding kind 'nope'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Finding", "KINDS", "SEVERITIES", "make_finding", "severity_rank", "finding_to_dict"]

#: Every kind a model may emit (the alert store keys on these).
KINDS = (
    "missed_collection",
    "not_put_out",
    "not_put_out_2",
    "overflow_forecast",
    "fire_risk",
    "lid_open",
    "knocked_over",
    "sensor_stuck",
    "sensor_noisy",
    "impossible_jump",
    "device_silent",
    "battery_low",
    "daqi_band",
    "pm_episode",
    "air_sensor_drift",
    "air_sensor_failure",
    "noise_exceedance",
    "noise_unusual",
    "pothole",
    "road_defect_other",
    "anomaly",
)
#: Ordered from least to most severe.
SEVERITIES = ("info", "low", "medium", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS
    severity: str  # info | low | medium | high | critical
    tenant: str
    entity: str  # asset id for bins, device id for sensors, cluster id for road defects
    device_id: str | None
    asset_id: str | None
    lat: float | None
    lon: float | None
    window_start_ms: int
    window_end_ms: int | None
    explanation: str  # plain language, for a council officer
    evidence: dict  # the readings, the learned baseline, the rule or score, threshold, model name + version
    suggested_action: str
    welfare: bool = False  # True only for not_put_out_2 at a household bin (consent-gated downstream)
    household: str | None = None  # pseudonymous household id when welfare


def severity_rank(s: str) -> int:
    """0 (info) .. 4 (critical).

    >>> severity_rank("high") > severity_rank("low")
    True
    """
    return _RANK[s]


def make_finding(
    kind: str,
    severity: str,
    *,
    tenant: str,
    entity: str,
    window_start_ms: int,
    device_id: str | None = None,
    asset_id: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    window_end_ms: int | None = None,
    explanation: str = "",
    evidence: dict | None = None,
    suggested_action: str = "",
    welfare: bool = False,
    household: str | None = None,
    model: str | None = None,
    version: str | None = None,
) -> Finding:
    """Build a validated :class:`Finding`; ``model``/``version`` are added to the evidence."""
    if kind not in KINDS:
        raise ValueError(f"unknown finding kind {kind!r}")
    if severity not in _RANK:
        raise ValueError(f"unknown severity {severity!r}")
    if welfare and kind != "not_put_out_2":
        raise ValueError("welfare is only set on not_put_out_2 findings")
    ev = dict(evidence or {})
    if model is not None:
        ev["model"] = model
    if version is not None:
        ev["model_version"] = version
    return Finding(
        kind,
        severity,
        tenant,
        entity,
        device_id,
        asset_id,
        lat,
        lon,
        int(window_start_ms),
        None if window_end_ms is None else int(window_end_ms),
        explanation,
        ev,
        suggested_action,
        welfare,
        household if welfare else None,
    )


def finding_to_dict(f: Finding) -> dict:
    """JSON-able dict of a finding.

    >>> d = finding_to_dict(make_finding("anomaly", "low", tenant="t", entity="e", window_start_ms=5))
    >>> d["kind"], d["window_start_ms"], d["welfare"]
    ('anomaly', 5, False)
    """
    return asdict(f)
