"""StreetSense stream models: online models over River that flag problems and explain themselves.

Pure Python (no database, no MQTT).  ``stream_models.engine.Engine`` turns readings, device status,
registry rows, clock ticks, crew reports and operator verdicts into
:class:`stream_models.findings.Finding` s; see ``stream_models/README.md``.
"""

from stream_models.base import PACKAGE_VERSION

__version__ = PACKAGE_VERSION
