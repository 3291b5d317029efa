"""One generic contract over every stream model: learns, predicts/scores, round-trips, has a version.

Every model registers itself in ``stream_models.base.MODELS`` and provides
``_contract_data()``; a StreamModel subclass that is not registered fails
here, so a new model cannot escape the contract.  The module doctests of the
package run here too (``stream_models`` is not in the default testpaths).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import stream_models
from stream_models.base import MODELS, StreamModel
from stream_models.engine import Engine

MODULES = [
    importlib.import_module(f"stream_models.{m.name}") for m in pkgutil.iter_modules(stream_models.__path__)
]


def _all_model_classes() -> set[type]:
    out = set()
    for mod in MODULES:
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, StreamModel) and obj is not StreamModel and obj.__module__ == mod.__name__:
                out.add(obj)
    return out


def test_every_model_is_registered():
    assert _all_model_classes() == set(MODELS.values())
    assert len(MODELS) >= 20


def _answer(m, probe):
    if hasattr(m, "predict_one"):
        return m.predict_one(probe) if probe is not None else m.predict_one()
    return m.score_one(probe)


def _learn(m, x):
    if isinstance(x, tuple):
        m.learn_one(*x)
    else:
        m.learn_one(x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name):
    cls = MODELS[name]
    params, stream, probes = cls._contract_data()
    m = cls(**params)
    # River shape: hyperparameters in __init__, exposed as attributes
    assert set(params) <= set(m._get_params())
    assert isinstance(m.version, str) and "/" in m.version and m.version == cls.VERSION
    assert name in repr(m)
    fresh = [_answer(cls(**params), p) for p in probes]
    for x in stream:
        _learn(m, x)
    before = [_answer(m, p) for p in probes]
    if hasattr(m, "score_one") and hasattr(m, "predict_one") and probes and probes[0] is not None:
        [m.score_one(p) for p in probes]  # scoring does not learn
    blob = m.dumps()
    assert isinstance(blob, bytes)
    m2 = cls.loads(blob)
    assert type(m2) is cls
    assert [_answer(m2, p) for p in probes] == before
    assert [_answer(m, p) for p in probes] == before  # answering twice changes nothing
    # it keeps learning identically after a restart
    for x in stream[: max(1, len(stream) // 4)]:
        _learn(m, x)
        _learn(m2, x)
    assert [_answer(m2, p) for p in probes] == [_answer(m, p) for p in probes]
    # clone: same hyperparameters, nothing learned
    c = m.clone()
    assert c._get_params().keys() == m._get_params().keys()
    assert [_answer(c, p) for p in probes] == fresh
    with pytest.raises((TypeError, ValueError)):
        (StreamModel.loads(b"junk"))


def test_loads_refuses_another_model_type():
    a, b = sorted(MODELS)[:2]
    pa, _, _ = MODELS[a]._contract_data()
    blob = MODELS[a](**pa).dumps()
    with pytest.raises(TypeError):
        MODELS[b].loads(blob)


def test_engine_round_trip_and_version():
    from stream_models.events import DeviceInfo, Status

    T = 1767571200000
    e = Engine({"timezone": "UTC"})
    e.process(DeviceInfo("t", "air-1", "air", 52.95, -1.15, {"site_id": "s1", "site_type": "roadside"}))
    evs = [
        ("t", "air-1", "air", m, T + k * 300_000, v)
        for k in range(300)
        for m, v in (("pm25", 8.0 + k % 5), ("pm10", 11.0), ("rh", 60.0), ("co2", 420.0 + k % 3))
    ]
    e.process_many(evs[:600])
    e2 = Engine.loads(e.dumps())
    assert e2.version == e.version and "engine/" in e.version
    tail = evs[600:] + [Status("t", "air-1", T + 301 * 300_000, "online")]
    a = [(f.kind, f.entity, f.window_start_ms) for f in e.process_many(tail)] + [
        (f.kind, f.entity) for f in e.tick(T + 400 * 300_000)
    ]
    b = [(f.kind, f.entity, f.window_start_ms) for f in e2.process_many(tail)] + [
        (f.kind, f.entity) for f in e2.tick(T + 400 * 300_000)
    ]
    assert a == b


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
def test_module_doctests(mod):
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
