# Fake ``network``: a station interface that joins while world.wifi_ok().

import world

STA_IF = 0
AP_IF = 1
STAT_GOT_IP = 3

joins = 0


class WLAN:
    def __init__(self, iface=STA_IF):
        self._active = False
        self._ssid = None

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)
        if not v:
            self._ssid = None

    def connect(self, ssid, key=None):
        global joins
        if not self._active:
            raise OSError("WLAN not active")
        self._ssid = ssid
        joins += 1

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        return self._active and self._ssid == world.ssid and world.wifi_ok()

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return world.rssi
        return STAT_GOT_IP if self.isconnected() else 0

    def ifconfig(self):
        return ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1")
