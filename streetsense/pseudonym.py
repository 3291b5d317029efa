"""Household pseudonyms: keyed HMAC-SHA256 of a council's own address identifier.

Household bins carry a pseudonym (``assets.household``), never a name, an
address or a UPRN.  The pseudonym is ``HMAC-SHA256(key, tenant, UPRN)`` (or of
the normalised address when a household has no UPRN) under a key that only the
council holds (a private secret file, ``STREETSENSE_PSEUDONYM_KEY_FILE``):

* the same household always gets the same pseudonym, so a council can find a
  resident's data for a subject-access request from the address alone
  (``streetsense households pseudonym``);
* without the key nobody can go from a pseudonym back to an address, nor test
  a guessed address against it (a plain hash of a UPRN could be reversed by
  trying all of them: there are fewer than 10^12);
* the tenant is inside the MAC, so two councils never share a pseudonym.

``streetsense households import`` reads the council's household list (CSV:
``uprn`` and/or ``address``, and ``asset_ids`` of that household's bins; any
other column such as a resident's name is ignored) and writes only the
pseudonyms onto the bins.  Nothing from the file is stored or logged.

>>> key = bytes(range(32))
>>> household_pseudonym(key, "leeds", uprn="010012345678")
'hh-lzwzm72p7cylb6iibduparyv'
>>> household_pseudonym(key, "leeds", uprn=" 10012345678 ") == household_pseudonym(key, "leeds", uprn="010012345678")
True
>>> household_pseudonym(key, "york", uprn="10012345678") == household_pseudonym(key, "leeds", uprn="10012345678")
False
>>> normalise_address("  12, Acacia   Avenue\\nLEEDS LS1 1AA ")
'12 acacia avenue leeds ls1 1aa'
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import psycopg
import typer
from psycopg.types.json import Jsonb

from streetsense.settings import SecretFileError, read_secret_file

DOMAIN = b"streetsense/household/v1"
MIN_KEY_BYTES = 32
PREFIX = "hh-"


class PseudonymError(ValueError):
    """A key or an identifier that cannot be used."""


def parse_key(text: str) -> bytes:
    """Key bytes from a key file's text: 64+ hex digits, or any text of 32+ bytes.

    >>> len(parse_key("00" * 32)), len(parse_key("x" * 40))
    (32, 40)
    >>> parse_key("short")
    Traceback (most recent call last):
    ...
    streetsense.pseudonym.PseudonymError: the pseudonym key must hold at least 32 bytes (64 hex digits)
    """
    t = text.strip()
    if re.fullmatch(r"(?:[0-9a-fA-F]{2}){32,}", t):
        key = bytes.fromhex(t)
    else:
        key = t.encode()
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymError(f"the pseudonym key must hold at least {MIN_KEY_BYTES} bytes (64 hex digits)")
    return key


def load_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """The council's key: from ``path`` (a private file), else from the settings
    (``STREETSENSE_PSEUDONYM_KEY_FILE`` / ``STREETSENSE_PSEUDONYM_KEY``)."""
    if path is not None:
        return parse_key(read_secret_file(path))
    from streetsense.settings import get_settings

    s = get_settings().pseudonym_key
    if s is None:
        raise PseudonymError("no pseudonym key: set STREETSENSE_PSEUDONYM_KEY_FILE or pass --key-file")
    return parse_key(s.get_secret_value())


def new_key() -> str:
    """A fresh key (256 bits, hex) for ``streetsense households key``."""
    return secrets.token_hex(32)


def normalise_uprn(uprn: str | int) -> str:
    """A UPRN as digits without leading zeros (1 to 12 digits)."""
    s = str(uprn).strip()
    if not s.isascii() or not s.isdigit() or not re.fullmatch(r"[1-9]\d{0,11}", s.lstrip("0")):
        raise PseudonymError("a UPRN is 1 to 12 digits")
    return s.lstrip("0")


def normalise_address(address: str) -> str:
    """Case, punctuation and spacing folded, so that one address written two ways matches."""
    s = unicodedata.normalize("NFKC", address).casefold()
    s = re.sub(r"[^\w]+", " ", s).strip()
    if not s:
        raise PseudonymError("an empty address")
    return s


def household_pseudonym(key: bytes, tenant: str, *, uprn: str | int | None = None, address: str | None = None) -> str:
    """``hh-`` + 24 base32 characters (120 bits of HMAC-SHA256); the UPRN wins over the address."""
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymError(f"the pseudonym key must hold at least {MIN_KEY_BYTES} bytes")
    if uprn not in (None, ""):
        ident = "uprn:" + normalise_uprn(uprn)          # type: ignore[arg-type]
    elif address:
        ident = "address:" + normalise_address(address)
    else:
        raise PseudonymError("a household needs a UPRN or an address")
    mac = hmac.new(key, DOMAIN + b"\0" + tenant.encode() + b"\0" + ident.encode(), hashlib.sha256).digest()
    return PREFIX + base64.b32encode(mac[:15]).decode().lower()


# --- importing a council's household list --------------------------------------------------------

@dataclass
class ImportResult:
    """Counts and asset ids only: never an address, a UPRN or a name."""
    tenant: str
    dry_run: bool
    rows: int = 0
    households: int = 0
    assets_updated: int = 0
    assets_unchanged: int = 0
    pseudonyms_changed: int = 0          # bins that had another pseudonym (re-keyed, or moved)
    unknown_assets: list[str] = field(default_factory=list)
    not_household_bins: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)   # {"row": n, "reason": ...}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ASSET_SPLIT = re.compile(r"[;,\s]+")


def read_rows(text: str) -> Iterator[dict[str, str]]:
    """CSV rows with lower-cased headers (``uprn``, ``address``, ``asset_ids`` or ``asset_id``)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    if not {"asset_ids", "asset_id"} & set(reader.fieldnames) or not {"uprn", "address"} & set(reader.fieldnames):
        raise PseudonymError("the household list needs an 'asset_ids' (or 'asset_id') column and 'uprn' and/or "
                             "'address'")
    yield from reader


