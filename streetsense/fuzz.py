"""Coverage-guided fuzzing of every parser that reads bytes from outside:
``streetsense fuzz <target> --runs N --json``.

Targets, each a function of one input that raises :class:`FuzzFailure` (or
any unexpected exception) when a property breaks:

* ``decoder``: the contract decoder (:mod:`contract.decode`). Both paths
  agree (the fast msgspec path and :func:`~contract.decode.decode_careful`);
  nothing but :class:`~contract.decode.PackError` is raised; every rejection,
  of the pack or of one record, carries a documented reason code; every record
  is accounted for.
* ``nmea``: the firmware's NMEA 0183 parser (``firmware/ss/nmea.py``, run under
  CPython) on arbitrary lines, both in an exact-size buffer and in the GPS
  driver's 100-byte line buffer. It returns 0, GGA or RMC and never raises;
  a sentence it accepts has a valid checksum; positions stay in range.
* ``pms5003``: the PMS5003 frame parser on arbitrary bytes at every offset; a
  frame it accepts has the right header, length and checksum.
* ``gateway``: the gateway's input path (topic and payload from the input):
  :func:`gateway.validate.classify_timed` and the rate limit never raise, and
  the central :class:`~ingest.handler.MessageHandler` reaches the same verdict
  on every ``up`` and ``status`` message.

The CLI runs libFuzzer (atheris) in a child process, which keeps going after a
failure (the input is saved to ``--artifacts``) and prints executions,
failures, coverage and executions per second as JSON.

>>> check_pms5003(bytes(64)); check_nmea(b"$GPRMC,1*33"); check_decoder(b"[]"); check_gateway(b"ss/v1/t/d/up\\x00[]")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from contract import v1
from contract.decode import PackError, decode, decode_careful

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

#: every code the decoder may give a whole pack (docs/contract.md)
PACK_CODES = frozenset({"empty", "bad_encoding", "not_a_pack", "too_many_records", "too_large", "bad_base_name",
                        "bad_base_time", "bad_seq", "bad_version"})
#: every code the decoder may give one record
RECORD_CODES = frozenset({"not_a_record", "base_changed", "unsupported_field", "unknown_metric", "wrong_kind",
                          "unit_mismatch", "bad_value", "out_of_range", "bad_time", "impossible_time"})

DEVICE = "bin-0001"
RECEIVED_MS = 1_767_225_600_000


class FuzzFailure(AssertionError):
    """A property of a parser does not hold for this input."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise FuzzFailure(what)


# --- the contract decoder --------------------------------------------------------

def _outcome(fn: Callable[..., object], raw: bytes, kind: str | None) -> tuple:
    try:
        p = fn(raw, device_id=DEVICE, received_ms=RECEIVED_MS, kind=kind)
    except PackError as e:
        _require(e.code in PACK_CODES and bool(e.detail), f"undocumented pack rejection {e.code!r}")
        return ("rejected", e.code)
    return (p.seq, p.times_ms, p.metric_ids, p.values, [(r.index, r.code) for r in p.rejects], p.duplicates)  # type: ignore[attr-defined]


def check_decoder(data: bytes) -> None:
    """Both decoder paths agree on ``data``; only documented rejections."""
    kind = v1.KINDS[data[0] % len(v1.KINDS)] if data and data[0] < 128 else None
    fast = _outcome(decode, data, kind)
    careful = _outcome(decode_careful, data, kind)
    _require(fast == careful, f"fast and careful decoders disagree: {fast!r} != {careful!r}")
    if fast[0] != "rejected":
        for _, code in fast[4]:
            _require(code in RECORD_CODES, f"undocumented record rejection {code!r}")
        _require(all(v == v and abs(v) < 1e10 for v in fast[3]), "a stored value is not finite and in range")


# --- firmware parsers (MicroPython code, run under CPython) --------------------------

_FW: dict[str, ModuleType] = {}


def firmware_module(name: str) -> ModuleType:
    """Import a pure firmware module (``ss.nmea``, ``ss.drivers.pms5003``) under CPython."""
    if name not in _FW:
        import importlib

        extra = [str(FIRMWARE), str(FIRMWARE / "cpython")]
        sys.path[:0] = extra
        try:
            _FW[name] = importlib.import_module(name)
        finally:
            for p in extra:
                sys.path.remove(p)
    return _FW[name]


