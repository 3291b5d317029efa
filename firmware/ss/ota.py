# Over-the-air updates, the light half: what every reset and every wake needs.
# Signed application bundles in A/B directories with a boot counter and
# fallback, and (ESP32) the MicroPython image in the A/B app partitions with
# the bootloader's rollback.  Design: streetsense/ota/README.md.
#
# This module is imported at every reset (boot.py) and every wake (ss.app:
# attach), so it holds only slot selection, the boot counter and fallback,
# the agent that notices an OTA notice and reports state.  The heavy half --
# pure-Python SHA-512 and Ed25519, manifest checks, the HTTP client, the
# installer and the ESP32 partition writer -- is ss/ota_install.py, imported
# by installer() only when a notice for a version this node should install
# arrives (the retained notice of the running version, one that failed
# before, or any notice while a bundle is on trial never load it).  Its
# names stay reachable as ss.ota.<name> (module __getattr__), e.g. ota.update,
# ota.verify, ota.http_get, loading it on first use.
#
# Trust: the council signs each bundle's manifest with Ed25519; the node
# checks the signature itself against the key(s) in /ota.pub (written at
# provisioning), then every file's SHA-256 against the manifest.  Nothing
# unsigned is ever written to a slot that boot.py could select.
#
# Layout on flash:
#   /a/..., /b/...   bundles (ss/, contract/, board.mpy, manifest.json)
#   /ss, /contract   the factory install (runs while no bundle is active)
#   /active          JSON pointer + boot counter, written atomically:
#                    {"slot": "b", "version": ..., "trial": 1, "boots": n,
#                     "wakes": n, "prev": "a", "prev_version": ..., "report": {...}}
#
# boot() runs from boot.py at every reset (the factory copy of this module):
# it picks the slot, counts trial boots and falls back after MAX_BOOTS
# resets (crashes, watchdog) or MAX_WAKES deep-sleep wakes without the new
# bundle having published once.  attach(node) hooks the agent into a running
# node: the OTA notice arrives retained on the device's cmd topic, files come
# over HTTP, progress and failures go out on ack.
#
# Pure parts (notice, decide()) import no hardware; machine / esp32 are
# imported only where they are used.

import json
import os

ROOT = ""                 # prefix of every flash path (a temp dir when run on a host)
ACTIVE = "/active"
SLOTS = ("a", "b")
MAX_BOOTS = 3             # resets (not deep-sleep wakes) allowed to a bundle on trial
MAX_WAKES = 96            # deep-sleep wakes allowed on trial without one publish
MAX_TRIES = 3             # failed installs of one notice before giving up on it
CONNECT = None            # tests: a function (host, port, timeout) -> socket-like (ss.ota_install reads it)
DEEPSLEEP_RESET = 4


class OTAError(Exception):
    pass


def _is_hex(s, n):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            return False
    return True


# --- files -------------------------------------------------------------------

def _p(path):
    return ROOT + path


def _isdir(path):
    try:
        return os.stat(_p(path))[0] & 0x4000 != 0
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(_p(path))
    except OSError:
        pass


def write_atomic(path, data):
    """A power cut leaves the old or the new content, never half of one."""
    tmp = path + ".new"
    with open(_p(tmp), "wb") as f:
        f.write(data)
    try:
        os.rename(_p(tmp), _p(path))
    except OSError:          # FAT will not rename over an existing file
        _remove(path)
        os.rename(_p(tmp), _p(path))


def read_state():
    """The /active pointer (a dict; {} = factory install, nothing to select)."""
    for path in (ACTIVE, ACTIVE + ".new"):      # .new: a FAT rename cut in half
        try:
            with open(_p(path)) as f:
                st = json.load(f)
            if isinstance(st, dict):
                return st
        except (OSError, ValueError):
            pass
    return {}


def write_state(st):
    write_atomic(ACTIVE, json.dumps(st).encode())


# --- A/B selection and the boot counter (pure) ------------------------------------

def other(slot):
    return "b" if slot == "a" else "a"


def decide(st, deep_wake, image=None):
    """Which slot to run and the state to write back (None: no write).

    st is the /active state; deep_wake is True when this reset is an ESP32
    deep-sleep wake (a clean cycle of the previous run); image is the label
    of the running app partition on an ESP32 (None elsewhere).  A bundle on
    trial gets MAX_BOOTS resets and MAX_WAKES wakes to publish once; an
    expected MicroPython image that is not running (the bootloader rolled it
    back) ends the trial at once.  Returns (slot or "" for the factory
    install, new state or None).
    """
    slot = st.get("slot", "")
    if slot not in SLOTS:
        slot = ""
    if not st.get("trial"):
        return slot, None
    st = dict(st)
    if deep_wake:
        st["wakes"] = st.get("wakes", 0) + 1
    else:
        st["boots"] = st.get("boots", 0) + 1
    why = None
    if st.get("boots", 0) > MAX_BOOTS:
        why = "%d boots without a publish" % MAX_BOOTS
    elif st.get("wakes", 0) > MAX_WAKES:
        why = "no publish in %d wakes" % MAX_WAKES
    elif st.get("image") and image is not None and image != st["image"]:
        why = "image rolled back to " + image
    if why is None:
        return slot, st
    new = fallback(st, why)
    return new["slot"], new


