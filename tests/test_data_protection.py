"""Household data carries only a keyed pseudonym, everywhere.

A simulated town is stored through the real ingest path
(``dashboards.simdata``), then the council's household list (made-up
residents: names, addresses, UPRNs, phone numbers) is imported with
``streetsense households import``; a welfare consent is granted; the real
alert runner with the real stream models runs over the readings; a route plan
is made; and alerts on a household bin and a street bin are delivered through
the outbox to a real Open311 server and a real webhook receiver.  Then every
table is read whole and searched for what the residents' list held: none of it
may be anywhere.  The consent's recipient (a person the resident named) may be
only where the consent register and its deliveries keep it.  The household
bin's sink bodies carry the pseudonym and no location; the street bin's carry
its location (so the check is known to look at real bodies).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from alerts import store
from alerts.outbox import OutboxConfig, OutboxWorker
from streetsense import pseudonym
from tests.support.open311 import Open311Server
from tests.support.webhook import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
FAST = OutboxConfig(backoff_base_s=0.05, backoff_cap_s=0.3, idle_s=0.05, lease=dt.timedelta(seconds=5),
                    http_timeout_s=3, poll_every=dt.timedelta(0))
HOOK_SECRET = "whsec_" + secrets.token_hex(8)
SURNAMES = ("Vexworth", "Quillfeather", "Marchbanks", "Ottershaw", "Pennyfeather", "Haverstock", "Lindqvist")


def expected_pseudonym(key: bytes, tenant: str, uprn: str) -> str:
    """Independently of streetsense.pseudonym: HMAC-SHA256 over domain, tenant and the UPRN without zeros."""
    msg = b"streetsense/household/v1\0" + tenant.encode() + b"\0uprn:" + str(int(uprn)).encode()
    return "hh-" + base64.b32encode(hmac.new(key, msg, hashlib.sha256).digest()[:15]).decode().lower()


def residents(asset_ids: list[str]) -> list[dict[str, str]]:
    """One made-up household per bin, most with a UPRN (leading zero), some by address only."""
    out = []
    for i, a in enumerate(asset_ids):
        out.append({"uprn": "" if i % 9 == 4 else f"0{100090000000 + 7919 * i}",
                    "address": f"{17 + i} Wrenfield Crescent, Simtown ST{i % 9 + 1} {i % 7 + 2}QX",
                    "resident_name": f"Ottoline {SURNAMES[i % len(SURNAMES)]}-{i}",
                    "phone": f"07700 9{i:05d}", "asset_ids": a})
    return out


def needles(rows: list[dict[str, str]]) -> dict[str, str]:
    """Every piece of the list that must never be stored, as it was given and in folded forms."""
    out: dict[str, str] = {}
    for r in rows:
        if r["uprn"]:
            out[r["uprn"]] = "uprn"
            out[str(int(r["uprn"]))] = "uprn"
        out[r["address"]] = "address"
        out[pseudonym.normalise_address(r["address"])] = "address"
        out[r["address"].split(",")[0]] = "address"                 # "17 Wrenfield Crescent"
        out[r["resident_name"]] = "name"
        out[r["phone"]] = "phone"
    out["Wrenfield"] = "street of the list"
    return out


def table_texts(conn: psycopg.Connection) -> dict[str, str]:
    """Every table and materialized view of the schema, each row as text (partitions through their parent)."""
    rels = conn.execute("""SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')
                             AND NOT c.relispartition ORDER BY 1""").fetchall()
    return {r[0]: "\n".join(t for (t,) in conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
        sql.Identifier(r[0]))) if t) for r in rels}


def find(texts: dict[str, str], what: dict[str, str]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for where, text in texts.items():
        low = text.lower()
        found = sorted({kind + ":" + n for n, kind in what.items() if n.lower() in low})
        if found:
            hits[where] = found
    return hits


def test_pseudonyms_are_keyed_and_stable():
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    p = pseudonym.household_pseudonym(key, "leeds", uprn="0100090001234")
    assert p == expected_pseudonym(key, "leeds", "0100090001234") == pseudonym.household_pseudonym(key, "leeds",
                                                                                                   uprn="100090001234")
    assert re.fullmatch(r"hh-[a-z2-7]{24}", p) and "100090001234" not in p
    assert pseudonym.household_pseudonym(other, "leeds", uprn="100090001234") != p       # another council's key
    assert pseudonym.household_pseudonym(key, "york", uprn="100090001234") != p         # another tenant
    a = pseudonym.household_pseudonym(key, "leeds", address="12 Acacia Avenue, Leeds LS1 1AA")
    assert a == pseudonym.household_pseudonym(key, "leeds", address="12  acacia avenue leeds ls1 1aa")
    assert a != p
    for bad in ("12a", "0", "1" * 13):
        with pytest.raises(pseudonym.PseudonymError):
            pseudonym.household_pseudonym(key, "leeds", uprn=bad)
    with pytest.raises(pseudonym.PseudonymError, match="UPRN or an address"):
        pseudonym.household_pseudonym(key, "leeds")
    with pytest.raises(pseudonym.PseudonymError):
        pseudonym.household_pseudonym(b"short", "leeds", uprn="1")


def test_town_alerts_routes_and_sinks_hold_no_resident_data(tmp_path, db_url):
    from alerts.runner import Runner, RunnerConfig
    from dashboards import simdata
    from routing.plan import PlanParams
    from routing.service import make_plan
    from stream_models.engine import Engine
    from stream_models.findings import make_finding

    town = simdata.load(db_url, days=2, scenario="tiny")
    tenant = town.tenant
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        bins = c.execute("""SELECT asset_id, household, lat, lon FROM assets WHERE tenant = %s AND bin_kind = 'household'
                            ORDER BY asset_id""", (tenant,)).fetchall()
        street = c.execute("""SELECT asset_id, lat, lon FROM assets WHERE tenant = %s AND bin_kind = 'street'
                              ORDER BY asset_id LIMIT 1""", (tenant,)).fetchone()
    assert len(bins) >= 20 and street is not None

    # --- the council's household list, imported by the CLI with the council's key ---
    rows = residents([b["asset_id"] for b in bins])
    listing = tmp_path / "households.csv"
    with open(listing, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["uprn", "address", "resident_name", "phone", "asset_ids"])
        w.writeheader()
        w.writerows(rows)
        w.writerow({"uprn": "", "address": "", "resident_name": "Nobody Atall", "phone": "", "asset_ids": "x"})
    key_hex = secrets.token_hex(32)
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(key_hex + "\n")
    os.chmod(key_file, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREETSENSE_") and not k.endswith("_FILE")}
    env.update(DATABASE_URL=db_url, STREETSENSE_CONFIG="/nonexistent.toml", STREETSENSE_LOG_LEVEL="DEBUG",
               STREETSENSE_PSEUDONYM_KEY_FILE=str(key_file))
    r = subprocess.run([sys.executable, "-c", "from streetsense.cli import app; app()", "households", "import",
                        str(listing), "--tenant", tenant, "--json", "--actor", "officer-7"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert (res["rows"], res["households"], res["assets_updated"]) == (len(rows) + 1, len(rows), len(rows))
    assert res["errors"] == [{"row": len(rows) + 2, "reason": "a household needs a UPRN or an address"}]
    assert res["pseudonyms_changed"] == len(rows)          # the simulator's own pseudonyms were replaced
    key = bytes.fromhex(key_hex)
    with psycopg.connect(db_url) as c:
        got = dict(c.execute("SELECT asset_id, household FROM assets WHERE tenant = %s AND bin_kind = 'household'",
                             (tenant,)).fetchall())
    for row in rows:
        want = (expected_pseudonym(key, tenant, row["uprn"]) if row["uprn"] else
                pseudonym.household_pseudonym(key, tenant, address=row["address"]))
        assert got[row["asset_ids"]] == want
    hb = bins[0]["asset_id"]
    hh = got[hb]

    # --- a welfare consent (its named recipient is legitimately held by the register) ---
    recipient = {"name": "Rosalind Carerton", "contact": "rosalind.carerton@example.org"}
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        store.grant_consent(c, tenant=tenant, household=hh, recipient_name=recipient["name"],
                            recipient_role="daughter", recipient_contact=recipient["contact"],
                            purpose="tell her if the bin is not put out twice", evidence="form WF-1", actor="officer-7")

    # --- the real runner and models over the stored readings, and a route plan ---
    runner = Runner(db_url, lambda: Engine({"timezone": "UTC"}), RunnerConfig(initial_lookback=None, max_logs=10_000))
    try:
        for _ in range(5):
            if not runner.step().events:
                break
    finally:
        runner.close()
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        make_plan(c, tenant, dt.date.today(), params=PlanParams(time_limit_s=1))
        c.commit()

    # --- deliveries of a household-bin alert and a street-bin alert to real servers ---
    o311, hook = Open311Server().start(), WebhookReceiver(HOOK_SECRET).start()
    worker = OutboxWorker(db_url, FAST)
    try:
        with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
            store.add_sink(c, tenant, "council-311", "open311", {"base_url": o311.base_url, "api_key": o311.api_key,
                                                                  "service_code": "GENERAL"})
            store.add_sink(c, tenant, "ops-hook", "webhook", {"url": hook.url + "/hook", "secret": HOOK_SECRET})
            for s in ("council-311", "ops-hook"):
                store.add_route(c, tenant, s, kinds=["missed_collection"])
            t0 = int(time.time() * 1000) - 3_600_000
            ids = {}
            for asset, lat, lon in ((hb, bins[0]["lat"], bins[0]["lon"]), (street["asset_id"], street["lat"],
                                                                           street["lon"])):
                f = make_finding("missed_collection", "medium", tenant=tenant, entity=asset, asset_id=asset,
                                 lat=lat, lon=lon, window_start_ms=t0, explanation=f"Bin {asset} was not emptied.",
                                 evidence={"fill": [0.9, 0.92]}, suggested_action="Send the crew back.",
                                 model="collection", version="1")
                ids[asset] = store.upsert_finding(c, f).alert_id

            def delivered() -> bool:
                n = c.execute("""SELECT count(*) AS n FROM alert_deliveries WHERE alert_id = ANY(%s)
                                 AND status = 'delivered'""", (list(ids.values()),)).fetchone()["n"]
                return n == 4
            deadline = time.monotonic() + 30
            while not delivered():
                assert time.monotonic() < deadline, "outbox did not deliver"
                worker.run_once()
                time.sleep(0.05)
            hh_alert = {k: v for k, v in store.get_alert(c, ids[hb]).items()}
        assert hh_alert["lat"] is not None            # operators see where the bin is; the sinks do not
        by_alert = {e["alert_id"]: e for e in hook.events}
        hh_body, street_body = by_alert[ids[hb]], by_alert[ids[street["asset_id"]]]
        assert hh_body["household"] == hh
        assert not {"lat", "lon", "asset_id", "entity"} & set(hh_body)
        assert (street_body["lat"], street_body["asset_id"]) == (street["lat"], street["asset_id"])
        forms = {int(req["attributes"]["streetsense_alert"]): req["form"] for req in o311.requests.values()}
        assert forms[ids[hb]]["address_id"] == hh and "lat" not in forms[ids[hb]] and "long" not in forms[ids[hb]]
        assert forms[ids[street["asset_id"]]]["lat"] == f"{street['lat']:.6f}"
        sent = {"webhook": json.dumps(hook.events), "open311": json.dumps(list(o311.requests.values()))}
        for coord in (bins[0]["lat"], bins[0]["lon"]):
            assert f"{coord:.6f}" not in sent["open311"] and str(coord) not in json.dumps(hh_body)
    finally:
        worker.close()
        o311.stop()
        hook.stop()

    # --- nothing from the household list anywhere ---
    with psycopg.connect(db_url) as c:
        texts = table_texts(c)
    assert {"assets", "readings", "alerts", "alert_deliveries", "consents", "audit_log", "route_plans"} <= set(texts)
    assert hh in texts["assets"] and hh in texts["consents"] and hh in texts["alert_deliveries"]    # it is looked at
    leaks = find({**texts, **sent, "cli output": r.stdout + r.stderr}, needles(rows))
    assert leaks == {}, leaks
    # the consent's recipient: only in the consent register (and a welfare delivery's recipient, if any)
    where = find(texts, {recipient["name"]: "recipient", recipient["contact"]: "recipient"})
    assert set(where) <= {"consents", "alert_deliveries"} and "consents" in where, where
    assert find(sent, {recipient["name"]: "recipient", recipient["contact"]: "recipient"}) == {}
    # the import was audited with counts only
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        a = c.execute("SELECT actor, details FROM audit_log WHERE action = 'households.import'").fetchone()
    assert a["actor"] == "officer-7" and a["details"]["assets_updated"] == len(rows)


def test_import_refuses_what_it_cannot_place_and_dry_run_changes_nothing(db_url):
    key = secrets.token_bytes(32)
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds'), ('york', 'York')")
        c.execute("""INSERT INTO assets (tenant, asset_id, bin_kind, household) VALUES
                     ('leeds', 'hb-1', 'household', NULL), ('leeds', 'hb-2', NULL, NULL),
                     ('leeds', 'sb-1', 'street', NULL), ('york', 'hb-9', 'household', NULL)""")
        text = ("UPRN,Address,Resident,Asset_IDs\n"
                "100000000001,1 Wrenfield Crescent,Ann Vexworth,hb-1;hb-2\n"
                "100000000002,,Bob Vexworth,sb-1\n"                   # a street bin is no household's
                "100000000003,,Cy Vexworth,hb-9 nope\n"               # york's bin and an unknown id
                "abc,,Di Vexworth,hb-1\n"                              # not a UPRN
                ",3 Wrenfield Crescent,Ed Vexworth,hb-1\n")            # hb-1 claimed by a second household
        rows = list(pseudonym.read_rows(text))
        dry = pseudonym.import_households(c, "leeds", rows, key, actor="t", dry_run=True)
        assert c.execute("SELECT count(household) FROM assets").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM audit_log WHERE action = 'households.import'").fetchone()[0] == 0
        done = pseudonym.import_households(c, "leeds", rows, key, actor="t")
        for r in (dry, done):
            assert (r.rows, r.households, r.assets_updated) == (5, 4, 2)
            assert r.not_household_bins == ["sb-1"] and r.unknown_assets == ["hb-9", "nope"]
            assert [e["row"] for e in r.errors] == [5, 6] and "UPRN" in r.errors[0]["reason"]
            assert "Wrenfield" not in json.dumps(r.to_json()) and "100000000001" not in json.dumps(r.to_json())
        p1 = pseudonym.household_pseudonym(key, "leeds", uprn="100000000001")
        got = c.execute("SELECT asset_id, bin_kind, household FROM assets ORDER BY tenant, asset_id").fetchall()
        assert got == [("hb-1", "household", p1), ("hb-2", "household", p1), ("sb-1", "street", None),
                       ("hb-9", "household", None)]
        again = pseudonym.import_households(c, "leeds", rows, key, actor="t")
        assert (again.assets_updated, again.assets_unchanged) == (0, 2)
    with pytest.raises(pseudonym.PseudonymError, match="asset_ids"):
        list(pseudonym.read_rows("name,address\nAnn,1 Road\n"))
