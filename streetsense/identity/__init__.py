"""Device identity and access control: MQTT credentials (``credentials``),
the Mosquitto password and ACL files generated from the registry
(``mosquitto``), the broker PKI (``pki``) and their command lines (``cli``)."""
