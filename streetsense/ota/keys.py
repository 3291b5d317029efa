"""The council's Ed25519 signing key.

The private key is a PKCS#8 PEM file created with mode 0600 and refused when
group or others can read it; the public key is 32 raw bytes, kept as one line
of hex in ``<key>.pub``.  That line is what a node trusts: provisioning writes
it to ``/ota.pub`` next to ``/config.json`` (several lines = several trusted
keys, for a rotation).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(Exception):
    """A key file is missing, malformed or not private enough."""


def key_id(public: bytes) -> str:
    """Short stable name of a public key: the first 8 bytes of its SHA-256, hex.

    >>> key_id(bytes(32))
    '66687aadf862bd77'
    """
    return hashlib.sha256(public).hexdigest()[:16]


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pub_path(private: Path) -> Path:
    return private.with_name(private.name.removesuffix(".pem") + ".pub")


def generate(path: Path, *, overwrite: bool = False) -> bytes:
    """Create a new key at ``path`` (0600) and ``<name>.pub``; returns the public key."""
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists (keep the council's key; --force replaces it)") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)          # also when an existing file is overwritten
        f.write(pem)
    pub = public_bytes(key)
    pub_path(path).write_text(pub.hex() + "\n")
    return pub


def load_private(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"no key at {path} (streetsense ota keygen)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def parse_public(text: str) -> list[bytes]:
    """Public keys from ``.pub`` text: 64 hex digits a line, ``#`` comments.

    >>> [k.hex()[:8] for k in parse_public("# council\\n" + "ab" * 32 + "\\n")]
    ['abababab']
    """
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
            raise KeyFileError(f"not an Ed25519 public key (64 hex digits): {line[:20]}…")
        keys.append(bytes.fromhex(line))
    return keys


def load_public(path_or_hex: str | Path) -> list[bytes]:
    """Public keys from a ``.pub`` file, a private key file, or hex given directly."""
    s = str(path_or_hex)
    p = Path(s)
    if p.is_file():
        data = p.read_bytes()
        if data.startswith(b"-----BEGIN"):
            return [public_bytes(load_private(p))]
        return parse_public(data.decode())
    return parse_public(s)
