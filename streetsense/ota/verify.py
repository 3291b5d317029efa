"""Check a bundle on the host: the council's signature, then every file.

The node does the same with its own pure-Python Ed25519 (firmware/ss/ota_install.py);
this side uses ``cryptography``.  The tests check the two agree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streetsense.ota.bundle import FORMAT, Bundle, BundleError, read_bundle, signed_message


class VerifyError(ValueError):
    pass


def verify_signature(manifest_bytes: bytes, signature: bytes, public_keys: list[bytes]) -> bytes:
    """The key (of ``public_keys``) that signed the manifest; VerifyError if none did."""
    msg = signed_message(manifest_bytes)
    for pub in public_keys:
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(signature, msg)
            return pub
        except (InvalidSignature, ValueError):
            continue
    raise VerifyError("signature: not made by a trusted key (or the manifest changed)")


def verify_bundle(path: Path, public_keys: list[bytes]) -> Bundle:
    """Signature, manifest fields, then each file's size and SHA-256; nothing extra in files/."""
    try:
        b = read_bundle(path)
    except BundleError as e:
        raise VerifyError(str(e)) from None
    verify_signature(b.manifest_bytes, b.signature, public_keys)
    try:
        m = json.loads(b.manifest_bytes)
    except ValueError:
        raise VerifyError("manifest: not JSON") from None
    if m.get("format") != FORMAT:
        raise VerifyError(f"manifest: format is not {FORMAT}")
    want = dict(m["files"])
    if "image" in m:
        want[m["image"]["path"]] = m["image"]
    root = Path(path) / "files"
    for rel, ent in sorted(want.items()):
        f = root / rel
        if not f.is_file():
            raise VerifyError(f"missing file {rel}")
        data = f.read_bytes()
        if len(data) != ent["size"] or hashlib.sha256(data).hexdigest() != ent["sha256"]:
            raise VerifyError(f"hash mismatch: {rel}")
    extra = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - set(want)
    if extra:
        raise VerifyError(f"files not in the manifest: {', '.join(sorted(extra))}")
    return b