def check_nmea(data: bytes) -> None:
    """The NMEA parser on one line: no exception, accepted sentences are checksummed and in range."""
    nm = firmware_module("ss.nmea")
    line = data[:100]
    for buf in (bytearray(line), bytearray(line) + bytearray(100 - len(line))):
        p = nm.NMEA()
        r = p.feed(buf, len(line))
        _require(r in (0, nm.GGA, nm.RMC), f"feed returned {r!r}")
        if r:
            n = len(line)
            while n and line[n - 1] in (10, 13):
                n -= 1
            _require(nm.checksum_ok(bytearray(line), n), "a sentence with a bad checksum was accepted")
            _require(p.good == 1 and p.bad == 0, "counters")
            _require(-90_000_000 <= p.lat <= 90_000_000 and -180_000_000 <= p.lon <= 180_000_000, "position range")
            _require(p.speed >= 0 or not p.fix, "negative speed with a fix")
        else:
            _require(p.good + p.bad <= 1, "counters")


def check_pms5003(data: bytes) -> None:
    """The PMS5003 frame parser at every offset: no exception; accepted frames are well formed."""
    pms = firmware_module("ss.drivers.pms5003")
    buf = bytearray(data[:96])
    out = [0, 0, 0]
    for off in range(len(buf) + 1):
        if pms.parse(buf, off, out):
            f = buf[off:off + 32]
            _require(len(f) == 32 and f[0] == 0x42 and f[1] == 0x4D and f[2] == 0 and f[3] == 28, "header")
            _require(sum(f[:30]) & 0xFFFF == f[30] << 8 | f[31], "checksum")
            _require(out == [f[10] << 8 | f[11], f[12] << 8 | f[13], f[14] << 8 | f[15]], "values")


# --- the gateway's input path ---------------------------------------------------------

def check_gateway(data: bytes) -> None:
    """``topic NUL payload``: the gateway never raises and agrees with ingest on ``up`` messages."""
    from gateway.validate import classify_timed
    from ingest.handler import MessageHandler
    from ingest.ratelimit import RateLimiter
    from ingest.registry import DeviceInfo

    raw_topic, _, payload = data.partition(b"\x00")
    topic = raw_topic.decode("utf-8", "replace")
    if not topic.startswith("ss/") and data[:1] != b"\xff":
        topic = "ss/v1/t/" + DEVICE + "/" + topic        # mostly device topics, sometimes anything
    v, newest = classify_timed(topic, payload, RECEIVED_MS)
    _require(v.reason is None or re.match(r"^[a-z_]+: ", v.reason) is not None, f"reason {v.reason!r}")
    _require(v.readings >= 0 and (newest == 0) == (v.readings == 0), "reading count and clock")
    RateLimiter(1, 1).allow(topic, newest, v.readings)
    h = MessageHandler(lambda t, d: DeviceInfo(1, None, "active"))  # type: ignore[arg-type]
    out = h.handle(topic, payload, RECEIVED_MS, mark=v.reason)
    _require(out.quarantine is None or bool(out.quarantine.reason_code and out.quarantine.reason), "no reason")
    if v.channel in (v1.UP, v1.STATUS):
        central = out.quarantine.reason_code if out.quarantine else None
        gateway = v.reason.split(":", 1)[0] if v.reason else None
        _require(central == gateway, f"gateway says {gateway!r}, ingest says {central!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": check_decoder, "nmea": check_nmea, "pms5003": check_pms5003, "gateway": check_gateway}


# --- seeds ----------------------------------------------------------------------------

