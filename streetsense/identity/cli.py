"""``streetsense pki …`` and ``streetsense broker …`` (Typer apps ``pki_app``, ``broker_app``).

pki     init | server-cert | show             the broker CA and server certificate
broker  config | sync                         mosquitto.conf; passwd + acl from the registry
broker  account add | rotate | revoke | list  MQTT service accounts (ingest, gateway, api, observer)

The broker commands read the registry from ``--database-url`` (``DATABASE_URL``).
Secrets are printed once, on stdout, and never stored.
"""

from __future__ import annotations

import grp
import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

pki_app = typer.Typer(help="Broker PKI: CA (pinned by devices) and server certificate (ECDSA P-256).",
                      no_args_is_help=True)
broker_app = typer.Typer(help="Mosquitto config, password and ACL files from the device registry.",
                         no_args_is_help=True)
account_app = typer.Typer(help="MQTT service accounts (ingest, gateway, api, observer).", no_args_is_help=True)
broker_app.add_typer(account_app, name="account")

PkiDir = Annotated[Path, typer.Option("--dir", envvar="STREETSENSE_PKI_DIR", help="PKI directory")]
BrokerDir = Annotated[Path, typer.Option("--dir", envvar="STREETSENSE_BROKER_DIR",
                                         help="directory of mosquitto.conf, passwd, acl")]
DbUrl = Annotated[Optional[str], typer.Option("--database-url", envvar="DATABASE_URL", show_envvar=True,
                                              help="PostgreSQL URL of the registry")]
