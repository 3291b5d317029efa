"""A minimal SNTP server (RFC 4330) answering from the gateway's clock.

Nodes sync their clocks with MicroPython's ``ntptime`` against ``ntp_host``
(the gateway's address on site) so they need no internet. The server answers
mode-3 (client) requests of version 1-4 with a mode-4 reply: originate =
the request's transmit timestamp, receive / transmit = the gateway's clock.

A Raspberry Pi has no battery-backed clock: until its own clock is
synchronised (NTP over the backhaul, GPS, an RTC hat) it would hand out a
wrong time. The kernel knows (``adjtimex``); while it reports the clock
unsynchronised the reply says so (leap indicator 3, stratum 16) and RFC
clients ignore it. (``ntptime`` does not look; the node firmware rejects
times before 2020, which covers the usual "booted at 1970" case.)
``assume_synced`` overrides the kernel for clocks it does not know about.

>>> req = bytes([0x23]) + bytes(39) + ntp_timestamp(1767225600.5)
>>> rep = build_reply(req, 1767225601.0, 1767225601.25, synced=True)
>>> rep[0] >> 6, (rep[0] >> 3) & 7, rep[0] & 7, rep[1], rep[24:32] == req[40:48]
(0, 4, 4, 2, True)
>>> from_ntp(rep[40:48])
1767225601.25
>>> build_reply(b"short", 0.0, 0.0, synced=True) is None
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading
import time

from streetsense.logs import get_logger

log = get_logger("gateway.sntp")

NTP_EPOCH_OFFSET = 2_208_988_800   # 1900-01-01 to 1970-01-01 in seconds
MODE_CLIENT = 3
MODE_SERVER = 4
#: reference id for a secondary server without a known upstream address: the
#: traditional "local clock" pseudo address 127.127.1.0
REF_LOCAL = bytes([127, 127, 1, 0])


def ntp_timestamp(t: float) -> bytes:
    """Unix seconds -> 64-bit NTP timestamp (era wraps in 2036 as RFC 4330 section 3 says)."""
    sec = int(t)
    frac = int((t - sec) * 2**32) & 0xFFFFFFFF
    return struct.pack("!II", (sec + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, frac)


def from_ntp(b: bytes) -> float:
    """64-bit NTP timestamp -> Unix seconds (era 0 before 2036, era 1 after)."""
    sec, frac = struct.unpack("!II", b)
    if sec < 0x80000000:      # RFC 4330 section 3: MSB clear = era 1 (after 2036-02-07)
        sec += 2**32
    return sec - NTP_EPOCH_OFFSET + frac / 2**32


def build_reply(request: bytes, rx: float, tx: float, *, synced: bool, stratum: int = 2,
                precision: int = -20, dispersion_s: float = 0.01) -> bytes | None:
    """The 48-byte reply to ``request``, or None when it is not an SNTP client request."""
    if len(request) < 48:
        return None
    vn = (request[0] >> 3) & 7
    mode = request[0] & 7
    if mode != MODE_CLIENT or not 1 <= vn <= 4:
        return None
    li = 0 if synced else 3
    out = bytearray(48)
    out[0] = (li << 6) | (vn << 3) | MODE_SERVER
    out[1] = stratum if synced else 16
    out[2] = request[2]                              # poll: echo the client's
    out[3] = precision & 0xFF
    struct.pack_into("!I", out, 4, 0)                # root delay
    struct.pack_into("!I", out, 8, int(dispersion_s * 65536))
    out[12:16] = REF_LOCAL
    out[16:24] = ntp_timestamp(rx if synced else 0.0)  # reference: "now" while synced
    out[24:32] = request[40:48]                      # originate = client's transmit
    out[32:40] = ntp_timestamp(rx)
    out[40:48] = ntp_timestamp(tx)
    return bytes(out)


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: only the leading fields are read; the
    # tail is padding large enough for every libc.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("pad", ctypes.c_byte * 256)]


_TIME_ERROR = 5
_libc = None


def kernel_clock_synced() -> bool | None:
    """True/False from the kernel's NTP state (``adjtimex``), None if unknown."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = _libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class SntpServer:
    """UDP server on its own thread (a blocking ``recvfrom`` releases the GIL,
    so receive timestamps are not delayed by the gateway's main loop).

    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 123, *, assume_synced: bool = False,
                 stratum: int = 2) -> None:
        self.host = host
        self.port = port
        self.assume_synced = assume_synced
        self.stratum = stratum
        self.answered = 0
        self.ignored = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._synced = True
        self._synced_checked = 0.0

    def start(self) -> "SntpServer":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.settimeout(0.5)
        self.port = s.getsockname()[1]
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()
        log.info("sntp serving", host=self.host, port=self.port)
        return self

    def synced(self) -> bool:
        if self.assume_synced:
            return True
        now = time.monotonic()
        if now - self._synced_checked > 10:
            k = kernel_clock_synced()
            self._synced = True if k is None else k
            self._synced_checked = now
        return self._synced

    def _serve(self) -> None:
        s = self._sock
        assert s is not None
        while not self._stop.is_set():
            try:
                data, addr = s.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            rx = time.time()
            reply = build_reply(data, rx, time.time(), synced=self.synced(), stratum=self.stratum)
            if reply is None:
                self.ignored += 1
                continue
            # transmit stamp as late as possible: rebuild only those 8 bytes
            reply = reply[:40] + ntp_timestamp(time.time())
            try:
                s.sendto(reply, addr)
                self.answered += 1
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
