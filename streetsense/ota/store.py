"""Rollouts in PostgreSQL (tables from ingest/schema/0004_ota.sql).

The decisions are the pure functions of ``rollout.py``; this module loads
their inputs, stores their results, and serialises concurrent acks with a
row lock on the rollout.  Devices are those of ``devices`` (status
``active``) whose board takes the release's board profile; groups come from
``ota_groups``.  What the node sends on ``ack`` (``{"ota": version, "id":
rollout id, "state": ..., "ok": ..., "fw": running version}``, see
firmware/ss/ota.py) goes to ``record_ack``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from contract import v1
from streetsense.ota import rollout as R
from streetsense.ota.bundle import Bundle
from streetsense.ota.verify import verify_signature

# devices.board values each board profile serves (an image release: exactly its board)
PROFILE_BOARDS = {"esp32": ("esp32", "esp32s3"), "picow": ("picow",), "pico2w": ("pico2w",)}
# node ack state -> device state (a failure that will be retried is "retrying")
ACK_STATES = {"downloading": "downloading", "staged": "staged", "running": "running",
              "rolled_back": "rolled_back", "failed": "failed"}


class StoreError(ValueError):
    pass


@dataclass(frozen=True)
class Release:
    id: int
    tenant: str
    board: str
    version: str
    manifest_sha256: bytes
    signature: bytes
    url: str
    image: bool

    def notice(self, rollout_id: int) -> dict:
        return {"op": "ota", "id": rollout_id, "version": self.version, "board": self.board, "url": self.url,
                "sha256": self.manifest_sha256.hex(), "sig": self.signature.hex()}


class OtaStore:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # --- releases and groups --------------------------------------------------
    def add_release(self, tenant: str, bundle: Bundle, url: str, public_keys: list[bytes]) -> int:
        """Record a bundle (its signature checked against ``public_keys`` first); idempotent."""
        verify_signature(bundle.manifest_bytes, bundle.signature, public_keys)
        if not url.endswith("/"):
            url += "/"
        m = bundle.manifest
        with self.conn.transaction():
            row = self.conn.execute(
                """INSERT INTO firmware_releases (tenant, board, version, manifest, manifest_sha256, signature,
                       key_id, url, files, bytes, image)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (tenant, board, version) DO NOTHING RETURNING id""",
                (tenant, m["board"], m["version"], bundle.manifest_bytes, bytes.fromhex(bundle.sha256),
                 bundle.signature, bundle.key_id, url, len(m["files"]), bundle.total_bytes, "image" in m)).fetchone()
            if row:
                return row[0]
            old = self.conn.execute(
                "SELECT id, manifest_sha256, url FROM firmware_releases WHERE tenant = %s AND board = %s AND version = %s",
                (tenant, m["board"], m["version"])).fetchone()
            if bytes(old[1]) != bytes.fromhex(bundle.sha256):
                raise StoreError(f"{m['board']} {m['version']} is already released with a different manifest")
            if old[2] != url:
                raise StoreError(f"{m['board']} {m['version']} is already released at {old[2]}")
            return old[0]

    def release(self, release_id: int) -> Release:
        r = self.conn.execute(
            """SELECT id, tenant, board, version, manifest_sha256, signature, url, image
               FROM firmware_releases WHERE id = %s""", (release_id,)).fetchone()
        if r is None:
            raise StoreError(f"no release {release_id}")
        return Release(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]), r[6], r[7])

    def set_group(self, tenant: str, name: str, device_ids: Iterable[str]) -> int:
        """Make ``name`` exactly these devices; returns how many."""
        ids = list(device_ids)
        with self.conn.transaction():
            self.conn.execute("DELETE FROM ota_groups WHERE tenant = %s AND name = %s", (tenant, name))
            cur = self.conn.execute(
                """INSERT INTO ota_groups (tenant, name, device_id)
                   SELECT %s, %s, id FROM devices WHERE tenant = %s AND device_id = ANY(%s)""",
                (tenant, name, tenant, ids))
            return cur.rowcount

    # --- rollouts ---------------------------------------------------------------
    def start(self, release_id: int, plan: R.Plan, created_by: str | None = None) -> int:
        """Assign every eligible device to its wave and open the first one."""
        rel = self.release(release_id)
        if not plan.salt:
            plan = R.Plan(plan.waves, plan.max_failure_rate, plan.min_reports, plan.advance_at,
                          f"{rel.tenant}:{rel.board}:{rel.version}")
        boards = (rel.board,) if rel.image else PROFILE_BOARDS[rel.board]
        rows = self.conn.execute(
            """SELECT d.id, d.device_id, coalesce(array_agg(g.name) FILTER (WHERE g.name IS NOT NULL), '{}')
               FROM devices d LEFT JOIN ota_groups g ON g.device_id = d.id AND g.tenant = d.tenant
               WHERE d.tenant = %s AND d.board = ANY(%s) AND d.status = 'active'
               GROUP BY d.id, d.device_id""", (rel.tenant, list(boards))).fetchall()
        ids = {r[1]: r[0] for r in rows}
        assignment = R.assign(plan, {r[1]: tuple(r[2]) for r in rows})
        if not assignment:
            raise StoreError("the plan reaches no device")
        with self.conn.transaction():
            try:
                rid = self.conn.execute(
                    """INSERT INTO ota_rollouts (tenant, release_id, board, plan, created_by)
                       VALUES (%s, %s, %s, %s, %s) RETURNING id""",
                    (rel.tenant, rel.id, rel.board, Jsonb(plan.to_json()), created_by)).fetchone()[0]
            except psycopg.errors.UniqueViolation:
                raise StoreError(f"{rel.tenant} already has a live rollout for {rel.board}") from None
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO ota_device_status (rollout_id, device_id, wave) VALUES (%s, %s, %s)",
                    [(rid, ids[d], w) for d, w in sorted(assignment.items())])
            self._evaluate(rid)
        return rid

    def _load(self, rid: int, lock: bool = False) -> tuple[R.Plan, R.State, dict, dict, dict]:
        row = self.conn.execute(
            "SELECT plan, status, wave, reason FROM ota_rollouts WHERE id = %s" + (" FOR UPDATE" if lock else ""),
            (rid,)).fetchone()
        if row is None:
            raise StoreError(f"no rollout {rid}")
        plan = R.Plan.from_json(row[0])
        rows = self.conn.execute(
            """SELECT d.device_id, s.wave, s.state, s.excused, s.device_id
               FROM ota_device_status s JOIN devices d ON d.id = s.device_id WHERE s.rollout_id = %s""",
            (rid,)).fetchall()
        assignment = {r[0]: r[1] for r in rows}
        states = {r[0]: r[2] for r in rows}
        excused = frozenset(r[0] for r in rows if r[3])
        pk = {r[0]: r[4] for r in rows}
        return plan, R.State(row[1], row[2], row[3], excused), assignment, states, pk

    def _save(self, rid: int, old: R.State, new: R.State, pk: dict) -> None:
        if (new.status, new.wave, new.reason) != (old.status, old.wave, old.reason):
            self.conn.execute("UPDATE ota_rollouts SET status = %s, wave = %s, reason = %s, updated_at = now() "
                              "WHERE id = %s", (new.status, new.wave, new.reason, rid))
        if new.excused != old.excused:
            self.conn.execute("UPDATE ota_device_status SET excused = true WHERE rollout_id = %s AND device_id = ANY(%s)",
                              (rid, [pk[d] for d in new.excused - old.excused]))

    def _evaluate(self, rid: int) -> R.State:
        plan, state, assignment, states, pk = self._load(rid, lock=True)
        new = R.step(plan, state, assignment, states)
        self._save(rid, state, new, pk)
        return new

    def evaluate(self, rid: int) -> R.State:
        with self.conn.transaction():
            return self._evaluate(rid)

    def record_ack(self, tenant: str, device_id: str, ack: dict) -> R.State | None:
        """Apply one OTA ack from a node; returns the rollout's state after it (None: not ours)."""
        if not isinstance(ack, dict) or "ota" not in ack or ack.get("state") not in ACK_STATES:
            return None
        rid = ack.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int):
            return None
        with self.conn.transaction():
            row = self.conn.execute(
                """SELECT s.device_id, s.state, r.status, f.version FROM ota_device_status s
                   JOIN devices d ON d.id = s.device_id
                   JOIN ota_rollouts r ON r.id = s.rollout_id
                   JOIN firmware_releases f ON f.id = r.release_id
                   WHERE s.rollout_id = %s AND d.tenant = %s AND d.device_id = %s FOR UPDATE OF r, s""",
                (rid, tenant, device_id)).fetchone()
            if row is None or row[3] != ack["ota"]:
                return None
            pk, cur = row[0], row[1]
            self.conn.execute("INSERT INTO ota_events (rollout_id, device_id, ack) VALUES (%s, %s, %s)",
                              (rid, pk, Jsonb(ack)))
            state = ACK_STATES[ack["state"]]
            if state == "failed" and not ack.get("final", True):
                state = "retrying"
            if cur in R.FINAL and state not in R.FINAL:
                state = cur                     # a late progress ack does not undo a result
            frm = ack.get("fw") if state in ("downloading", "staged", "retrying") else None
            self.conn.execute(
                """UPDATE ota_device_status SET state = %s, error = %s, tries = greatest(tries, %s),
                       from_version = coalesce(from_version, %s), updated_at = now()
                   WHERE rollout_id = %s AND device_id = %s""",
                (state, ack.get("error") if state in R.BAD or state == "retrying" else None,
                 int(ack.get("tries") or 0), frm, rid, pk))
            return self._evaluate(rid)

    def halt(self, rid: int, reason: str = "halted by an operator") -> R.State:
        with self.conn.transaction():
            plan, state, a, s, pk = self._load(rid, lock=True)
            new = R.halt(state, reason)
            self._save(rid, state, new, pk)
            return new

    def resume(self, rid: int) -> R.State:
        with self.conn.transaction():
            plan, state, a, s, pk = self._load(rid, lock=True)
            new = R.resume(plan, state, a, s)
            self._save(rid, state, new, pk)
            return new

    def abort(self, rid: int, reason: str = "aborted by an operator") -> R.State:
        with self.conn.transaction():
            plan, state, a, s, pk = self._load(rid, lock=True)
            new = R.abort(state, reason)
            self._save(rid, state, new, pk)
            return new

    def status(self, rid: int) -> dict:
        plan, state, assignment, states, _ = self._load(rid)
        r = self.conn.execute(
            """SELECT r.tenant, f.board, f.version, f.id, r.created_at, r.updated_at
               FROM ota_rollouts r JOIN firmware_releases f ON f.id = r.release_id WHERE r.id = %s""",
            (rid,)).fetchone()
        out = {"id": rid, "tenant": r[0], "board": r[1], "version": r[2], "release": r[3],
               "created_at": r[4].isoformat(), "updated_at": r[5].isoformat()}
        out.update(R.summary(plan, state, assignment, states))
        out["failures"] = [{"device": d, "state": s, "error": e} for d, s, e in self.conn.execute(
            """SELECT d.device_id, s.state, s.error FROM ota_device_status s JOIN devices d ON d.id = s.device_id
               WHERE s.rollout_id = %s AND s.state IN ('failed', 'rolled_back') ORDER BY d.device_id""", (rid,))]
        return out

    def rollouts(self, tenant: str | None = None) -> list[dict]:
        return [{"id": r[0], "tenant": r[1], "board": r[2], "version": r[3], "status": r[4], "wave": r[5]}
                for r in self.conn.execute(
                    """SELECT r.id, r.tenant, r.board, f.version, r.status, r.wave FROM ota_rollouts r
                       JOIN firmware_releases f ON f.id = r.release_id
                       WHERE %s::text IS NULL OR r.tenant = %s ORDER BY r.id""", (tenant, tenant))]

    # --- what goes on the cmd topics ------------------------------------------------
    def notices(self, rid: int) -> list[tuple[str, bytes]]:
        """(cmd topic, retained payload) for every device of the rollout: the notice for a
        device that should have it now, b"" (clears the retained message) for the rest.
        Pending devices that get the notice become "notified"."""
        with self.conn.transaction():
            plan, state, assignment, states, pk = self._load(rid, lock=True)
            rel_id, tenant = self.conn.execute("SELECT release_id, tenant FROM ota_rollouts WHERE id = %s",
                                               (rid,)).fetchone()
            payload = json.dumps(self.release(rel_id).notice(rid), sort_keys=True, separators=(",", ":")).encode()
            want = R.targets(state, assignment)
            fresh = [pk[d] for d in want if states.get(d) == "pending"]
            if fresh:
                self.conn.execute(
                    """UPDATE ota_device_status SET state = 'notified', notified_at = now(), updated_at = now()
                       WHERE rollout_id = %s AND device_id = ANY(%s) AND state = 'pending'""", (rid, fresh))
            return [(v1.topic(tenant, d, v1.CMD), payload if d in want else b"") for d in sorted(assignment)]