def fallback(st, why):
    """State after giving up on the bundle on trial: back to the previous one."""
    key = st.get("key")
    bad = list(st.get("bad") or [])[-3:]
    if key:
        bad.append(key)
    prev = st.get("prev", "")
    return {"slot": prev if prev in SLOTS else "", "version": st.get("prev_version", ""), "trial": 0,
            "bad": bad, "report": {"ota": st.get("version"), "id": st.get("id"), "state": "rolled_back",
                                   "ok": False, "error": why}}


def boot():
    """boot.py: put the active bundle first on sys.path; count trial boots; fall back.

    Never raises for a bad state file (the factory install then runs) and
    drops every ss module again, so main.py imports the selected bundle.
    """
    import sys
    try:
        st = read_state()
        if not st:
            return ""
        deep = False
        try:
            import machine
            deep = machine.reset_cause() == getattr(machine, "DEEPSLEEP_RESET", DEEPSLEEP_RESET)
        except (ImportError, AttributeError):
            pass
        img = running_image() if st.get("trial") and st.get("image") else None
        slot, new = decide(st, deep, img)
        if new is not None:
            write_state(new)
            if new.get("trial"):
                print("ota: %s on trial (boot %d, wake %d)" % (new.get("version"), new.get("boots", 0),
                                                             new.get("wakes", 0)))
                _trial_watchdog()
            else:
                print("ota: fell back to", slot or "factory", "-", new["report"]["error"])
        if slot and _isdir("/" + slot + "/ss"):
            sys.path.insert(0, ROOT + "/" + slot)
        else:
            slot = ""
        return slot
    except Exception as e:          # never keep a node from booting
        print("ota: boot:", e)
        return ""
    finally:
        for name in list(sys.modules):
            if name == "ss" or name.startswith("ss."):
                del sys.modules[name]


def _trial_watchdog():
    # A bundle that dies at import leaves MicroPython at the REPL: a watchdog
    # turns that into a reset, which the boot counter sees.  The app's own
    # watchdog (hw.start_wdt) takes over once it runs.
    try:
        import sys
        import machine
        machine.WDT(timeout=30000 if sys.platform == "esp32" else 8000)
    except (ImportError, AttributeError, ValueError, OSError):
        pass


# --- the notice ----------------------------------------------------------------------

def parse_notice(msg):
    """An OTA notice from the cmd topic -> dict; None if it is another command."""
    try:
        n = json.loads(msg)
    except ValueError:
        raise OTAError("notice: not JSON")
    if not isinstance(n, dict) or n.get("op") != "ota":
        return None
    if not isinstance(n.get("version"), str) or not 0 < len(n["version"]) <= 32:
        raise OTAError("notice: version")
    url = n.get("url")
    if not isinstance(url, str) or not url.startswith("http://") or not url.endswith("/"):
        raise OTAError("notice: url must be http://.../")
    if not _is_hex(n.get("sha256"), 64) or not _is_hex(n.get("sig"), 128):
        raise OTAError("notice: sha256 / sig")
    return n


def notice_key(n):
    return "%s:%s" % (n.get("id"), n["version"])


# --- ESP32: which app partition runs, and keeping it -----------------------------------

def running_image():
    """Label of the running app partition (ESP32), else None."""
    try:
        import esp32
    except ImportError:
        return None
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]


def mark_valid():
    """Tell the ESP32 bootloader the running image is good (cancels rollback)."""
    try:
        import esp32
    except ImportError:
        return False
    esp32.Partition.mark_app_valid_cancel_rollback()
    return True


# --- the agent inside a running node -------------------------------------------------

