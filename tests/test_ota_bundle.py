"""Keys, bundles and signatures: deterministic bundles, tampering and wrong keys
rejected, and the node's pure-Python Ed25519 agreeing with ``cryptography``."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streetsense.firmware import build as fw
from streetsense.ota import bundle as B
from streetsense.ota import keys as K
from streetsense.ota.cli import ota_app
from streetsense.ota.verify import VerifyError, verify_bundle, verify_signature

REPO = Path(__file__).resolve().parents[1]


def device_ota():
    """firmware/ss/ota.py as the node runs it, its heavy half (ss/ota_install.py, whose
    names it serves lazily) bound; fresh modules, not left in sys.modules."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "ss" or k.startswith("ss.")}
    sys.path.insert(0, str(REPO / "firmware"))
    try:
        mod = importlib.import_module("ss.ota")
        mod.installer()
    finally:
        sys.path.remove(str(REPO / "firmware"))
        for k in [k for k in sys.modules if k == "ss" or k.startswith("ss.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return mod


OTA = device_ota()


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("k")
    K.generate(d / "council.pem")
    return K.load_private(d / "council.pem")


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- keys -------------------------------------------------------------------------------

def test_keygen_private_file_is_0600_and_pub_is_hex(tmp_path):
    pub = K.generate(tmp_path / "council.pem")
    mode = stat.S_IMODE((tmp_path / "council.pem").stat().st_mode)
    assert mode == 0o600
    assert (tmp_path / "council.pub").read_text() == pub.hex() + "\n"
    assert K.load_public(tmp_path / "council.pub") == [pub] == K.load_public(tmp_path / "council.pem")
    assert K.public_bytes(K.load_private(tmp_path / "council.pem")) == pub
    with pytest.raises(K.KeyFileError, match="exists"):
        K.generate(tmp_path / "council.pem")
    os.chmod(tmp_path / "council.pem", 0o644)
    with pytest.raises(K.KeyFileError, match="readable by others"):
        K.load_private(tmp_path / "council.pem")
    K.generate(tmp_path / "council.pem", overwrite=True)
    assert stat.S_IMODE((tmp_path / "council.pem").stat().st_mode) == 0o600
    with pytest.raises(K.KeyFileError):
        K.parse_public("not-a-key")


# --- bundles ------------------------------------------------------------------------------

def test_bundle_is_deterministic_and_complete(tmp_path, key):
    b1 = B.build_bundle("esp32", "1.4.0", key, tmp_path / "one")
    b2 = B.build_bundle("esp32", "1.4.0", key, tmp_path / "two")
    assert tree(b1.path) == tree(b2.path)                   # byte for byte
    assert b1.manifest_bytes == B.canonical(json.loads(b1.manifest_bytes))
    m = b1.manifest
    assert (m["format"], m["version"], m["board"], m["arch"]) == ("ss-ota-1", "1.4.0", "esp32", "xtensawin")
    built = fw.build("esp32", tmp_path / "plain")
    want = {f.device_path for f in built.files} - {"boot.py", "main.py"}
    assert set(m["files"]) == want and {"ss/ota.mpy", "ss/node.mpy", "board.mpy", "ss/akern.mpy"} <= want
    for p, ent in m["files"].items():
        data = (b1.path / "files" / p).read_bytes()
        assert ent == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        if p != "ss/__init__.mpy":
            assert data == (tmp_path / "plain" / p).read_bytes()
    assert m["total"] == sum(e["size"] for e in m["files"].values())
    # the status messages carry ss.VERSION: the bundle's __init__ says 1.4.0
    assert b"1.4.0" in (b1.path / "files/ss/__init__.mpy").read_bytes()
    assert b"1.4.0" not in (tmp_path / "plain/ss/__init__.mpy").read_bytes()
    print(f"\nesp32 bundle: {len(m['files'])} files, {m['total']} bytes, manifest {len(b1.manifest_bytes)} bytes")
    # a different version or key changes the signature
    b3 = B.build_bundle("esp32", "1.4.1", key, tmp_path / "three")
    assert b3.signature != b1.signature and b3.sha256 != b1.sha256


def test_bundle_for_every_board(tmp_path, key):
    for board, arch in (("picow", "armv6m"), ("pico2w", "armv7emsp")):
        b = B.build_bundle(board, "2.0.0", key, tmp_path / board)
        assert b.manifest["arch"] == arch and b.board == board
        verify_bundle(b.path, [K.public_bytes(key)])
    with pytest.raises(B.BundleError, match="ESP32 boards only"):
        B.build_bundle("picow", "2.0.0", key, tmp_path / "x", image=b"\xe9" + bytes(100))
    with pytest.raises(B.BundleError, match="version"):
        B.build_bundle("esp32", "1 0", key, tmp_path / "y")


def small_bundle(tmp_path: Path, key, **kw) -> B.Bundle:
    files = {"ss/__init__.mpy": b"M\x06init", "ss/app.mpy": b"M\x06app" * 50, "board.mpy": b"M\x06board"}
    return B.make_bundle(files, tmp_path / "b", key, board="esp32", version="0.9.0", arch="xtensawin", **kw)


def test_verify_accepts_the_signed_bundle_and_the_node_agrees(tmp_path, key):
    b = small_bundle(tmp_path, key, image=b"\xe9" + os.urandom(5000))
    pub = K.public_bytes(key)
    assert verify_bundle(b.path, [pub]).sha256 == b.sha256
    # the node: notice hash, signature, then the manifest
    OTA.check_signature(b.manifest_bytes, b.signature.hex(), [pub])
    m = OTA.parse_manifest(b.manifest_bytes, "esp32")
    assert m["image"]["path"] == "micropython.bin" and m["version"] == "0.9.0"
    n = OTA.parse_notice(json.dumps(b.notice("http://ota.example.org/esp32/0.9.0", 5)))
    assert n["sha256"] == hashlib.sha256(b.manifest_bytes).hexdigest() and n["url"].endswith("/0.9.0/")


def test_tampered_file_rejected(tmp_path, key):
    b = small_bundle(tmp_path, key)
    (b.path / "files/ss/app.mpy").write_bytes(b"M\x06evil" + b"\x00" * 340)
    with pytest.raises(VerifyError, match="hash mismatch: ss/app.mpy"):
        verify_bundle(b.path, [K.public_bytes(key)])


def test_tampered_manifest_rejected_by_both_verifiers(tmp_path, key):
    b = small_bundle(tmp_path, key)
    m = b.manifest
    m["files"]["ss/app.mpy"]["sha256"] = hashlib.sha256(b"evil").hexdigest()
    (b.path / "manifest.json").write_bytes(B.canonical(m))
    pub = K.public_bytes(key)
    with pytest.raises(VerifyError, match="signature"):
        verify_bundle(b.path, [pub])
    with pytest.raises(OTA.OTAError, match="signature"):
        OTA.check_signature(B.canonical(m), b.signature.hex(), [pub])


def test_wrong_key_rejected(tmp_path, key):
    b = small_bundle(tmp_path, key)
    other = K.public_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(VerifyError, match="signature"):
        verify_bundle(b.path, [other])
    with pytest.raises(OTA.OTAError, match="not by a trusted key"):
        OTA.check_signature(b.manifest_bytes, b.signature.hex(), [other])
    # a rotation: the node trusts two keys, either signs
    OTA.check_signature(b.manifest_bytes, b.signature.hex(), [other, K.public_bytes(key)])
    with pytest.raises(OTA.OTAError, match="no OTA key"):
        OTA.check_signature(b.manifest_bytes, b.signature.hex(), [])


def test_extra_or_missing_files_rejected(tmp_path, key):
    b = small_bundle(tmp_path, key)
    pub = K.public_bytes(key)
    (b.path / "files/ss/extra.mpy").write_bytes(b"x")
    with pytest.raises(VerifyError, match="not in the manifest: ss/extra.mpy"):
        verify_bundle(b.path, [pub])
    (b.path / "files/ss/extra.mpy").unlink()
    (b.path / "files/board.mpy").unlink()
    with pytest.raises(VerifyError, match="missing file board.mpy"):
        verify_bundle(b.path, [pub])


def test_bad_manifests_rejected_by_the_node():
    good = {"format": "ss-ota-1", "version": "1.0", "board": "esp32",
            "files": {"ss/a.mpy": {"sha256": "0" * 64, "size": 3}}}
    OTA.parse_manifest(json.dumps(good).encode(), "esp32")
    for path in ("/abs.mpy", "../up.mpy", "ss//x.mpy", "ss/./x", "sp ace.mpy", ""):
        bad = dict(good, files={path: {"sha256": "0" * 64, "size": 3}})
        with pytest.raises(OTA.OTAError, match="bad path"):
            OTA.parse_manifest(json.dumps(bad).encode())
    for ent in ({"sha256": "0" * 63, "size": 3}, {"sha256": "0" * 64, "size": -1}, {"sha256": "0" * 64}):
        with pytest.raises(OTA.OTAError, match="needs"):
            OTA.parse_manifest(json.dumps(dict(good, files={"a.mpy": ent})).encode())
    with pytest.raises(OTA.OTAError, match="built for esp32, this is picow"):
        OTA.parse_manifest(json.dumps(good).encode(), "picow")
    with pytest.raises(OTA.OTAError, match="not JSON"):
        OTA.parse_manifest(b"{")
    assert OTA.parse_notice(b'{"op": "reboot"}') is None
    with pytest.raises(OTA.OTAError, match="url"):
        OTA.parse_notice(json.dumps({"op": "ota", "version": "1", "url": "ftp://x/", "sha256": "0" * 64,
                                     "sig": "0" * 128}).encode())


# --- the node's Ed25519 against cryptography ---------------------------------------------------

RFC8032 = [  # RFC 8032 section 7.1, tests 1-3: public key, message, signature
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


@pytest.mark.parametrize("pub,msg,sig", RFC8032)
def test_rfc8032_vectors(pub, msg, sig):
    pub, msg, sig = bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig)
    assert OTA.verify(pub, msg, sig)
    assert not OTA.verify(pub, msg + b"\x00", sig)
    # S + L is the same signature mod L: must be refused (malleability), as cryptography does
    s = int.from_bytes(sig[32:], "little") + OTA._L
    assert not OTA.verify(pub, msg, sig[:32] + s.to_bytes(32, "little"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=300),
       flip=st.one_of(st.none(), st.tuples(st.sampled_from(["sig", "msg", "pub"]), st.integers(0, 10_000))))
def test_node_verifier_agrees_with_cryptography(seed, msg, flip):
    k = Ed25519PrivateKey.from_private_bytes(seed)
    pub = K.public_bytes(k)
    sig = k.sign(msg)
    if flip is not None:
        what, bit = flip
        buf = bytearray({"sig": sig, "msg": msg, "pub": pub}[what])
        if buf:
            buf[bit // 8 % len(buf)] ^= 1 << (bit % 8)
        sig, msg, pub = (bytes(buf) if what == "sig" else sig, bytes(buf) if what == "msg" else msg,
                         bytes(buf) if what == "pub" else pub)
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        expect = True
    except Exception:
        expect = False
    assert OTA.verify(pub, msg, sig) is expect


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=700))
def test_node_sha512_is_sha512(data):
    assert OTA.sha512(data) == hashlib.sha512(data).digest()


def test_signed_message_is_the_same_on_both_sides(tmp_path, key):
    b = small_bundle(tmp_path, key)
    assert OTA.signed_message(b.manifest_bytes) == B.signed_message(b.manifest_bytes)
    assert verify_signature(b.manifest_bytes, b.signature, [K.public_bytes(key)]) == K.public_bytes(key)


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_keygen_bundle_verify(tmp_path):
    r = CliRunner()
    res = r.invoke(ota_app, ["keygen", "--out", str(tmp_path / "k.pem")])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["public_hex"] == (tmp_path / "k.pub").read_text().strip()
    res = r.invoke(ota_app, ["bundle", "--board", "picow", "--version", "3.1.0", "--key", str(tmp_path / "k.pem"),
                             "--out", str(tmp_path / "bnd"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["board"] == "picow" and out["files"] > 40 and out["key_id"] == info["key_id"]
    res = r.invoke(ota_app, ["verify", str(tmp_path / "bnd"), "--pub", str(tmp_path / "k.pub")])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
    (tmp_path / "bnd/files/ss/node.mpy").write_bytes(b"x")
    res = r.invoke(ota_app, ["verify", str(tmp_path / "bnd"), "--pub", str(tmp_path / "k.pub")])
    assert res.exit_code == 1 and "hash mismatch: ss/node.mpy" in res.output
    res = r.invoke(ota_app, ["keygen", "--out", str(tmp_path / "k.pem")])
    assert res.exit_code == 1 and "exists" in res.output
