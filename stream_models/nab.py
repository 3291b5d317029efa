"""Numenta Anomaly Benchmark (NAB) scoring, following the NAB paper and repository.

Lavin & Ahmad (2015), *Evaluating Real-time Anomaly Detection Algorithms -
the Numenta Anomaly Benchmark*, IEEE ICMLA; numenta/NAB ``nab/sweeper.py``
(v1.1 scoring) and ``nab/runner.py`` (normalisation).  Implemented here:

* every record gets a weighted score: inside a labelled window, a detection
  at relative position ``p = -(right - i + 1) / width`` scores
  ``A_TP x sigma(p) / sigma(-1)`` with the scaled sigmoid ``sigma(p) =
  2 / (1 + exp(5 p)) - 1`` (-1 beyond ``p >= 3``); outside, a detection
  scores ``A_FP x sigma(|i - prev_right| / (prev_width - 1))`` after a
  window and ``A_FP x sigma(3) = -A_FP`` before the first one;
* only the first detection in a window counts (the maximum weighted score);
  an undetected window scores ``-A_FN``;
* the first ``min(floor(0.15 n), 0.15 x 5000)`` records of each file are a
  probationary period and are not scored;
* one threshold for the whole corpus, chosen to maximise the total (NAB's
  optimiser step), by an exact sweep over the distinct anomaly scores;
* normalisation ``100 x (raw - null) / (perfect - null)`` with the null
  detector's score (every window missed) and ``perfect = A_TP x number of
  windows`` (runner.normalize).

Profiles: ``standard`` (A_TP = 1, A_FP = 0.11, A_FN = 1), ``reward_low_FP``
(1, 0.22, 1), ``reward_low_FN`` (1, 0.11, 2).  Simplification: windows are
given as record indices (the caller maps NAB's timestamps to rows).

Hand-checked example: 100 records, one window at rows 40..49 (probation 15).

>>> w = [(40, 49)]
>>> def det(*idx):
...     return [1.0 if i in idx else 0.0 for i in range(100)]
>>> round(score_file(det(40), w)["raw"], 4)                 # first row of the window: a full true positive
1.0
>>> round(score_file(det(45), w)["raw"], 4)                 # halfway: sigma(-0.5)/sigma(-1)
0.8598
>>> round(score_file(det(40, 80), w)["raw"], 4)             # plus a false positive far after the window
0.89
>>> round(score_file(det(40, 52), w)["raw"], 4)             # a false positive just after it costs less
0.925
>>> # row 10 is probationary; row 20 is a false positive; the window is missed
>>> round(score_file(det(10, 20), w)["raw"], 4)
-1.11
>>> r = corpus_score([(det(45), w), (det(), [(30, 39)])])       # (0.8598 - 1 + 2) / (2 + 2)
>>> r["null"], r["perfect"], round(r["raw"], 4), round(r["score"], 2)
(-2.0, 2.0, -0.1402, 46.49)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["PROFILES", "scaled_sigmoid", "probation_length", "sweep_points", "score_file", "corpus_score"]

PROFILES = {
    "standard": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0},
    "reward_low_FP": {"tpWeight": 1.0, "fpWeight": 0.22, "fnWeight": 1.0},
    "reward_low_FN": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 2.0},
}


def scaled_sigmoid(pos: float) -> float:
    """NAB's scaled sigmoid (sweeper.scaledSigmoid).

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if pos >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


def probation_length(n: int, pct: float = 0.15) -> float:
    return min(math.floor(pct * n), pct * 5000)