class Agent:
    """Hooks into a Node: cmd subscription, confirm after a publish, updates, reports.

    attach(node) wraps four methods of the node and its link (no change to
    their code): the link's callback (cmd messages), subscribe_cfg (also
    subscribes cmd), the node's apply_cfg (runs after the packs went out:
    the OTA session) and the link's close (reboots into a staged bundle)."""

    def __init__(self, node):
        from contract import v1
        from ss import VERSION
        self.node = node
        self.version = VERSION
        cfg = node.cfg
        self.t_cmd = v1.topic(cfg["tenant"], cfg["device_id"], v1.CMD)
        self.msg = None
        self.reboot = False
        link = node.link
        self._cb = link._cb
        self._sub = link.subscribe_cfg
        self._apply = node.apply_cfg
        self._close = link.close
        link._cb = self.on_msg
        link.subscribe_cfg = self.subscribe
        node.apply_cfg = self.apply
        link.close = self.close

    def on_msg(self, topic, msg):
        if topic == self.t_cmd or topic == self.t_cmd.encode():
            if b'"ota"' in msg:
                self.msg = msg
            return
        self._cb(topic, msg)

    def subscribe(self):
        self._sub()
        self.node.link.c.subscribe(self.t_cmd, qos=1)

    def ack(self, rep):
        rep = dict(rep)
        rep["fw"] = self.version
        self.node.link.publish(self.node.link.t_ack, json.dumps(rep).encode())

    def apply(self):
        self._apply()
        self.session()

    def session(self):
        """Runs once the node has published in this session."""
        st = read_state()
        if st.get("trial") and st.get("version") == self.version:
            # the bundle on trial has booted and published: keep it
            if st.get("image"):
                mark_valid()
            for k in ("trial", "boots", "wakes", "image"):
                st.pop(k, None)
            st["done"] = st.get("key")
            st["report"] = {"ota": self.version, "id": st.get("id"), "state": "running", "ok": True}
            write_state(st)
        rep = st.get("report")
        if rep:
            self.ack(rep)
            st.pop("report")
            write_state(st)
        msg = self.msg
        self.msg = None
        if msg:
            self.notice(msg, st)

    def notice(self, msg, st):
        try:
            n = parse_notice(msg)
        except OTAError as e:
            self.ack({"ota": None, "state": "failed", "ok": False, "final": True, "error": str(e)})
            return
        if n is None or st.get("trial"):
            return
        key = notice_key(n)
        if n["version"] == self.version:
            if st.get("done") != key:        # e.g. updated before, or the ack was lost
                st["done"] = key
                write_state(st)
                self.ack({"ota": n["version"], "id": n.get("id"), "state": "running", "ok": True})
            return
        if key in (st.get("bad") or ()):
            return                       # failed before: reported then, not retried
        tries = st.get("tries", 0) if st.get("try") == key else 0
        base = {"ota": n["version"], "id": n.get("id")}
        rep = dict(base)
        rep["state"] = "downloading"
        rep["ok"] = True
        self.ack(rep)
        hw = self.node.hw
        try:
            # the one place the heavy half is loaded: a notice for a new version
            installer().update(n, st, hw.b.NAME, self.version, hw.feed)
        except (OTAError, OSError, ValueError, KeyError, ImportError, MemoryError) as e:
            # ImportError / MemoryError: loading the heavy half failed (or ran out of
            # heap), a failed try like any other instead of a crash at every wake
            _unload()
            tries += 1
            st = read_state()
            st["try"] = key
            st["tries"] = tries
            final = tries >= MAX_TRIES
            if final:
                st["bad"] = list(st.get("bad") or [])[-3:] + [key]
            write_state(st)
            rep = dict(base)
            rep["state"] = "failed"
            rep["ok"] = False
            rep["final"] = final
            rep["tries"] = tries
            rep["error"] = (str(e) or type(e).__name__)[:120]
            self.ack(rep)
            return
        rep = dict(base)
        rep["state"] = "staged"
        rep["ok"] = True
        self.ack(rep)
        self.reboot = True

    def close(self):
        self._close()
        if self.reboot:
            self.reboot = False
            node = self.node
            from ss.state import URGENT
            node.state.v[URGENT] = 1          # the new bundle transmits on its first wake
            node.state.save()
            import machine
            machine.reset()


def attach(node):
    """Hook OTA into a node (one line in ss.app.main after Node(...))."""
    return Agent(node)


# --- the heavy half, on demand ---------------------------------------------------------

_H = None


def installer():
    """ss.ota_install (verifier, HTTP, installer), imported on first use."""
    global _H
    if _H is None:
        from ss import ota_install
        _H = ota_install
    return _H


def _unload():
    """Drop the heavy half again, so its heap (~11 KB) is freed (a Pico keeps running)."""
    global _H
    _H = None
    import sys
    sys.modules.pop("ss.ota_install", None)
    try:
        del sys.modules["ss"].ota_install
    except (KeyError, AttributeError):
        pass


def __getattr__(name):
    # ota.update, ota.verify, ota.http_get, ...: names of the heavy half
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(installer(), name)
