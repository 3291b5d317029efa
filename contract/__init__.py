"""The StreetSense wire contract (v1).

``contract.v1`` is the one definition of topics, metrics and the byte-exact
SenML encoders; it runs unchanged on MicroPython nodes.  ``contract.decode``
is the backend's strict decoder (CPython).
"""
