"""``streetsense ota …``: keys, bundles, verification, rollouts (Typer app ``ota_app``).

Mounted by the main CLI with ``app.add_typer(ota_app, name="ota")``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

ota_app = typer.Typer(help="Over-the-air firmware updates: council key, signed bundles, staged rollouts.",
                      no_args_is_help=True)
rollout_app = typer.Typer(help="Staged rollouts (waves, halt on failures).", no_args_is_help=True)
ota_app.add_typer(rollout_app, name="rollout")

DbOpt = Annotated[Optional[str], typer.Option("--database-url", envvar=["DATABASE_URL", "STREETSENSE_DATABASE_URL"],
                                              help="PostgreSQL URL", show_default=False)]
MqttOpt = Annotated[Optional[str], typer.Option("--mqtt-url", envvar=["MQTT_URL", "STREETSENSE_MQTT_URL"],
                                                help="publish the notices (retained, on cmd) to this broker",
                                                show_default=False)]


def _db(url: str | None) -> str:
    if not url:
        from streetsense.settings import get_settings

        url = get_settings().database_url
    if not url:
        raise typer.BadParameter("no database: --database-url or DATABASE_URL")
    return url


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


@ota_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(help="private key file (created 0600)")] = Path("ota-key.pem"),
           force: Annotated[bool, typer.Option(help="replace an existing key")] = False) -> None:
    """Create the council's Ed25519 signing key and KEY.pub (the line nodes trust, /ota.pub)."""
    from streetsense.ota import keys as K

    try:
        pub = K.generate(out, overwrite=force)
    except K.KeyFileError as e:
        _fail(str(e))
    typer.echo(json.dumps({"private": str(out), "public": str(K.pub_path(out)), "key_id": K.key_id(pub),
                           "public_hex": pub.hex()}))


@ota_app.command("bundle")
def bundle_cmd(board: Annotated[str, typer.Option(help="board profile: esp32, picow, pico2w")],
               version: Annotated[str, typer.Option(help="firmware version (becomes ss.VERSION)")],
               key: Annotated[Path, typer.Option(help="council private key")] = Path("ota-key.pem"),
               out: Annotated[Optional[Path], typer.Option(help="bundle directory")] = None,
               image: Annotated[Optional[Path], typer.Option(help="ESP32: MicroPython OTA app image (.bin)")] = None,
               arch: Annotated[Optional[str], typer.Option(help="override the board's -march ('bytecode')")] = None,
               json_out: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """Compile the firmware for BOARD and write it as a signed bundle."""
    from streetsense.firmware.build import BuildError
    from streetsense.ota import bundle as B
    from streetsense.ota import keys as K

    out = out or Path("build") / "ota" / board / version
    try:
        b = B.build_bundle(board, version, K.load_private(key), out, arch=arch,
                           image=image.read_bytes() if image else None)
    except (K.KeyFileError, B.BundleError, BuildError, OSError) as e:
        _fail(str(e))
    info = {"dir": str(b.path), "board": b.board, "version": b.version, "files": len(b.manifest["files"]),
            "bytes": b.total_bytes, "manifest_bytes": len(b.manifest_bytes), "manifest_sha256": b.sha256,
            "key_id": b.key_id, "image": "image" in b.manifest}
    if json_out:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"{b.board} {b.version}: {info['files']} files, {info['bytes']} bytes -> {b.path}")
    typer.echo(f"  manifest sha256 {b.sha256}  signed by {b.key_id}")


@ota_app.command("verify")
def verify_cmd(bundle: Annotated[Path, typer.Argument(help="bundle directory")],
               pub: Annotated[str, typer.Option(help=".pub file, private key file or hex")] = "ota-key.pub") -> None:
    """Check a bundle's signature and every file against its manifest."""
    from streetsense.ota import keys as K
    from streetsense.ota.verify import VerifyError, verify_bundle

    try:
        b = verify_bundle(bundle, K.load_public(pub))
    except (VerifyError, K.KeyFileError) as e:
        _fail(str(e))
    typer.echo(json.dumps({"ok": True, "board": b.board, "version": b.version, "files": len(b.manifest["files"]),
                           "manifest_sha256": b.sha256, "key_id": b.key_id}))


def _publish(db: str, rid: int, mqtt_url: str | None) -> int | None:
    if not mqtt_url:
        return None
    import psycopg

    from streetsense.ota.service import publish_notices
    from streetsense.ota.store import OtaStore

    with psycopg.connect(db) as conn:
        return publish_notices(OtaStore(conn), rid, mqtt_url)


def _with_store(db: str, f):
    import psycopg

    from streetsense.ota.rollout import RolloutError
    from streetsense.ota.store import OtaStore, StoreError

    with psycopg.connect(db) as conn:
        try:
            return f(OtaStore(conn))
        except (StoreError, RolloutError) as e:
            _fail(str(e))