Engineer = Annotated[Optional[str], typer.Option("--engineer", help="who is doing this (default: $USER)")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON")]


def actor(engineer: str | None) -> str:
    """The person acting: ``--engineer`` or the login name."""
    a = engineer or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not a:
        raise typer.BadParameter("who is doing this? pass --engineer NAME")
    return a


def database_url(url: str | None) -> str:
    if url:
        return url
    from streetsense.settings import get_settings

    url = get_settings().database_url
    if not url:
        raise typer.BadParameter("no registry database: pass --database-url or set DATABASE_URL")
    return url


def fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


# --- pki ---------------------------------------------------------------------

@pki_app.command("init")
def pki_init(directory: PkiDir = Path("pki"),
             common_name: Annotated[str, typer.Option("--cn", help="CA common name")] = "StreetSense broker CA",
             organization: Annotated[Optional[str], typer.Option("--org")] = None,
             days: Annotated[int, typer.Option(help="CA lifetime")] = 20 * 365,
             force: Annotated[bool, typer.Option(help="replace an existing CA (devices pin it!)")] = False) -> None:
    """Create the broker CA (ECDSA P-256): ca.key (0600) and ca.crt (goes onto every node)."""
    from streetsense.identity import pki

    try:
        path = pki.init_ca(directory, common_name=common_name, organization=organization, days=days, force=force)
    except pki.PKIError as e:
        fail(str(e))
    info = pki.describe(path)
    typer.echo(f"CA certificate {path}\n  subject {info.subject}\n  sha256  {info.sha256}\n  until   {info.not_after}")


@pki_app.command("server-cert")
def pki_server_cert(host: Annotated[list[str], typer.Option("--host", help="DNS name or IP of the broker (repeat)")],
                    directory: PkiDir = Path("pki"),
                    days: Annotated[int, typer.Option(help="certificate lifetime")] = 397,
                    group: Annotated[Optional[str], typer.Option(help="group that may read the key")] = None) -> None:
    """Issue the broker's server certificate (SANs from --host) signed by the CA."""
    from streetsense.identity import pki

    try:
        path = pki.server_cert(directory, host, days=days, group=group)
    except pki.PKIError as e:
        fail(str(e))
    info = pki.describe(path)
    typer.echo(f"server certificate {path}\n  SANs  {', '.join(info.sans)}\n  until {info.not_after}")


@pki_app.command("show")
def pki_show(directory: PkiDir = Path("pki"), json_out: JsonOut = False) -> None:
    """Subject, SANs, expiry and fingerprint of the CA and server certificates."""
    from streetsense.identity import pki

    try:
        infos = pki.show(directory)
    except pki.PKIError as e:
        fail(str(e))
    if json_out:
        typer.echo(json.dumps([i.as_dict() for i in infos], indent=1))
        return
    for i in infos:
        typer.echo(f"{i.path}\n  subject  {i.subject}\n  issuer   {i.issuer}\n  key      {i.key}"
                   f"\n  CA       {i.is_ca}\n  valid    {i.not_before} .. {i.not_after} ({i.days_left} days left)"
                   + (f"\n  SANs     {', '.join(i.sans)}" if i.sans else "") + f"\n  sha256   {i.sha256}")


# --- broker -----------------------------------------------------------------

@broker_app.command("config")
def broker_config_cmd(directory: BrokerDir = Path("broker"),
                      pki_dir: Annotated[Path, typer.Option("--pki-dir", envvar="STREETSENSE_PKI_DIR",
                                                            help="PKI directory (server cert, key, CA)")] = Path("pki"),
                      device_port: Annotated[int, typer.Option(help="TLS listener for devices")] = 8883,
                      device_bind: Annotated[str, typer.Option(help="device listener address")] = "0.0.0.0",
                      service_port: Annotated[int, typer.Option(help="listener for ingest/gateway/API (0 = none)")] = 8884,
                      service_bind: Annotated[str, typer.Option(help="service listener address")] = "127.0.0.1",
                      service_tls: Annotated[bool, typer.Option(help="TLS on the service listener")] = True,
                      persistence: Annotated[bool, typer.Option(help="persist sessions and retained messages "
                                                                     "(DIR must be writable by the broker)")] = True,
                      user: Annotated[Optional[str], typer.Option(help="account mosquitto drops to (default: "
                                                                       "its own, 'mosquitto')")] = None,
                      group: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_BROKER_GROUP",
                                                                   help="group that may read passwd, acl and the "
                                                                        "server key (e.g. mosquitto)")] = None) -> None:
    """Write a production mosquitto.conf (no anonymous access, TLS for devices, ACLs) to --dir.

    The server certificate, its key and the CA certificate are copied into DIR/tls, so the
    broker never needs the PKI directory (where the CA key lives).
    """
    from streetsense.identity import mosquitto as m
    from streetsense.identity import pki

    for n in (pki.SERVER_CERT, pki.SERVER_KEY, pki.CA_CERT):
        if not (pki_dir / n).exists():
            fail(f"{pki_dir / n} missing: run `streetsense pki init` and "
                 f"`streetsense pki server-cert --dir {pki_dir} --host ...` first")
    tls = directory / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o750 if group else 0o700)
    if group:
        os.chown(tls, -1, grp.getgrnam(group).gr_gid)
    m.write_private(tls / pki.SERVER_KEY, (pki_dir / pki.SERVER_KEY).read_text(), group=group)
    for n in (pki.SERVER_CERT, pki.CA_CERT):
        m.write_private(tls / n, (pki_dir / n).read_text(), 0o644)
    listeners = [m.Listener(device_port, device_bind, tls=True, devices=True)]
    if service_port:
        listeners.append(m.Listener(service_port, service_bind, tls=service_tls, devices=False))
    try:
        text = m.broker_config(directory, listeners=listeners, certfile=tls / pki.SERVER_CERT,
                               keyfile=tls / pki.SERVER_KEY, cafile=tls / pki.CA_CERT,
                               persistence=persistence, user=user)
    except ValueError as e:
        fail(str(e))
    m.write_private(directory / m.CONF, text, 0o644)
    # the broker writes its pid file and persistence after dropping root: its group may write there
    for sub in ("run", m.DATA):
        (directory / sub).mkdir(exist_ok=True)
        os.chmod(directory / sub, 0o770 if group else 0o700)
        if group:
            os.chown(directory / sub, -1, grp.getgrnam(group).gr_gid)
    for name in (m.PASSWD, m.ACL):
        if not (directory / name).exists():
            m.write_private(directory / name, "", group=group)
    typer.echo(f"wrote {directory / m.CONF}; now `streetsense broker sync --dir {directory}` and start "
               f"`mosquitto -c {directory / m.CONF}`")


