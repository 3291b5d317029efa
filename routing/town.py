"""The simulated town as planning input: :class:`~routing.plan.BinState` rows from a
simulator fleet (tests, the collection bench and the 2,000-bin timing)."""

from __future__ import annotations

import numpy as np

from routing.plan import BinState

__all__ = ["bin_states"]


def bin_states(fleet, fills: np.ndarray | None = None, rates: np.ndarray | None = None,
               alerts: dict[str, tuple[str, ...]] | None = None, limit: int | None = None) -> list[BinState]:
    """One BinState per bin device of ``fleet`` (fills / rates default to the planning figures)."""
    g = fleet.graph
    out = []
    specs = fleet.by_kind("bin_fill")[:limit]
    for i, d in enumerate(specs):
        a = d.asset
        e = g.edges[a.edge_id]
        out.append(BinState(a.asset_id, a.bin_kind, float(a.capacity_l), d.lat, d.lon, a.edge_id, e.name,
                            e.road_class, None if fills is None else float(fills[i]), 0.0,
                            a.expected_fill_per_day if rates is None else float(rates[i]),
                            tuple(a.round_days), a.frequency_weeks, a.week_parity, a.slot_h, a.household_id,
                            (alerts or {}).get(a.asset_id, ())))
    return out