@rollout_app.command("start")
def rollout_start(tenant: Annotated[str, typer.Option()],
                  bundle: Annotated[Path, typer.Option(help="bundle directory (as built by `ota bundle`)")],
                  url: Annotated[str, typer.Option(help="http:// URL the bundle directory is served at")],
                  pub: Annotated[str, typer.Option(help="council public key the bundle must verify with")] = "ota-key.pub",
                  wave: Annotated[Optional[list[str]], typer.Option(
                      help="PERCENT[:GROUP,...], cumulative, repeat per wave (default 1 10 50 100)")] = None,
                  max_failure_rate: Annotated[float, typer.Option(help="halt above this failed share")] = 0.10,
                  min_reports: Annotated[int, typer.Option(help="results needed before the rate counts")] = 5,
                  advance_at: Annotated[float, typer.Option(help="share of a wave done before the next opens")] = 0.9,
                  salt: Annotated[str, typer.Option(help="assignment salt (default tenant:board:version)")] = "",
                  db: DbOpt = None, mqtt_url: MqttOpt = None) -> None:
    """Verify and record the release, assign devices to waves, open the first wave."""
    from streetsense.ota import keys as K
    from streetsense.ota import rollout as R
    from streetsense.ota.verify import VerifyError, verify_bundle

    db = _db(db)
    try:
        keys = K.load_public(pub)
        b = verify_bundle(bundle, keys)
        plan = R.Plan(tuple(R.Wave.parse(w) for w in (wave or ["1", "10", "50", "100"])), max_failure_rate,
                      min_reports, advance_at, salt)
    except (VerifyError, K.KeyFileError, R.RolloutError) as e:
        _fail(str(e))

    def go(store):
        rel = store.add_release(tenant, b, url, keys)
        rid = store.start(rel, plan, created_by=os.environ.get("USER"))
        return rid, store.status(rid)
    rid, status = _with_store(db, go)
    status["published"] = _publish(db, rid, mqtt_url)
    typer.echo(json.dumps(status))


@rollout_app.command("status")
def rollout_status(rollout_id: int, db: DbOpt = None) -> None:
    """Per-wave counts, failure rates and failed devices (JSON)."""
    typer.echo(json.dumps(_with_store(_db(db), lambda s: s.status(rollout_id)), indent=1))


@rollout_app.command("list")
def rollout_list(tenant: Annotated[Optional[str], typer.Option()] = None, db: DbOpt = None) -> None:
    """Every rollout (JSON lines)."""
    for r in _with_store(_db(db), lambda s: s.rollouts(tenant)):
        typer.echo(json.dumps(r))


def _transition(rollout_id: int, db: str | None, mqtt_url: str | None, f) -> None:
    db = _db(db)
    st = _with_store(db, f)
    typer.echo(json.dumps({"id": rollout_id, "status": st.status, "wave": st.wave, "reason": st.reason,
                           "published": _publish(db, rollout_id, mqtt_url)}))


@rollout_app.command("halt")
def rollout_halt(rollout_id: int, reason: Annotated[str, typer.Option()] = "halted by an operator",
                 db: DbOpt = None, mqtt_url: MqttOpt = None) -> None:
    """Stop opening waves and withdraw the notice from devices that have not started."""
    _transition(rollout_id, db, mqtt_url, lambda s: s.halt(rollout_id, reason))


@rollout_app.command("resume")
def rollout_resume(rollout_id: int, db: DbOpt = None, mqtt_url: MqttOpt = None) -> None:
    """Continue a halted rollout; the failures so far are excused."""
    _transition(rollout_id, db, mqtt_url, lambda s: s.resume(rollout_id))


@rollout_app.command("abort")
def rollout_abort(rollout_id: int, reason: Annotated[str, typer.Option()] = "aborted by an operator",
                  db: DbOpt = None, mqtt_url: MqttOpt = None) -> None:
    """End a rollout for good (updated devices stay updated: roll back with a new rollout)."""
    _transition(rollout_id, db, mqtt_url, lambda s: s.abort(rollout_id, reason))


@rollout_app.command("follow")
def rollout_follow(rollout_id: int, db: DbOpt = None, mqtt_url: MqttOpt = None,
                   until_final: Annotated[bool, typer.Option(help="exit when completed or aborted")] = True) -> None:
    """Consume the nodes' OTA acks, halt / open waves, keep the retained notices current."""
    import signal

    from streetsense.ota.service import follow

    if not mqtt_url:
        raise typer.BadParameter("--mqtt-url (or MQTT_URL) is needed")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    st = follow(_db(db), rollout_id, mqtt_url, stop,
                on_change=lambda s: typer.echo(json.dumps({"status": s.status, "wave": s.wave, "reason": s.reason})),
                until_final=until_final)
    typer.echo(json.dumps({"id": rollout_id, "status": st.status, "wave": st.wave, "reason": st.reason}))