def import_households(conn: psycopg.Connection, tenant: str, rows: Iterable[dict[str, str]], key: bytes, *,
                      actor: str, dry_run: bool = False) -> ImportResult:
    """Set ``assets.household`` of each listed bin to its household's pseudonym, in one transaction.

    Only bins of ``tenant`` that are household bins (or not yet classed, which become household bins)
    are touched; street bins and unknown ids are reported by id.  Audited with counts only.
    """
    res = ImportResult(tenant, dry_run)
    wanted: dict[str, str] = {}
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):          # row 1 is the header
        res.rows += 1
        try:
            p = household_pseudonym(key, tenant, uprn=(row.get("uprn") or "").strip() or None,
                                    address=(row.get("address") or "").strip() or None)
        except PseudonymError as e:
            res.errors.append({"row": n, "reason": str(e)})
            continue
        assets = [a for a in _ASSET_SPLIT.split(row.get("asset_ids") or row.get("asset_id") or "") if a]
        if not assets:
            res.errors.append({"row": n, "reason": "no asset ids"})
            continue
        seen.add(p)
        for a in assets:
            if wanted.get(a, p) != p:
                res.errors.append({"row": n, "reason": f"bin {a} is listed for two households"})
                continue
            wanted[a] = p
    res.households = len(seen)
    with conn.transaction():
        conn.execute("SELECT set_config('streetsense.actor', %s, true)", (actor,))
        current = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
            """SELECT asset_id, kind, bin_kind, household FROM assets
               WHERE tenant = %s AND asset_id = ANY(%s) FOR UPDATE""", (tenant, list(wanted)))}
        updates = []
        for a, p in sorted(wanted.items()):
            if a not in current:
                res.unknown_assets.append(a)
                continue
            kind, bin_kind, old = current[a]
            if kind != "bin" or bin_kind == "street":
                res.not_household_bins.append(a)
                continue
            if old == p and bin_kind == "household":
                res.assets_unchanged += 1
                continue
            if old and old != p:
                res.pseudonyms_changed += 1
            updates.append((p, tenant, a))
        res.assets_updated = len(updates)
        if not dry_run:
            with conn.cursor() as cur:
                cur.executemany("UPDATE assets SET household = %s, bin_kind = 'household' "
                                "WHERE tenant = %s AND asset_id = %s", updates)
            conn.execute("""INSERT INTO audit_log (actor, action, tenant, subject, details)
                            VALUES (%s, 'households.import', %s, 'households', %s)""",
                         (actor, tenant, Jsonb({k: v for k, v in res.to_json().items()
                                                if k not in ("tenant", "errors")} | {"errors": len(res.errors)})))
    return res


# --- command line (`streetsense households …`) ----------------------------------------------------

def cli_app() -> typer.Typer:
    """The ``households`` Typer group."""
    import json

    app = typer.Typer(help="A council's household list, as keyed pseudonyms only.", no_args_is_help=True)

    def _key(key_file: Optional[Path]) -> bytes:
        try:
            return load_key(key_file)
        except (PseudonymError, SecretFileError) as e:
            raise typer.BadParameter(str(e)) from None

    @app.command("key")
    def key_cmd(out: Annotated[Path, typer.Argument(help="where to write the new key (0600; must not exist)")]) -> None:
        """Generate a council's pseudonym key into a new private file (keep a backup: it cannot be recovered)."""
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
        print(json.dumps({"key_file": str(out)}))

    @app.command("import")
    def import_cmd(csv_file: Annotated[Path, typer.Argument(help="CSV: uprn and/or address, asset_ids")],
                   tenant: Annotated[str, typer.Option(help="the council")],
                   key_file: Annotated[Optional[Path], typer.Option(help="default: STREETSENSE_PSEUDONYM_KEY_FILE")] = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
                   actor: Annotated[str, typer.Option(help="who is importing (audited)")] = "cli",
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Write each listed bin's household pseudonym; nothing from the file is stored or printed."""
        from streetsense.settings import get_settings

        key = _key(key_file)
        url = get_settings().database_url
        if not url:
            raise typer.BadParameter("DATABASE_URL is not set")
        try:
            rows = list(read_rows(csv_file.read_text(encoding="utf-8-sig")))
        except PseudonymError as e:
            raise typer.BadParameter(str(e)) from None
        with psycopg.connect(url, autocommit=True) as conn:
            res = import_households(conn, tenant, rows, key, actor=actor, dry_run=dry_run)
        out = res.to_json()
        print(json.dumps(out, indent=2) if as_json else
              f"{res.households} households, {res.assets_updated} bins updated, {res.assets_unchanged} unchanged, "
              f"{len(res.unknown_assets)} unknown, {len(res.errors)} rows refused" + (" (dry run)" if dry_run else ""))

    @app.command("pseudonym")
    def pseudonym_cmd(tenant: Annotated[str, typer.Option(help="the council")],
                      uprn: Annotated[Optional[str], typer.Option()] = None,
                      address: Annotated[Optional[str], typer.Option()] = None,
                      key_file: Annotated[Optional[Path], typer.Option()] = None) -> None:
        """One household's pseudonym (e.g. to answer a subject-access request from an address)."""
        try:
            print(household_pseudonym(_key(key_file), tenant, uprn=uprn, address=address))
        except PseudonymError as e:
            raise typer.BadParameter(str(e)) from None

    return app
