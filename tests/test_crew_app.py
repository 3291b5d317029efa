"""The crew app in a real headless Chromium driven over the DevTools protocol: the
page loads and lists the stops, a tap is stored on the server, and a tap made
offline (``Network.emulateNetworkConditions``) is queued in localStorage and sent
once the connection returns.  Screenshot: ``tests/artifacts/crew_app.png``."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from base64 import b64decode
from pathlib import Path

import httpx
import psycopg
import pytest

from streetsense.embedded import free_port
from tests.test_routing import api, tiny  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
ARTIFACTS = Path(__file__).parent / "artifacts"


class CDP:
    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.ids = itertools.count(1)

    def __call__(self, method: str, **params) -> dict:
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        r = self("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path):
    port = free_port()
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'chrome'}", f"--remote-debugging-port={port}",
                             "--remote-allow-origins=*", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.2)
        cdp = CDP(pages[0]["webSocketDebuggerUrl"])
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(pred, timeout=20.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def _reports(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as c:
        return {a: s for a, s in c.execute("SELECT asset_id, status FROM crew_reports")}


def test_crew_app_in_chromium(api, db_url, browser):  # noqa: F811
    base, sc, fl, tokens = api
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {tokens['operations']}"}) as h:
        s = h.post("/routes/plans", json={"tenant": fl.tenant, "date": "2026-03-02", "time_limit_s": 1}).json()
        route = s["routes"][0]
    cdp = browser
    cdp("Page.enable")
    cdp("Network.enable")
    cdp("Emulation.setDeviceMetricsOverride", width=412, height=915, deviceScaleFactor=1, mobile=True)
    # the crew's link carries its token in the fragment: never sent to the server, kept in localStorage
    cdp("Page.navigate", url=base + route["crew_url"] + "#token=" + tokens["crew"])
    n = _wait(lambda: cdp.js("document.readyState === 'complete' && document.querySelectorAll('li.stop').length"))
    assert n == route["stops"]
    assert cdp.js("location.hash") == ""                                     # the token left the address bar
    assert cdp.js("localStorage.getItem('streetsense-token')") == tokens["crew"]
    ids = cdp.js("Array.from(document.querySelectorAll('li.stop')).map(l => l.dataset.asset)")
    assert cdp.js("document.querySelector('#map') !== null && document.querySelectorAll('#map circle').length") == n
    first, second = ids[0], ids[1]
    assert "why:" in cdp.js(f"document.querySelector('#stop-{first} .why').textContent")
    # touch targets are at least 44 px tall
    assert cdp.js(f"document.querySelector('#stop-{first} button.collected').getBoundingClientRect().height") >= 44

    cdp.js(f"document.querySelector('#stop-{first} button.collected').click()")
    assert _wait(lambda: _reports(db_url).get(first) == "collected"), "the tap did not reach the server"

    cdp("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
    cdp.js(f"document.querySelector('#stop-{second} button.not_out').click()")
    time.sleep(1.5)
    assert cdp.js("window.crewApp.queue().length") == 1
    assert cdp.js("document.getElementById('net').textContent").startswith("offline")
    assert second not in _reports(db_url)
    # the page was reloaded from the phone's storage? state survives in localStorage
    assert json.loads(cdp.js("localStorage.getItem('streetsense-crew-queue')"))[0]["body"]["status"] == "not_out"

    cdp("Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1)
    assert _wait(lambda: _reports(db_url).get(second) == "not_out", timeout=20), "queued update was not resent"
    assert _wait(lambda: cdp.js("window.crewApp.queue().length") == 0)
    assert len(_reports(db_url)) == 2

    ARTIFACTS.mkdir(exist_ok=True)
    shot = cdp("Page.captureScreenshot", format="png")
    (ARTIFACTS / "crew_app.png").write_bytes(b64decode(shot["data"]))
    assert (ARTIFACTS / "crew_app.png").stat().st_size > 5000
