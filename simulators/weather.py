"""Town weather shared by every model: air temperature, relative humidity, sun.

A small seeded climate model for a temperate (UK-like) town: a seasonal cycle
(about 4.5 °C in January, 15.5 °C in July, Met Office 1991-2020 England
averages, rounded), day-to-day anomalies as an AR(1) process, a diurnal cycle
peaking mid-afternoon, relative humidity anti-correlated with temperature and
higher on rainy days.  Humidity matters because it inflates low-cost PM
readings (see ``simulators.models.air``).

>>> from simulators.timebase import LocalClock, parse_start, DAY_MS
>>> import numpy as np
>>> t0 = parse_start("2026-07-15")
>>> w = Weather(seed=1, lat=52.95, clock=LocalClock("Europe/London"), start_ms=t0, end_ms=t0 + 2 * DAY_MS)
>>> t = np.array([t0 + 4 * 3600_000, t0 + 14 * 3600_000])     # 05:00 and 15:00 BST
>>> temp, rh = w.temp_c(t), w.rh(t)
>>> bool(temp[1] > temp[0] and rh[1] < rh[0])
True
"""

from __future__ import annotations

import math

import numpy as np

from simulators.rng import substream
from simulators.timebase import DAY_MS, HOUR_MS, LocalClock, sun_times_h

__all__ = ["Weather"]


class Weather:
    def __init__(self, seed: int, lat: float, clock: LocalClock, start_ms: int, end_ms: int,
                 mean_c: float = 10.0, season_amp_c: float = 5.5, anomaly_sd_c: float = 2.5,
                 anomaly_rho: float = 0.7, rain_prob: float = 0.35) -> None:
        self.lat = lat
        self.clock = clock
        rng = substream(seed, "weather")
        self.day0 = clock.local_day(start_ms) - 2
        n = max(1, clock.local_day(end_ms) - self.day0 + 4)
        z = rng.normal(0, 1, (n, 2))
        ta = np.empty(n)
        ha = np.empty(n)
        ta[0], ha[0] = z[0, 0] * anomaly_sd_c, z[0, 1] * 5
        k = math.sqrt(1 - anomaly_rho ** 2)
        for i in range(1, n):
            ta[i] = anomaly_rho * ta[i - 1] + k * anomaly_sd_c * z[i, 0]
            ha[i] = 0.5 * ha[i - 1] + 0.87 * 5 * z[i, 1]
        self.rain = rng.random(n) < rain_prob
        self.cloud = np.clip(np.where(self.rain, 0.85, 0.45) + rng.normal(0, 0.15, n), 0, 1)
        days = self.day0 + np.arange(n)
        doy = ((days + 0.5) % 365.25)          # approx day of year (epoch day 0 = Jan 1)
        season = np.cos(2 * np.pi * (doy - 20) / 365.25)   # +1 mid-January, -1 mid-July
        self.t_mean = mean_c - season_amp_c * season + ta
        self.t_amp = 4.0 - 1.2 * season - 1.5 * self.rain
        self.rh_mean = 80 + 6 * season + ha + 8 * self.rain
        self.doy = doy
        st = [sun_times_h(lat, int(d) + 1) for d in doy]
        self.sunrise_h = np.array([a for a, _ in st])
        self.sunset_h = np.array([b for _, b in st])

    def _day_index(self, t_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = int(t_ms.flat[0]) if t_ms.size else 0
        off = self.clock.offset_s(ref) * 1000
        loc = t_ms + off
        idx = np.clip(loc // DAY_MS - self.day0, 0, len(self.t_mean) - 1).astype(np.int64)
        hour = (loc % DAY_MS) / HOUR_MS
        return idx, hour

    def temp_c(self, t_ms: np.ndarray) -> np.ndarray:
        """Air temperature (°C) at UTC ms times (array)."""
        t_ms = np.asarray(t_ms, dtype=np.int64)
        idx, hour = self._day_index(t_ms)
        return self.t_mean[idx] + self.t_amp[idx] * np.cos(2 * np.pi * (hour - 15.0) / 24.0)

    def rh(self, t_ms: np.ndarray) -> np.ndarray:
        """Relative humidity (%) at UTC ms times."""
        t_ms = np.asarray(t_ms, dtype=np.int64)
        idx, hour = self._day_index(t_ms)
        dt = self.t_amp[idx] * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
        return np.clip(self.rh_mean[idx] - 2.6 * dt, 25.0, 100.0)

    def sun(self, t_ms: np.ndarray) -> np.ndarray:
        """Solar irradiance factor 0..1 (clear-sky shape times cloudiness)."""
        t_ms = np.asarray(t_ms, dtype=np.int64)
        idx, hour = self._day_index(t_ms)
        rise, sset = self.sunrise_h[idx], self.sunset_h[idx]
        # solar times are approximately clock time minus the DST offset
        off_h = (self.clock.offset_s(int(t_ms.flat[0])) / 3600.0) if t_ms.size else 0.0
        h = hour - off_h
        x = np.clip((h - rise) / np.maximum(sset - rise, 1e-3), 0, 1)
        return np.sin(np.pi * x) * (1 - 0.75 * self.cloud[idx])

    def lamps_on(self, t_ms: int) -> bool:
        """Street lights (part-night power for lamppost sensors) between sunset and sunrise."""
        off = self.clock.offset_s(t_ms) * 1000
        loc = t_ms + off
        i = min(max(loc // DAY_MS - self.day0, 0), len(self.sunrise_h) - 1)
        h = (t_ms % DAY_MS) / HOUR_MS                  # solar time ~ UTC here (lon ~ 0)
        return h < self.sunrise_h[i] or h > self.sunset_h[i]
