"""Firmware bundles: what ``streetsense.firmware.build`` produced for a board, signed.

A bundle is a directory the API (or any static HTTP server) serves as is::

    manifest.json      canonical JSON: format, version, board, arch, files
                       {device path: {sha256, size}}, total, [image]
    manifest.sig       {"alg": "ed25519", "key": <key id>, "sig": <hex>}
    files/<path>       each file, byte for byte what lands in /a or /b

The signature covers ``b"ss-ota-1" + sha256(manifest.json)`` (the node
recomputes exactly that with ``hashlib.sha256``); the manifest pins every
file.  Bytes are deterministic: the same sources, board, version and key
give the same bundle, byte for byte (mpy-cross is deterministic and Ed25519
signatures are too).  ``boot.py`` and ``main.py`` are not part of a bundle:
they are the node's fixed first stage (see README.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streetsense.firmware import build as fw
from streetsense.ota import keys as K

FORMAT = "ss-ota-1"
SIGCTX = b"ss-ota-1"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
IMAGE_NAME = "micropython.bin"


class BundleError(ValueError):
    pass


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest_bytes: bytes
    signature: bytes
    key_id: str

    @property
    def manifest(self) -> dict:
        return json.loads(self.manifest_bytes)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def board(self) -> str:
        return self.manifest["board"]

    @property
    def sha256(self) -> str:
        """SHA-256 of manifest.json (hex): what the OTA notice names."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def total_bytes(self) -> int:
        m = self.manifest
        return m["total"] + (m["image"]["size"] if "image" in m else 0)

    def notice(self, url: str, rollout_id: int | str | None = None) -> dict:
        """The OTA notice for the device's cmd topic (``url``: where this directory is served)."""
        if not url.endswith("/"):
            url += "/"
        return {"op": "ota", "id": rollout_id, "version": self.version, "board": self.board, "url": url,
                "sha256": self.sha256, "sig": self.signature.hex()}


def canonical(obj: dict) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, ASCII, one trailing newline.

    >>> canonical({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b'{"a":{"x":"\\\\u00e9","y":[1,2]},"b":1}\\n'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def signed_message(manifest_bytes: bytes) -> bytes:
    return SIGCTX + hashlib.sha256(manifest_bytes).digest()


def make_manifest(files: dict[str, bytes], *, board: str, version: str, arch: str,
                  image: bytes | None = None) -> bytes:
    if not VERSION_RE.match(version):
        raise BundleError(f"version {version!r}: 1-32 of [0-9A-Za-z.+-]")
    if not files:
        raise BundleError("a bundle needs files")
    ent = {}
    for path, data in files.items():
        if not PATH_RE.match(path) or len(path) > 96 or any(p in (".", "..") for p in path.split("/")):
            raise BundleError(f"bad device path {path!r}")
        ent[path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m = {"format": FORMAT, "version": version, "board": board, "arch": arch, "files": ent,
         "total": sum(len(d) for d in files.values())}
    if image is not None:
        if image[:1] != b"\xe9":
            raise BundleError("image: not an ESP32 app image (no 0xE9 magic); use the OTA app .bin, "
                              "not the combined firmware")
        m["image"] = {"path": IMAGE_NAME, "sha256": hashlib.sha256(image).hexdigest(), "size": len(image)}
    return canonical(m)


def make_bundle(files: dict[str, bytes], out: Path, key: Ed25519PrivateKey, *, board: str, version: str,
                arch: str, image: bytes | None = None) -> Bundle:
    """Write a signed bundle of ``files`` ({device path: bytes}) into ``out`` (replaced)."""
    out = Path(out)
    mbytes = make_manifest(files, board=board, version=version, arch=arch, image=image)
    sig = key.sign(signed_message(mbytes))
    kid = K.key_id(K.public_bytes(key))
    if out.exists():
        shutil.rmtree(out)
    (out / "files").mkdir(parents=True)
    for path in sorted(files):
        dst = out / "files" / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(files[path])
    if image is not None:
        (out / "files" / IMAGE_NAME).write_bytes(image)
    (out / "manifest.json").write_bytes(mbytes)
    (out / "manifest.sig").write_bytes(canonical({"alg": "ed25519", "key": kid, "sig": sig.hex()}))
    return Bundle(out, mbytes, sig, kid)


def _with_version(src: str, version: str) -> str:
    new, n = re.subn(r'^VERSION = "[^"]*"', f'VERSION = "{version}"', src, count=1, flags=re.M)
    if n != 1:
        raise BundleError("firmware/ss/__init__.py has no VERSION line")
    return new


def firmware_files(board: str, version: str, arch: str | None = None) -> tuple[dict[str, bytes], str]:
    """{device path: bytes} of the firmware build for ``board``, with ss.VERSION = version.

    Everything ``streetsense.firmware.build`` produces except boot.py and main.py.
    """
    with tempfile.TemporaryDirectory(prefix="ss-ota-") as tmp:
        res = fw.build(board, Path(tmp) / "build", arch=arch)
        files = {f.device_path: (Path(tmp) / "build" / f.device_path).read_bytes()
                 for f in res.files if f.device_path not in fw.SOURCE_ONLY}
        # the status messages carry ss.VERSION: it must be the bundle's version
        init = fw.FIRMWARE / "ss" / "__init__.py"
        src = Path(tmp) / "init" / "__init__.py"
        src.parent.mkdir()
        src.write_text(_with_version(init.read_text(), version))
        march = None if res.arch == "bytecode" else res.arch
        fw.compile_file(src, Path(tmp) / "init.mpy", march, "ss/__init__.py")
        files["ss/__init__.mpy"] = (Path(tmp) / "init.mpy").read_bytes()
        return files, res.arch


def build_bundle(board: str, version: str, key: Ed25519PrivateKey, out: Path, *, arch: str | None = None,
                 image: bytes | None = None) -> Bundle:
    """Compile the firmware for ``board`` and write it as a signed bundle into ``out``."""
    if image is not None and fw.board_arch(board) != "xtensawin":
        raise BundleError("a MicroPython image update is for ESP32 boards only")
    files, arch_used = firmware_files(board, version, arch)
    return make_bundle(files, out, key, board=board, version=version, arch=arch_used, image=image)


def read_bundle(path: Path) -> Bundle:
    """A bundle directory as written by make_bundle (not verified: see verify.py)."""
    path = Path(path)
    try:
        mbytes = (path / "manifest.json").read_bytes()
        sig = json.loads((path / "manifest.sig").read_bytes())
        return Bundle(path, mbytes, bytes.fromhex(sig["sig"]), sig.get("key", ""))
    except (OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: not a bundle ({e})") from None
