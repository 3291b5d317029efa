"""Shared base for every StreetSense stream model: River-shaped, versioned, serialisable.

A model takes its hyperparameters in ``__init__``; ``learn_one`` updates it
with one observation (a dict, as in River); ``predict_one`` and/or
``score_one`` answer without learning.  Every model has a ``VERSION``
string and round-trips through :meth:`StreamModel.dumps` /
:meth:`StreamModel.loads` (pickle, which is also how River objects are
persisted), so a restart never forgets what was learned.

Every concrete model registers itself in :data:`MODELS` and provides
``_contract_data()`` (example hyperparameters, a stream to learn and inputs
to predict) for the one generic contract test.

>>> from stream_models.bins import FireRiskDetector
>>> m = FireRiskDetector(abs_c=58.0)
>>> for c in (8.0, 9.0, 10.0):
...     m.learn_one({"temp": c})
>>> m2 = StreamModel.loads(m.dumps())
>>> m2.score_one({"temp": 20.0}) == m.score_one({"temp": 20.0}), m2.version, m2._get_params()["abs_c"]
(True, 'fire-risk/1', 58.0)
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any, ClassVar

__all__ = ["StreamModel", "MODELS", "PACKAGE_VERSION", "register", "model_from_bytes"]

#: Version of the model package as a whole (the engine state carries it).
PACKAGE_VERSION = "streetsense-models/1.0.0"

#: name -> class of every registered model (filled by :func:`register`).
MODELS: dict[str, type] = {}

_MAGIC = b"SSM1"


def register(cls: type) -> type:
    """Class decorator: add a model to :data:`MODELS`."""
    MODELS[cls.__name__] = cls
    return cls


class StreamModel:
    """Base class: versioning, hyperparameter introspection and persistence."""

    VERSION: ClassVar[str] = "0"

    @property
    def version(self) -> str:
        return self.VERSION

    def _get_params(self) -> dict[str, Any]:
        """Hyperparameters (the ``__init__`` arguments) and their current values."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def clone(self) -> "StreamModel":
        """A fresh, untrained model with the same hyperparameters."""
        return type(self)(**self._get_params())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({params})"

    # ---- persistence ---------------------------------------------------
    def dumps(self) -> bytes:
        """Serialise the whole model (hyperparameters and learned state)."""
        return _MAGIC + pickle.dumps(
            {"cls": type(self).__name__, "version": self.VERSION, "model": self},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, data: bytes) -> "StreamModel":
        """Restore a model written by :meth:`dumps` (refuses another major version)."""
        return model_from_bytes(data, expect=None if cls is StreamModel else cls)

    @classmethod
    def _contract_data(cls) -> tuple[dict, list, list]:  # pragma: no cover - overridden
        """(hyperparameters, observations for learn_one, inputs for predict/score) for the contract test."""
        raise NotImplementedError


def _major(v: str) -> str:
    return v.split("/")[-1].split(".")[0]


def model_from_bytes(data: bytes, expect: type | None = None) -> Any:
    if not data.startswith(_MAGIC):
        raise ValueError("not a StreetSense model blob")
    d = pickle.loads(data[len(_MAGIC) :])
    m = d["model"]
    if expect is not None and not isinstance(m, expect):
        raise TypeError(f"blob holds a {d['cls']}, not a {expect.__name__}")
    if _major(d["version"]) != _major(type(m).VERSION):
        raise ValueError(f"{d['cls']} state version {d['version']} is incompatible with {type(m).VERSION}")
    return m
