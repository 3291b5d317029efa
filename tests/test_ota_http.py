"""The node's HTTP client and installer (firmware/ss/ota.py, ss/ota_install.py) against a real web server.

The WebAssembly MicroPython in test_ota_device.py has no sockets, so there the
bytes come through a fake socket; here the very same code runs under CPython
against ``http.server`` on a real TCP port, installing into a temporary
directory that stands in for the node's flash (``ota.ROOT``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streetsense.ota import bundle as B
from streetsense.ota import keys as K

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ota(tmp_path):
    # ss.ota with its heavy half (ss/ota_install.py) bound; fresh modules, not left in sys.modules
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
    flash = tmp_path / "flash"
    flash.mkdir()
    mod.ROOT = str(flash)
    return mod


class Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []
    short: set[str] = set()          # paths served with a body shorter than Content-Length

    def log_message(self, *a):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path in self.short:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    Handler.requests = []
    Handler.short = set()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("k")
    K.generate(d / "c.pem")
    return K.load_private(d / "c.pem")


def test_http_get_streams_the_body(ota, server):
    url, root = server
    data = bytes(range(256)) * 40
    (root / "blob").write_bytes(data)
    got = bytearray()
    feeds = []
    assert ota.http_get(url + "blob", got.extend, lambda: feeds.append(1)) == len(data)
    assert bytes(got) == data and len(feeds) >= len(data) // ota.CHUNK - 1
    with pytest.raises(ota.OTAError, match="http 404"):
        ota.http_get(url + "missing", got.extend)
    Handler.short.add("/cut")
    with pytest.raises(ota.OTAError, match="cut short"):
        ota.http_get(url + "cut", bytearray().extend)
    with pytest.raises(OSError):
        ota.http_get("http://127.0.0.1:1/x", got.extend)
    with pytest.raises(ota.OTAError, match="only http"):
        ota.http_get("https://example.org/x", got.extend)
    assert ota.split_url("http://h:81/a/b") == ("h", 81, "/a/b") and ota.split_url("http://h") == ("h", 80, "/")


def test_update_over_real_http_then_switch(ota, server, key):
    url, root = server
    files = {"ss/__init__.mpy": b"M\x06v2", "ss/app.mpy": b"M\x06app2" * 300, "board.mpy": b"M\x06esp32",
             "contract/v1.mpy": b"M\x06contract" * 100}
    b = B.make_bundle(files, root / "esp32" / "2.0.0", key, board="esp32", version="2.0.0", arch="xtensawin")
    flash = Path(ota.ROOT)
    (flash / "ota.pub").write_text(K.public_bytes(key).hex() + "\n")
    # the running bundle is slot a, with two files the same as in the new one
    (flash / "a/ss").mkdir(parents=True)
    (flash / "a/board.mpy").write_bytes(files["board.mpy"])
    (flash / "a/ss/app.mpy").write_bytes(files["ss/app.mpy"])
    (flash / "a/ss/old.mpy").write_bytes(b"old")
    (flash / "b/ss").mkdir(parents=True)
    (flash / "b/ss/stale.mpy").write_bytes(b"left from an earlier install")
    ota.write_state({"slot": "a", "version": "1.0.0"})
    n = ota.parse_notice(json.dumps(b.notice(url + "esp32/2.0.0/", 44)).encode())
    st = ota.update(n, ota.read_state(), "esp32", "1.0.0")
    assert st == {"slot": "b", "version": "2.0.0", "id": 44, "key": "44:2.0.0", "trial": 1, "boots": 0,
                  "wakes": 0, "prev": "a", "prev_version": "1.0.0", "bad": []}
    assert ota.read_state() == st
    got = {str(p.relative_to(flash / "b")): p.read_bytes() for p in (flash / "b").rglob("*") if p.is_file()}
    assert got == dict(files, **{"manifest.json": b.manifest_bytes})
    # only what slot a did not have came over the network
    assert sorted(Handler.requests) == ["/esp32/2.0.0/files/contract/v1.mpy", "/esp32/2.0.0/files/ss/__init__.mpy",
                                        "/esp32/2.0.0/manifest.json"]
    # the next boot runs b on trial
    slot, new = ota.decide(ota.read_state(), deep_wake=False)
    assert slot == "b" and new["boots"] == 1


def test_update_rejects_tampering_and_keeps_the_running_slot(ota, server, key):
    url, root = server
    files = {"ss/__init__.mpy": b"M\x06v2", "ss/app.mpy": b"M\x06app2" * 300}
    b = B.make_bundle(files, root / "esp32" / "2.0.0", key, board="esp32", version="2.0.0", arch="xtensawin")
    flash = Path(ota.ROOT)
    (flash / "ota.pub").write_text(K.public_bytes(key).hex() + "\n")
    notice = ota.parse_notice(json.dumps(b.notice(url + "esp32/2.0.0/", 1)).encode())
    before = {"slot": "a", "version": "1.0.0"}
    ota.write_state(before)
    (root / "esp32/2.0.0/files/ss/app.mpy").write_bytes(b"M\x06evil" * 300)
    with pytest.raises(ota.OTAError, match="hash mismatch: ss/app.mpy"):
        ota.update(notice, before, "esp32", "1.0.0")
    assert ota.read_state() == before and not (flash / "b/ss/app.mpy").exists()
    with pytest.raises(ota.OTAError, match="built for esp32, this is picow"):
        ota.update(notice, before, "picow", "1.0.0")
    # a manifest that is not the one the notice names
    m = b.manifest
    m["version"] = "2.0.1"
    (root / "esp32/2.0.0/manifest.json").write_bytes(B.canonical(m))
    with pytest.raises(ota.OTAError, match="sha256 differs from the notice"):
        ota.update(notice, before, "esp32", "1.0.0")
    # ... or one that matches a forged notice but is not signed by the council
    forged = dict(notice, sha256=hashlib.sha256(B.canonical(m)).hexdigest())
    with pytest.raises(ota.OTAError, match="signature"):
        ota.update(forged, before, "esp32", "1.0.0")
    assert ota.read_state() == before


def test_state_file_survives_a_cut_rename(ota):
    ota.write_state({"slot": "a", "version": "1"})
    flash = Path(ota.ROOT)
    # FAT: the old file was removed, the rename never happened
    (flash / "active").rename(flash / "active.new")
    assert ota.read_state() == {"slot": "a", "version": "1"}
    (flash / "active.new").write_text('{"slot": "a", "ver')         # torn write of .new, no main file
    assert ota.read_state() == {}