def sweep_points(
    scores: Sequence[float], windows: Sequence[tuple[int, int]], name: str = "f", profile: dict | None = None
) -> list[tuple[float, float, str | None]]:
    """(anomaly score, weighted score, window name or None) for every scored (non-probationary) record."""
    prof = profile or PROFILES["standard"]
    tpw, fpw = prof["tpWeight"], prof["fpWeight"]
    max_tp = scaled_sigmoid(-1.0)
    prob = probation_length(len(scores))
    wins = sorted(windows)
    out = []
    wi = 0
    cur = None
    prev_right = prev_width = None
    for i, s in enumerate(scores):
        if cur is None and wi < len(wins) and i == wins[wi][0]:
            cur = wins[wi]
            wi += 1
        if cur is not None:
            width = cur[1] - cur[0] + 1
            pos = -(cur[1] - i + 1) / width
            ws = scaled_sigmoid(pos) * tpw / max_tp
            wname = f"{name}|{cur[0]}"
        else:
            if prev_right is None:
                pos = 3.0
            else:
                pos = abs(prev_right - i) / float(max(prev_width - 1, 1))
            ws = scaled_sigmoid(pos) * fpw
            wname = None
        if i >= prob:
            out.append((float(s), ws, wname))
        if cur is not None and i == cur[1]:
            prev_right, prev_width = i, cur[1] - cur[0] + 1
            cur = None
    return out


def _sweep(points: list[tuple[float, float, str | None]], window_names: Iterable[str], fnw: float):
    """Exact sweep over thresholds (descending): [(threshold, total score)]."""
    parts = {w: -fnw for w in window_names}
    total = sum(parts.values())
    fp = 0.0
    res = []
    pts = sorted(points, key=lambda p: -p[0])
    i = 0
    n = len(pts)
    res.append((math.inf, total))
    while i < n:
        thr = pts[i][0]
        while i < n and pts[i][0] == thr:
            _, ws, wname = pts[i]
            if wname is None:
                fp += ws
            else:
                old = parts[wname]
                if ws > old:
                    parts[wname] = ws
                    total += ws - old
            i += 1
        res.append((thr, total + fp))
    return res


def score_file(
    scores: Sequence[float],
    windows: Sequence[tuple[int, int]],
    threshold: float = 0.5,
    profile: dict | None = None,
    name: str = "f",
) -> dict:
    """Raw NAB score of one file at a fixed threshold (detection = score >= threshold)."""
    prof = profile or PROFILES["standard"]
    pts = sweep_points(scores, windows, name, prof)
    names = {p[2] for p in pts if p[2] is not None}
    parts = {w: -prof["fnWeight"] for w in names}
    fp = 0.0
    tp = nfp = 0
    for s, ws, wname in pts:
        if s < threshold:
            continue
        if wname is None:
            fp += ws
            nfp += 1
        else:
            tp += 1
            parts[wname] = max(parts[wname], ws)
    detected = sum(1 for w in names if parts[w] > -prof["fnWeight"])
    return {
        "raw": sum(parts.values()) + fp,
        "windows": len(names),
        "detected": detected,
        "fp_records": nfp,
        "tp_records": tp,
    }


def corpus_score(
    files: Sequence[tuple[Sequence[float], Sequence[tuple[int, int]]]],
    profile: str | dict = "standard",
    threshold: float | None = None,
) -> dict:
    """Normalised NAB score of a corpus ``[(scores, windows), ...]``.

    With ``threshold=None`` the threshold is optimised over the corpus (as NAB does).
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    pts: list = []
    names: set = set()
    n_windows = 0
    for k, (scores, windows) in enumerate(files):
        p = sweep_points(scores, windows, f"f{k}", prof)
        pts.extend(p)
        names.update(q[2] for q in p if q[2] is not None)
        n_windows += len(windows)
    null = -prof["fnWeight"] * len(names)
    perfect = prof["tpWeight"] * n_windows
    sweep = _sweep(pts, names, prof["fnWeight"])
    if threshold is None:
        thr, raw = max(sweep, key=lambda r: r[1])
    else:
        cands = [r for r in sweep if r[0] >= threshold]
        thr, raw = cands[-1] if cands else sweep[0]
        thr = threshold
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return {
        "threshold": thr,
        "raw": raw,
        "null": null,
        "perfect": perfect,
        "score": score,
        "windows": n_windows,
        "scored_windows": len(names),
    }
