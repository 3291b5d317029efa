"""``streetsense device …`` (Typer app ``device_app``) for field engineers.

provision            flash (if needed), install, configure, self-test, register and label one node
list | show          the registry: devices, credential state, audit trail
retire | revoke      take a device out of service (its credential is revoked at once)
rotate-credentials   new MQTT secret (optionally written straight onto the node over USB)

Backends: ``provision`` registers the device through the HTTP API (POST
/devices, PATCH to active) and stores its credential hash and the audit entry
in the registry database (the API has no credential endpoints).  list, show,
retire, revoke and rotate-credentials work on the registry database
(``--database-url`` / ``DATABASE_URL``): one transaction changes the status,
revokes the credential and writes the audit log.  With ``--broker-dir``
(``STREETSENSE_BROKER_DIR``) they regenerate the broker's passwd/acl and reload
it, so a retirement or rotation takes effect at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

device_app = typer.Typer(help="Provision, list, retire and re-key sensor nodes.", no_args_is_help=True)

ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"       # no 0/o, 1/l/i: read off a label
KIND_PREFIX = {"bin_fill": "bin", "air": "air", "noise": "noise", "road": "road"}

DbUrl = Annotated[Optional[str], typer.Option("--database-url", envvar="DATABASE_URL", show_envvar=True,
                                              help="registry database")]
Engineer = Annotated[Optional[str], typer.Option("--engineer", help="who is doing this (default: $USER)")]
BrokerDir = Annotated[Optional[Path], typer.Option("--broker-dir", envvar="STREETSENSE_BROKER_DIR",
                                                   help="regenerate passwd/acl here and reload the broker")]
ReloadCmd = Annotated[Optional[str], typer.Option("--reload-cmd", envvar="STREETSENSE_BROKER_RELOAD",
                                                  help="reload command instead of SIGHUP to DIR/mosquitto.pid")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON")]


def generate_device_id(kind: str, n: int = 6) -> str:
    """``bin-k3x9q2``: the kind and a short random part (about 30 bits)."""
    return KIND_PREFIX[kind] + "-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(n))


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _actor(engineer: str | None) -> str:
    from streetsense.provision.audit import actor

    try:
        return actor(engineer)
    except ValueError as e:
        _fail(str(e))
        raise


def _db(url: str | None) -> str:
    if url:
        return url
    from streetsense.settings import get_settings

    url = get_settings().database_url
    if not url:
        _fail("no registry database: pass --database-url or set DATABASE_URL")
    return url  # type: ignore[return-value]


# --- provision -------------------------------------------------------------------

@device_app.command("provision")
def provision(
    board: Annotated[str, typer.Option(help="esp32 | esp32s3 | picow | pico2w")],
    kind: Annotated[str, typer.Option(help="bin_fill | air | noise | road")],
    port: Annotated[str, typer.Option(help="USB serial port, e.g. /dev/ttyUSB0 or /dev/ttyACM0")],
    tenant: Annotated[str, typer.Option(envvar="STREETSENSE_TENANT", help="council / tenant id")],
    asset: Annotated[Optional[str], typer.Option(help="asset the node is fitted to, e.g. BIN-123")] = None,
    lat: Annotated[Optional[float], typer.Option(min=-90, max=90)] = None,
    lon: Annotated[Optional[float], typer.Option(min=-180, max=180)] = None,
    device_id: Annotated[Optional[str], typer.Option(help="default: kind + short random")] = None,
    wifi_ssid: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_WIFI_SSID")] = None,
    wifi_password: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_WIFI_PASSWORD",
                                                         help="(better from the environment)")] = None,
    broker: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_BROKER",
                                                  help="mqtts://host[:port] the node connects to")] = None,
    ca: Annotated[Optional[Path], typer.Option(help="broker CA certificate (PEM) the node pins")] = None,
    pki_dir: Annotated[Optional[Path], typer.Option(envvar="STREETSENSE_PKI_DIR",
                                                    help="or take ca.crt from here")] = None,
    api_url: Annotated[str, typer.Option(envvar="STREETSENSE_API_URL")] = "http://127.0.0.1:8080",
    api_token: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_API_TOKEN")] = None,
    database_url: DbUrl = None,
    image: Annotated[Optional[Path], typer.Option(help="MicroPython image to flash (.bin ESP32, .uf2 Pico)")] = None,
    flash: Annotated[str, typer.Option(help="auto (only without MicroPython) | always | never")] = "auto",
    uf2_mount: Annotated[Optional[Path], typer.Option(help="Pico BOOTSEL drive (default: look for RPI-RP2)")] = None,
    deps_dir: Annotated[Optional[Path], typer.Option(help="local copy of umqtt/ instead of mip (offline)")] = None,
    ota_pub: Annotated[Optional[Path], typer.Option(help="OTA public key(s) to install as /ota.pub")] = None,
    cal: Annotated[Optional[list[str]], typer.Option("--cal", help="calibration KEY=VALUE (repeat)")] = None,
    cadence: Annotated[Optional[list[str]], typer.Option("--cadence", help="cadence KEY=VALUE")] = None,
    sensor: Annotated[Optional[list[str]], typer.Option("--sensor", help="sensors KEY=VALUE")] = None,
    threshold: Annotated[Optional[list[str]], typer.Option("--threshold", help="thresholds KEY=VALUE")] = None,
    calibrate: Annotated[bool, typer.Option(help="bin_fill: empty-bin distance from the self-test")] = True,
    samples: Annotated[int, typer.Option(min=3, max=31, help="range readings for the calibration median")] = 5,
    selftest_wifi: Annotated[bool, typer.Option(help="self-test joins Wi-Fi and reports RSSI")] = False,
    label_dir: Annotated[Path, typer.Option(help="where the QR label goes")] = Path("labels"),
    label_url: Annotated[Optional[str], typer.Option(help="QR as <url>/devices/<tenant>/<id> instead")] = None,
    broker_dir: BrokerDir = None,
    reload_cmd: ReloadCmd = None,
    engineer: Engineer = None,
    audit_file: Annotated[Optional[Path], typer.Option(help="also append the audit entry here (JSON lines)")] = None,
    mpremote: Annotated[str, typer.Option(envvar="STREETSENSE_MPREMOTE", help="mpremote executable")] = "mpremote",
    esptool: Annotated[str, typer.Option(envvar="STREETSENSE_ESPTOOL", help="esptool executable")] = "esptool",
    show_secret: Annotated[bool, typer.Option(help="print the node's MQTT secret once at the end")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print every step; touch nothing")] = False,
    json_out: JsonOut = False,
) -> None:
    """Provision one node on a USB port: flash if needed, install, configure, self-test, register, label."""
    from contract import v1
    from streetsense.identity.credentials import new_secret
    from streetsense.provision import config as pc
    from streetsense.provision.plan import BOARDS, ProvisionInputs, provision_plan
    from streetsense.provision.runner import Context, ProvisionError, Runner

    who = _actor(engineer)
    if board not in BOARDS:
        _fail(f"--board must be one of {', '.join(BOARDS)}")
    if kind not in KIND_PREFIX:
        _fail(f"--kind must be one of {', '.join(KIND_PREFIX)}")
    if not v1.valid_id(tenant):
        _fail(f"--tenant {tenant!r}: 1-64 of a-z, 0-9, '-'")
    device_id = device_id or generate_device_id(kind)
    if not v1.valid_id(device_id):
        _fail(f"--device-id {device_id!r}: 1-64 of a-z, 0-9, '-', not starting with '-'")
    if not wifi_ssid:
        _fail("no Wi-Fi: --wifi-ssid (or STREETSENSE_WIFI_SSID) and STREETSENSE_WIFI_PASSWORD")
    if not broker:
        _fail("no broker: --broker mqtts://host[:port] (or STREETSENSE_BROKER)")
    try:
        host, bport, tls = pc.parse_broker(broker)  # type: ignore[arg-type]
        settings = {name: pc.parse_settings(v) for name, v in
                    (("calibration", cal), ("cadence", cadence), ("sensors", sensor), ("thresholds", threshold))}
    except ValueError as e:
        _fail(str(e))
        raise
    ca_pem = None
    if tls:
        ca_path = ca or (pki_dir / "ca.crt" if pki_dir else None)
        if ca_path is None:
            _fail("TLS needs the broker CA the node pins: --ca PATH or --pki-dir DIR")
        if not ca_path.is_file():  # type: ignore[union-attr]
            _fail(f"CA certificate {ca_path} not found")
        ca_pem = ca_path.read_bytes()  # type: ignore[union-attr]
        if b"BEGIN CERTIFICATE" not in ca_pem:
            _fail(f"{ca_path} is not a PEM certificate")
    else:
        typer.echo("warning: plain MQTT (mqtt://): the node's secret crosses the network unencrypted", err=True)
    if image is not None:
        if not image.is_file():
            _fail(f"MicroPython image {image} not found")
        want = ".uf2" if board.startswith("pico") else ".bin"
        if image.suffix.lower() != want:
            _fail(f"--image for {board} must be a {want} file, got {image.name}")
    for p, what in ((deps_dir, "--deps-dir"), (ota_pub, "--ota-pub")):
        if p is not None and not p.exists():
            _fail(f"{what} {p} not found")
    db = None if dry_run else _db(database_url)
    workdir = Path("<workdir>") if dry_run else Path(tempfile.mkdtemp(prefix="ss-provision-"))
    secret = new_secret()
    try:
        inputs = ProvisionInputs(
            board=board, kind=kind, port=port, tenant=tenant, device_id=device_id, secret=secret,
            wifi=((wifi_ssid, wifi_password or ""),), broker_host=host, broker_port=bport, tls=tls, ca_pem=ca_pem,
            api_url=api_url, workdir=workdir, label_dir=label_dir, engineer=who, asset=asset, lat=lat, lon=lon,
            image=image.resolve() if image else None, flash=flash, uf2_mount=uf2_mount,
            deps_dir=deps_dir.resolve() if deps_dir else None, ota_pub=ota_pub.resolve() if ota_pub else None,
            calibration=settings["calibration"], cadence=settings["cadence"], sensors=settings["sensors"],
            thresholds=settings["thresholds"], calibrate=calibrate, samples=samples, selftest_wifi=selftest_wifi,
            broker_dir=broker_dir, reload_cmd=reload_cmd, label_url=label_url, mpremote=mpremote, esptool=esptool)
        plan = provision_plan(inputs)
    except (ValueError, pc.ConfigInvalid) as e:
        if not dry_run:
            os.rmdir(workdir)
        _fail(str(e))
        raise
    if dry_run:
        typer.echo(plan.render())
        typer.echo("dry run: nothing was executed, written or registered")
        return
    runner = Runner(plan, Context(api_token=api_token, database_url=db,
                                  echo=(lambda s: typer.echo(s, err=True)) if json_out else typer.echo,
                                  audit_file=audit_file))
    try:
        facts = runner.execute()
    except ProvisionError as e:
        _fail(f"{tenant}/{device_id}: {e}")
    st = facts.get("selftest_result") or {}
    summary = {"tenant": tenant, "device_id": device_id, "kind": kind, "board": board, "asset": asset,
               "status": "active", "username": inputs.username, "flashed": bool(facts.get("flash")),
               "selftest": {c["name"]: c["status"] for c in st.get("checks", [])},
               "calibration": facts.get("calibration"), "label": facts.get("label"), "broker": facts.get("broker"),
               "actor": who}
    if show_secret:
        summary["secret"] = secret
    if json_out:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(f"provisioned {tenant}/{device_id} ({kind}, {board}) for asset {asset or '-'}: active")
    typer.echo(f"  MQTT user {inputs.username}" + (f"  secret {secret}  (shown once)" if show_secret else
                                                   "  (secret written to the node only)"))
    if facts.get("label"):
        typer.echo(f"  label {facts['label']['svg']}  {facts['label']['png']}")
    if not facts.get("broker"):
        typer.echo("  broker files not regenerated here (no --broker-dir): run `streetsense broker sync`")


# --- registry ----------------------------------------------------------------------

def _conn(url: str | None):
    import psycopg
    from psycopg.rows import dict_row

    return psycopg.connect(_db(url), autocommit=True, row_factory=dict_row)


LIST_SQL = """SELECT d.tenant, d.device_id, d.kind, d.board, d.status, d.asset_id, d.firmware, d.last_seen,
                     c.mqtt_username, c.created_at AS credential_since
              FROM devices d LEFT JOIN device_credentials c ON c.device_pk = d.id AND c.revoked_at IS NULL
              WHERE (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
                AND (%(status)s::text IS NULL OR d.status = %(status)s)
              ORDER BY d.tenant, d.device_id LIMIT %(limit)s"""


@device_app.command("list")
def list_devices(tenant: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_TENANT")] = None,
                 status: Annotated[Optional[str], typer.Option(help="provisioned | active | retired | revoked")] = None,
                 limit: int = 1000, database_url: DbUrl = None, json_out: JsonOut = False) -> None:
    """Devices with their credential state (registry database)."""
    with _conn(database_url) as c:
        rows = c.execute(LIST_SQL, {"tenant": tenant, "status": status, "limit": limit}).fetchall()
    if json_out:
        typer.echo(json.dumps(rows, default=str))
        return
    typer.echo(f"{'TENANT':<12} {'DEVICE':<20} {'KIND':<9} {'BOARD':<8} {'STATUS':<12} {'ASSET':<12} CREDENTIAL")
    for r in rows:
        typer.echo(f"{r['tenant']:<12} {r['device_id']:<20} {r['kind']:<9} {r['board']:<8} {r['status']:<12} "
                   f"{r['asset_id'] or '-':<12} {'yes' if r['mqtt_username'] else 'none'}")


@device_app.command("show")
def show_device(tenant: str, device_id: str, database_url: DbUrl = None, json_out: JsonOut = False,
                audit: Annotated[int, typer.Option(help="audit entries to show")] = 20) -> None:
    """One device: registry row, credential history (never secrets), audit trail."""
    from streetsense.identity.credentials import IdentityError, IdentityStore

    with _conn(database_url) as c:
        dev = c.execute("""SELECT tenant, device_id, kind, board, firmware, status, asset_id, lat, lon,
                                  credentials_ref, state, last_seen, next_wake, created_at, updated_at
                           FROM devices WHERE tenant = %s AND device_id = %s""", (tenant, device_id)).fetchone()
    if dev is None:
        _fail(f"no device {tenant}/{device_id}")
    with IdentityStore.connect(_db(database_url)) as store:
        try:
            creds = store.device_credentials(tenant, device_id)
        except IdentityError as e:
            _fail(str(e))
        log = store.audit_entries(tenant=tenant, subject=device_id, limit=audit)
    out = {"device": dev, "credentials": creds, "audit": log}
    if json_out:
        typer.echo(json.dumps(out, default=str))
        return
    for k, v in dev.items():
        typer.echo(f"{k:<16} {v if v is not None else '-'}")
    typer.echo("credentials:")
    for cr in creds:
        state = "revoked " + str(cr["revoked_at"]) if cr["revoked_at"] else "ACTIVE"
        typer.echo(f"  #{cr['id']} {cr['mqtt_username']} issued {cr['created_at']} by {cr['created_by']}: {state}")
    typer.echo("audit:")
    for e in log:
        typer.echo(f"  {e['at']} {e['actor']:<12} {e['action']:<24} {json.dumps(e['details'], default=str)}")


def _status_change(tenant: str, device_id: str, status: str, reason: str | None, engineer: str | None,
                   database_url: str | None, broker_dir: Path | None, reload_cmd: str | None, yes: bool) -> None:
    from streetsense.identity.credentials import IdentityError, IdentityStore

    who = _actor(engineer)
    if not yes:
        if not sys.stdin.isatty():
            _fail("not a terminal: confirm with --yes")
        typer.confirm(f"{status[:-1]} {tenant}/{device_id}? Its MQTT credential is revoked at once", abort=True)
    with IdentityStore.connect(_db(database_url)) as store:
        try:
            res = store.set_device_status(tenant, device_id, status, who, reason=reason)
        except IdentityError as e:
            _fail(str(e))
        note = _sync(store, broker_dir, reload_cmd)
    typer.echo(f"{tenant}/{device_id}: {res['from']} -> {res['to']}, {res['credentials_revoked']} credential(s) "
               f"revoked; {note}")


def _sync(store, broker_dir: Path | None, reload_cmd: str | None) -> str:
    if broker_dir is None:
        return "broker files not regenerated (no --broker-dir): run `streetsense broker sync`"
    from streetsense.identity import mosquitto as m

    res = m.sync(store, broker_dir, reload_command=shlex.split(reload_cmd) if reload_cmd else None)
    if res.reloaded:
        return f"broker files in {broker_dir} regenerated and the broker reloaded"
    return f"broker files in {broker_dir} {'regenerated' if res.changed else 'unchanged'}; broker NOT reloaded"


@device_app.command("retire")
def retire(tenant: str, device_id: str,
           reason: Annotated[Optional[str], typer.Option(help="why (goes into the audit log)")] = None,
           engineer: Engineer = None, database_url: DbUrl = None, broker_dir: BrokerDir = None,
           reload_cmd: ReloadCmd = None, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Retire a device (removed from service; its readings stay attributable)."""
    _status_change(tenant, device_id, "retired", reason, engineer, database_url, broker_dir, reload_cmd, yes)


@device_app.command("revoke")
def revoke(tenant: str, device_id: str,
           reason: Annotated[Optional[str], typer.Option(help="why (lost, stolen, compromised)")] = None,
           engineer: Engineer = None, database_url: DbUrl = None, broker_dir: BrokerDir = None,
           reload_cmd: ReloadCmd = None, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Revoke a device (lost, stolen, compromised): refused by the broker from the next reload."""
    _status_change(tenant, device_id, "revoked", reason, engineer, database_url, broker_dir, reload_cmd, yes)


@device_app.command("rotate-credentials")
def rotate_credentials(tenant: str, device_id: str,
                       port: Annotated[Optional[str], typer.Option(help="write the new secret onto the node "
                                                                             "over USB")] = None,
                       engineer: Engineer = None, database_url: DbUrl = None, broker_dir: BrokerDir = None,
                       reload_cmd: ReloadCmd = None,
                       mpremote: Annotated[str, typer.Option(envvar="STREETSENSE_MPREMOTE")] = "mpremote",
                       dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
                       json_out: JsonOut = False) -> None:
    """New MQTT secret for a device; the old one is revoked.  Without --port the secret is printed
    once and must reach the node by hand before the broker reloads."""
    from streetsense.identity.credentials import IdentityError, IdentityStore, new_secret

    who = _actor(engineer)
    if port is not None:
        from streetsense.provision.plan import RotationInputs, rotation_plan
        from streetsense.provision.runner import Context, ProvisionError, Runner

        db = None if dry_run else _db(database_url)
        workdir = Path("<workdir>") if dry_run else Path(tempfile.mkdtemp(prefix="ss-rotate-"))
        plan = rotation_plan(RotationInputs(tenant, device_id, port, workdir, who, new_secret(), broker_dir,
                                            reload_cmd, mpremote))
        if dry_run:
            typer.echo(plan.render())
            typer.echo("dry run: nothing was executed, written or registered")
            return
        runner = Runner(plan, Context(database_url=db,
                                      echo=(lambda s: typer.echo(s, err=True)) if json_out else typer.echo))
        try:
            runner.execute()
        except ProvisionError as e:
            if runner.facts.get("rotated"):
                # the registry has the new secret: without it the node is locked out at the next reload
                typer.echo(f"the registry already holds the new credential; secret (shown once): "
                           f"{plan.inputs.secret}", err=True)
            _fail(f"{tenant}/{device_id}: {e}")
        note = "written to the node; " + ("broker reloaded" if (runner.facts.get("broker") or {}).get("reloaded")
                                          else "run `streetsense broker sync`" if broker_dir is None else
                                          "broker files regenerated")
        if json_out:
            typer.echo(json.dumps({"username": f"{tenant}.{device_id}", "note": note}))
        else:
            typer.echo(f"{tenant}/{device_id}: credential rotated; {note}")
        return
    if dry_run:
        typer.echo(f"would issue a new credential for {tenant}/{device_id}, revoke the old one"
                   + (f", regenerate {broker_dir} and reload the broker" if broker_dir else ""))
        return
    with IdentityStore.connect(_db(database_url)) as store:
        try:
            issued = store.issue_device_credential(tenant, device_id, who, reason="rotate")
        except IdentityError as e:
            _fail(str(e))
        note = _sync(store, broker_dir, reload_cmd)
    if json_out:
        typer.echo(json.dumps({"username": issued.username, "secret": issued.secret, "replaced": issued.replaced,
                               "note": note}))
        return
    typer.echo(f"username {issued.username}\nsecret   {issued.secret}\n(shown once: only its hash is stored)\n"
               f"{note}\nThe node keeps its old secret until its config.json is updated "
               f"(`streetsense device rotate-credentials {tenant} {device_id} --port ...` does both).")
