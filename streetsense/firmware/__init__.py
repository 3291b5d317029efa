"""Sensor-node firmware tooling (build, energy)."""
