"""StreetSense: sensor infrastructure for local councils."""

__version__ = "0.1.0"