@broker_app.command("sync")
def broker_sync(directory: BrokerDir = Path("broker"), db: DbUrl = None,
                reload: Annotated[bool, typer.Option(help="signal the broker when the files changed")] = True,
                pid_file: Annotated[Optional[Path], typer.Option(help="mosquitto pid file (default: DIR/mosquitto.pid)")] = None,
                reload_cmd: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_BROKER_RELOAD",
                                                                  help="reload command instead of SIGHUP, "
                                                                       "e.g. 'systemctl reload mosquitto'")] = None,
                group: Annotated[Optional[str], typer.Option(envvar="STREETSENSE_BROKER_GROUP",
                                                             help="make the files 0640 for this group")] = None,
                json_out: JsonOut = False) -> None:
    """Regenerate passwd and acl from the registry and reload the broker (SIGHUP)."""
    from streetsense.identity import mosquitto as m
    from streetsense.identity.credentials import IdentityStore

    with IdentityStore.connect(database_url(db)) as store:
        res = m.sync(store, directory, reload=reload, pid_file=pid_file,
                     reload_command=shlex.split(reload_cmd) if reload_cmd else None, group=group)
    if json_out:
        typer.echo(json.dumps(res.__dict__))
    else:
        typer.echo(f"{res.devices} device and {res.services} service credentials -> {res.directory} "
                   f"({'changed' if res.changed else 'unchanged'}"
                   f"{', broker reloaded' if res.reloaded else ''})")


def _maybe_sync(store, broker_dir: Path | None, reload_cmd: str | None = None) -> str:
    if broker_dir is None:
        return "broker files not regenerated (no --broker-dir): run `streetsense broker sync`"
    from streetsense.identity import mosquitto as m

    res = m.sync(store, broker_dir, reload_command=shlex.split(reload_cmd) if reload_cmd else None)
    return (f"broker files regenerated in {broker_dir}"
            + (", broker reloaded" if res.reloaded else ", broker NOT reloaded (no pid file): reload it"))


BrokerDirOpt = Annotated[Optional[Path], typer.Option("--broker-dir", envvar="STREETSENSE_BROKER_DIR",
                                                      help="regenerate passwd/acl here and reload the broker")]


@account_app.command("add")
def account_add(name: Annotated[str, typer.Argument(help="account name, stored as svc_<name>")],
                role: Annotated[str, typer.Option(help="ingest | gateway | api | observer")],
                tenant: Annotated[Optional[str], typer.Option(help="tenant (gateway: required)")] = None,
                description: Annotated[Optional[str], typer.Option()] = None,
                db: DbUrl = None, engineer: Engineer = None, broker_dir: BrokerDirOpt = None,
                json_out: JsonOut = False) -> None:
    """Create a service account and print its secret once."""
    from streetsense.identity.credentials import IdentityError, IdentityStore

    with IdentityStore.connect(database_url(db)) as store:
        try:
            issued = store.add_service_account(name, role, actor(engineer), tenant=tenant, description=description)
        except (IdentityError, ValueError) as e:
            fail(str(e))
        note = _maybe_sync(store, broker_dir)
    _print_secret(issued, json_out, note)


@account_app.command("rotate")
def account_rotate(name: str, db: DbUrl = None, engineer: Engineer = None, broker_dir: BrokerDirOpt = None,
                   json_out: JsonOut = False) -> None:
    """New secret for a service account (the old one stops working at the next sync)."""
    from streetsense.identity.credentials import IdentityError, IdentityStore

    with IdentityStore.connect(database_url(db)) as store:
        try:
            issued = store.rotate_service_account(name, actor(engineer))
        except (IdentityError, ValueError) as e:
            fail(str(e))
        note = _maybe_sync(store, broker_dir)
    _print_secret(issued, json_out, note)


@account_app.command("revoke")
def account_revoke(name: str, db: DbUrl = None, engineer: Engineer = None, broker_dir: BrokerDirOpt = None) -> None:
    """Revoke a service account."""
    from streetsense.identity.credentials import IdentityError, IdentityStore

    with IdentityStore.connect(database_url(db)) as store:
        try:
            store.revoke_service_account(name, actor(engineer))
        except (IdentityError, ValueError) as e:
            fail(str(e))
        typer.echo(f"revoked; {_maybe_sync(store, broker_dir)}")


@account_app.command("list")
def account_list(db: DbUrl = None, json_out: JsonOut = False) -> None:
    """Service accounts (never their secrets)."""
    from streetsense.identity.credentials import IdentityStore

    with IdentityStore.connect(database_url(db)) as store:
        rows = store.service_accounts()
    if json_out:
        typer.echo(json.dumps(rows, default=str, indent=1))
        return
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        typer.echo(f"{r['username']:<32} {r['role']:<9} {r['tenant'] or '*':<16} {state}")


def _print_secret(issued, json_out: bool, note: str) -> None:
    if json_out:
        typer.echo(json.dumps({"username": issued.username, "secret": issued.secret, "note": note}))
        return
    typer.echo(f"username {issued.username}\nsecret   {issued.secret}\n"
               "(shown once: it is stored only as a hash)\n" + note)
