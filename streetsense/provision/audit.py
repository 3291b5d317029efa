"""Who provisioned what, when: the ``audit_log`` rows the provisioning writes.

The registry database's ``audit_log`` is the record (append-only, see
``ingest/schema/0003_identity.sql``).  ``--audit-file`` additionally appends the
same entry as a JSON line on the engineer's machine.  Never any secret: the
details carry the board, kind, asset, place, firmware, self-test summary and
calibration.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def actor(engineer: str | None) -> str:
    """``--engineer`` or the login name ($USER)."""
    a = engineer or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not a:
        raise ValueError("who is provisioning? pass --engineer NAME")
    return a


def provision_details(inputs: Any, facts: dict[str, Any]) -> dict[str, Any]:
    st = facts.get("selftest_result") or {}
    return {
        "board": inputs.board, "kind": inputs.kind, "port": inputs.port, "asset": inputs.asset,
        "lat": inputs.lat, "lon": inputs.lon, "firmware": inputs.firmware,
        "flashed": bool(facts.get("flash")),
        "micropython": (facts.get("micropython") or {}).get("version"),
        "username": (facts.get("credential") or {}).get("username"),
        "selftest": {"ok": st.get("ok"), "failed": st.get("failed"),
                     "checks": {c["name"]: c["status"] for c in st.get("checks", [])}} if st else None,
        "calibration": facts.get("calibration"),
        "label": (facts.get("label") or {}).get("text"),
        "resumed": bool(facts.get("resumed")),
    }


def write_local(path: Path | None, who: str, action: str, tenant: str, subject: str, details: dict) -> None:
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "actor": who, "action": action,
             "tenant": tenant, "subject": subject, "details": details}
    with open(p, "a") as f:
        f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
