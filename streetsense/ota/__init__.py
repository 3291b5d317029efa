"""Over-the-air firmware updates: council keys, signed bundles, staged rollouts.

See ``streetsense/ota/README.md`` for the design (trust, delivery, A/B slots
and rollback on the node) and ``firmware/ss/ota.py`` for the node's side.
"""
