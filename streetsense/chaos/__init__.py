"""Fault injection against the real pipeline: ``streetsense chaos``.

The pipeline runs as real processes (:mod:`~streetsense.chaos.cluster`)
under a simulated town published through the gateway
(:mod:`~streetsense.chaos.feed`); faults are injected one after another
(:mod:`~streetsense.chaos.run`, entry point :func:`~streetsense.chaos.run.run_chaos`)
while a sampler watches lag, buffers and memory
(:mod:`~streetsense.chaos.monitor`); at the end the database is compared with
what was really sent, and the council's webhook log with the outbox
(:mod:`~streetsense.chaos.verify`). The backhaul is a cuttable TCP relay
(:mod:`~streetsense.chaos.link`) and the council a signed-webhook receiver
that can go down (:mod:`~streetsense.chaos.council`).

Nothing is imported here: the relay and the feed run as ``python -m
streetsense.chaos.<module>`` processes and should start fast.
"""