def _nmea_line(body: bytes) -> bytes:
    x = 0
    for c in body:
        x ^= c
    return b"$" + body + b"*" + b"%02X" % x + b"\r\n"


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from (libFuzzer mutates them)."""
    if target == "decoder":
        recs = [("fill", 625, 0), ("temp", 2150, 1500), ("bat_v", 3612, 0)]
        return [v1.encode_json(DEVICE, 1767225000, 7, recs), v1.encode_cbor(DEVICE, 1767225000, 7, recs)]
    if target == "nmea":
        return [_nmea_line(b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
                _nmea_line(b"GNRMC,083015.250,A,3352.1234567,S,15112.9876543,W,0.00,,010126,,,A")]
    if target == "pms5003":
        words = [11, 17, 21, 11, 17, 21, 1500, 400, 60, 8, 2, 1, 0x9100]
        f = bytearray(b"\x42\x4d\x00\x1c")
        for w in words:
            f += bytes((w >> 8, w & 0xFF))
        s = sum(f)
        return [bytes(f + bytes((s >> 8 & 0xFF, s & 0xFF)))]
    if target == "gateway":
        return [b"ss/v1/t/" + DEVICE.encode() + b"/up\x00" + seeds("decoder")[0],
                b"ss/v1/t/" + DEVICE.encode() + b"/status\x00" + v1.encode_status("online", "0.1.0", 1767225000)]
    raise KeyError(target)


# --- atheris child process --------------------------------------------------------------

def _child(target: str, runs: int, artifacts: str, corpus: str, flags: list[str] | None = None) -> None:
    import atheris

    import gateway.validate
    import ingest.handler
    import ingest.ratelimit

    mods = {"decoder": [decode_module()], "gateway": [decode_module(), gateway.validate, ingest.handler, ingest.ratelimit],
            "nmea": [firmware_module("ss.nmea")], "pms5003": [firmware_module("ss.drivers.pms5003")]}[target]
    for mod in mods:      # coverage feedback for the code under test only (fast start, fast runs)
        _instrument(atheris, mod)
    check = TARGETS[target]
    out = Path(artifacts)

    def one(data: bytes) -> None:
        try:
            check(data)
        except Exception as e:  # noqa: BLE001 - a failure is a finding: save it and keep fuzzing
            name = hashlib.sha1(data).hexdigest()[:16]
            (out / f"{target}-{name}.bin").write_bytes(data)
            (out / f"{target}-{name}.txt").write_text(f"{type(e).__name__}: {e}\n")

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-print_final_stats=1", "-max_len=4096", *(flags or []), corpus],
                  one)
    atheris.Fuzz()


def decode_module() -> ModuleType:
    import contract.decode

    return contract.decode


def _instrument(atheris: ModuleType, mod: ModuleType) -> None:
    for obj in list(vars(mod).values()):
        targets = [obj] if callable(obj) and not isinstance(obj, type) else \
            [m for m in vars(obj).values() if callable(m)] if isinstance(obj, type) else []
        for f in targets:
            if getattr(f, "__module__", None) == mod.__name__ and hasattr(f, "__code__"):
                atheris.instrument_func(f)


def run(target: str, runs: int, *, artifacts: Path, seconds: int | None = None) -> dict[str, object]:
    """Fuzz ``target`` for ``runs`` executions (or ``seconds``) in a child process; returns the figures."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {sorted(TARGETS)}")
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus = artifacts / f"corpus-{target}"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(s)
    started = time.time() - 1
    code = ("import sys; from streetsense.fuzz import _child; "
            "_child(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])")
    cmd = [sys.executable, "-c", code, target, str(runs if seconds is None else -1), str(artifacts), str(corpus)]
    if seconds is not None:
        cmd.append(f"-max_total_time={seconds}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIRMWARE.parent), env.get("PYTHONPATH")) if p)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=artifacts,
                       timeout=None if seconds is None else seconds + 120)
    wall = time.monotonic() - t0
    err = r.stderr
    execs = _stat(err, "stat::number_of_executed_units") or 0
    done = [ln for ln in err.splitlines() if re.match(r"#\d+\s+DONE", ln)]
    last = dict((k, int(v)) for k, v in re.findall(r"(\w+): (\d+)", done[-1])) if done else {}
    new = sorted(p for p in artifacts.glob(f"{target}-*.bin") if p.stat().st_mtime >= started)
    if r.returncode != 0 and not done:
        raise RuntimeError(f"fuzzer failed (exit {r.returncode}):\n{err[-2000:]}")
    return {
        "target": target,
        "executions": execs,
        "failures": len(new),
        "failing_inputs": [str(p) for p in new[:20]],
        "coverage": last.get("cov"),
        "features": last.get("ft"),
        "corpus": last.get("corp"),
        "wall_s": round(wall, 2),
        # over the whole child process, start-up (imports, instrumentation) included
        "exec_per_s": round(execs / wall, 1) if wall > 0 else None,
    }


def _stat(text: str, key: str) -> int | None:
    m = re.search(re.escape(key) + r":\s*(\d+)", text)
    return int(m.group(1)) if m else None


def main(target: str, runs: int, artifacts: Path, as_json: bool, seconds: int | None = None) -> int:
    """CLI body (``streetsense fuzz``, or ``python -m streetsense.fuzz``); exit status 1 if anything failed."""
    res = run(target, runs, artifacts=artifacts, seconds=seconds)
    print(json.dumps(res) if as_json else "\n".join(f"{k}: {v}" for k, v in res.items()))
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m streetsense.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=None, help="run for this long instead of --runs")
    ap.add_argument("--artifacts", type=Path, default=Path("var/fuzz"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.exit(main(a.target, a.runs, a.artifacts, a.json, a.seconds))
