"""Alerts and council workflows: the I/O shell around the pure stream models.

Why a top-level package of its own, rather than part of ``stream_models/``:
the models are pure (events in, findings out, state as bytes) so they can be
tested, replayed and scored without a database or a network. Everything here
needs exactly those: storing and deduplicating alerts, the welfare consent
register, audit, checkpointing engine state, and delivering to council
systems (Open311, signed webhooks, SMTP). Model code must never import any of
it, so it cannot live inside the model package; and it is not ingest either,
which only stores readings.

Modules:

- :mod:`alerts.store`: every SQL statement on alerts, consents, the outbox and
  the audit log; the dedupe/rate-limit/consent rules of :func:`~alerts.store.upsert_finding`.
- :mod:`alerts.sinks`: Open311 GeoReport v2, signed webhooks, email.
- :mod:`alerts.outbox`: the delivery worker (transactional outbox, retries with
  backoff, Open311 status polling).
- :mod:`alerts.runner`: the database-backed model runner (readings and device
  status in, alerts and deliveries out, engine checkpoints).
"""
