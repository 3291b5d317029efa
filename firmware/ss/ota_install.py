# Over-the-air updates, the heavy half: the pure-Python SHA-512 and Ed25519
# verifier, manifest checks, the HTTP client, the bundle installer and the
# ESP32 app-partition writer.  ss.ota (the light half, imported at every
# reset and wake) imports this module only when a notice for a version the
# node should install arrives (ss.ota.installer()), and drops it again after
# a failed try.  Design: streetsense/ota/README.md.
#
# Trust: the council signs each bundle's manifest with Ed25519; the node
# checks the signature itself against the key(s) in /ota.pub (written at
# provisioning) with the pure-Python verifier below, then every file's
# SHA-256 against the manifest.  Nothing unsigned is ever written to a slot
# that boot.py could select.
#
# Settings a host or a test changes (ROOT, CONNECT) stay on ss.ota and are
# read from there at call time.  Pure parts (manifest, signature, hashes)
# import no hardware; esp32 / socket are imported only where they are used.

import binascii
import hashlib
import json
import os

from ss import ota as _o
from ss.ota import SLOTS, OTAError, _is_hex, _isdir, _p, _remove, notice_key, other, write_atomic, write_state

KEYS = "/ota.pub"
FORMAT = "ss-ota-1"       # manifest format
SIGCTX = b"ss-ota-1"      # signed message = SIGCTX + sha256(manifest bytes)
MAX_MANIFEST = 16384
CHUNK = 1024


def _hex(b):
    return binascii.hexlify(b).decode()


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if part:
            cur += "/" + part
            try:
                os.mkdir(_p(cur))
            except OSError:
                pass


def _walk(path, out, rel=""):
    """Every file under path, as paths relative to it."""
    try:
        names = os.listdir(_p(path))
    except OSError:
        return out
    for name in names:
        if _isdir(path + "/" + name):
            _walk(path + "/" + name, out, rel + name + "/")
        else:
            out.append(rel + name)
    return out


def file_sha256(path):
    """(hex sha256, size) of a file, or (None, 0) if it is missing."""
    h = hashlib.sha256()
    n = 0
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    try:
        with open(_p(path), "rb") as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                h.update(mv[:k])
                n += k
    except OSError:
        return None, 0
    return _hex(h.digest()), n


# --- manifest and signature ----------------------------------------------------

def _check_path(path):
    if not isinstance(path, str) or not 0 < len(path) <= 96 or path[0] == "/":
        raise OTAError("manifest: bad path %r" % (path,))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise OTAError("manifest: bad path %r" % (path,))
    for c in path:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "._-/"):
            raise OTAError("manifest: bad path %r" % (path,))


def _check_entry(what, ent):
    if not isinstance(ent, dict) or not _is_hex(ent.get("sha256"), 64):
        raise OTAError("manifest: %s needs sha256" % what)
    size = ent.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 24:
        raise OTAError("manifest: %s needs size" % what)


def parse_manifest(raw, board=None):
    """Manifest bytes -> dict, with every field checked.  OTAError if anything is off."""
    try:
        m = json.loads(raw)
    except ValueError:
        raise OTAError("manifest: not JSON")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise OTAError("manifest: format is not " + FORMAT)
    ver = m.get("version")
    if not isinstance(ver, str) or not 0 < len(ver) <= 32:
        raise OTAError("manifest: version")
    if board is not None and m.get("board") != board:
        raise OTAError("manifest: built for %s, this is %s" % (m.get("board"), board))
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise OTAError("manifest: no files")
    for path in files:
        _check_path(path)
        _check_entry(path, files[path])
    img = m.get("image")
    if img is not None:
        _check_entry("image", img)
        _check_path(img.get("path"))
    return m


def load_keys(path=KEYS):
    """The council's Ed25519 public keys (hex, one a line) provisioned in /ota.pub."""
    keys = []
    try:
        with open(_p(path)) as f:
            for line in f:
                line = line.split("#")[0].strip()
                if _is_hex(line, 64):
                    keys.append(binascii.unhexlify(line))
    except OSError:
        pass
    return keys


def signed_message(manifest):
    return SIGCTX + hashlib.sha256(manifest).digest()


def check_signature(manifest, sig_hex, keys):
    """OTAError unless one of keys signed the manifest bytes."""
    if not keys:
        raise OTAError("no OTA key on the node (" + KEYS + ")")
    if not _is_hex(sig_hex, 128):
        raise OTAError("signature: not 64 bytes of hex")
    sig = binascii.unhexlify(sig_hex)
    msg = signed_message(manifest)
    for k in keys:
        if verify(k, msg, sig):
            return
    raise OTAError("signature: not by a trusted key")


# --- Ed25519 verification (RFC 8032), pure Python --------------------------------
# MicroPython has neither Ed25519 nor SHA-512: both are here, on the port's
# arbitrary-precision ints.  Verification only (no secrets on the node), so
# timing side channels do not matter.  Cofactorless check, S < L enforced.

_M64 = 0xFFFFFFFFFFFFFFFF
_K512 = None


def _k512():
    global _K512
    if _K512 is None:
        raw = binascii.unhexlify(
            "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b53859f111f1b605d019"
            "923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e2"
            "72be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e3"
            "0fc19dc68b8cd5b5240ca1cc77ac9c652de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
            "983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
            "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df"
            "650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353ba2bfe8a14cf10364a81a664bbc423001"
            "c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
            "19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb"
            "5b9cca4f7763e373682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
            "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619cd186b8c721c0c207"
            "eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
            "28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a"
            "5fcb6fab3ad6faec6c44198c4a475817"
            "6a09e667f3bcc908bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1"
            "510e527fade682d19b05688c2b3e6c1f1f83d9abfb41bd6b5be0cd19137e2179")
        _K512 = [int.from_bytes(raw[i:i + 8], "big") for i in range(0, len(raw), 8)]
    return _K512


def _ror(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(data):
    """SHA-512 (FIPS 180-4); MicroPython's hashlib has no sha512."""
    K = _k512()
    n = len(data)
    data = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    h = K[80:88]
    w = [0] * 80
    for off in range(0, len(data), 128):
        for i in range(16):
            w[i] = int.from_bytes(data[off + 8 * i:off + 8 * i + 8], "big")
        for i in range(16, 80):
            x = w[i - 15]
            y = w[i - 2]
            w[i] = (w[i - 16] + (_ror(x, 1) ^ _ror(x, 8) ^ (x >> 7)) + w[i - 7]
                    + (_ror(y, 19) ^ _ror(y, 61) ^ (y >> 6))) & _M64
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (hh + (_ror(e, 14) ^ _ror(e, 18) ^ _ror(e, 41)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) & _M64
            t2 = (_ror(a, 28) ^ _ror(a, 34) ^ _ror(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            hh = g
            g = f
            f = e
            e = (d + t1) & _M64
            d = c
            c = b
            b = a
            a = (t1 + t2) & _M64
        h = [(h[0] + a) & _M64, (h[1] + b) & _M64, (h[2] + c) & _M64, (h[3] + d) & _M64,
             (h[4] + e) & _M64, (h[5] + f) & _M64, (h[6] + g) & _M64, (h[7] + hh) & _M64]
    return b"".join(x.to_bytes(8, "big") for x in h)


_P = (1 << 255) - 19
_L = (1 << 252) + 27742317777372353535851937790883648493
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def _add(p, q):
    # extended coordinates, a = -1 (RFC 8032 5.1.4)
    P = _P
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * 2 * _D % P * t2 % P
    d = z1 * 2 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    P = _P
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = x1 + y1
    e = h - s * s % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _decode_point(s):
    P = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    yy = y * y % P
    u = (yy - 1) % P
    v = (_D * yy + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vxx = v * x % P * x % P
    if vxx != u:
        if vxx != P - u:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _encode_point(p):
    P = _P
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify(pub, msg, sig):
    """True when sig (64 bytes) is pub's (32 bytes) Ed25519 signature of msg."""
    if len(pub) != 32 or len(sig) != 64:
        return False
    pub = bytes(pub)
    a = _decode_point(pub)
    rb = bytes(sig[:32])
    if a is None or _decode_point(rb) is None:
        return False
    s = int.from_bytes(bytes(sig[32:]), "little")
    if s >= _L:
        return False
    k = int.from_bytes(sha512(rb + pub + bytes(msg)), "little") % _L
    P = _P
    na = ((P - a[0]) % P, a[1], 1, (P - a[3]) % P)          # -A
    base = (_BX, _BY, 1, _BX * _BY % P)
    both = _add(base, na)
    q = (0, 1, 1, 0)
    for i in range(253, -1, -1):                               # Straus: [s]B + [k](-A)
        q = _double(q)
        if (s >> i) & 1:
            q = _add(q, both if (k >> i) & 1 else base)
        elif (k >> i) & 1:
            q = _add(q, na)
    return _encode_point(q) == rb


# --- HTTP (the thin network part) ------------------------------------------------

def split_url(url):
    if not url.startswith("http://"):
        raise OTAError("url: only http:// (integrity comes from the signature)")
    rest = url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 80
    if ":" in hostport:
        hostport, p = hostport.split(":")
        port = int(p)
    if not hostport:
        raise OTAError("url: no host")
    return hostport, port, path


def _connect(host, port, timeout):
    import socket
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(timeout)
        s.connect(addr)
    except Exception:
        s.close()
        raise
    return s


def http_get(url, sink, feed=None, timeout=10):
    """GET url (HTTP/1.0); the body goes to sink(chunk) piece by piece.  Returns its length.

    OTAError for an HTTP error or a short body, OSError for the network."""
    host, port, path = split_url(url)
    s = (_o.CONNECT or _connect)(host, port, timeout)
    try:
        s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: streetsense-node\r\nConnection: close\r\n\r\n"
                   % (path, host)).encode())
        buf = b""
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            d = s.recv(512)
            if not d:
                raise OTAError("http: connection closed in the headers of " + path)
            buf += d
            if len(buf) > 8192:
                raise OTAError("http: headers too long")
        lines = buf[:i].decode().split("\r\n")
        body = buf[i + 4:]
        status = lines[0].split()
        if len(status) < 2 or status[1] != "200":
            raise OTAError("http %s: %s" % (status[1] if len(status) > 1 else "?", path))
        length = None
        for ln in lines[1:]:
            j = ln.find(":")
            if j > 0 and ln[:j].strip().lower() == "content-length":
                length = int(ln[j + 1:].strip())
        n = 0
        while True:
            if body:
                if length is not None and n + len(body) > length:
                    body = body[:length - n]
                sink(body)
                n += len(body)
            if length is not None and n >= length:
                break
            if feed:
                feed()
            body = s.recv(CHUNK)
            if not body:
                break
        if length is not None and n != length:
            raise OTAError("http: %s cut short (%d of %d bytes)" % (path, n, length))
        return n
    finally:
        s.close()


# --- installing a bundle ------------------------------------------------------------

def _copy(src, dst):
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    with open(_p(src), "rb") as fi, open(_p(dst), "wb") as fo:
        while True:
            k = fi.readinto(buf)
            if not k:
                break
            fo.write(mv[:k])


def _free_bytes():
    try:
        st = os.statvfs(_p("/") if _o.ROOT else "/")
        return st[0] * st[4]
    except (OSError, AttributeError):
        return None


def install(m, base, slot, active="", feed=None, get=None):
    """Put manifest m's files into /slot/ and check every one's SHA-256 on flash.

    A file already there with the right hash stays (an interrupted install
    resumes); one identical in the running bundle (``active``: "a", "b" or
    "" for the factory root) is copied; the rest is fetched from
    base + "files/" + path.  Returns the bytes downloaded.  OTAError on any
    mismatch: the slot is then incomplete, and nothing points at it.
    """
    get = get or http_get
    root = "/" + slot
    _remove(root + "/manifest.json")
    _makedirs(root)
    files = m["files"]
    for rel in _walk(root, []):
        if rel not in files:
            _remove(root + "/" + rel)
    need = 0
    for path in files:
        if file_sha256(root + "/" + path)[0] != files[path]["sha256"]:
            need += files[path]["size"]
    free = _free_bytes()
    if free is not None and need > free:
        raise OTAError("no room: %d bytes needed, %d free" % (need, free))
    src_root = "/" + active if active in SLOTS else ""
    fetched = 0
    for path in sorted(files):
        want = files[path]
        dst = root + "/" + path
        if file_sha256(dst)[0] == want["sha256"]:
            continue
        i = dst.rfind("/")
        _makedirs(dst[:i])
        if file_sha256(src_root + "/" + path)[0] == want["sha256"]:
            _copy(src_root + "/" + path, dst)
        else:
            with open(_p(dst), "wb") as f:
                fetched += get(base + "files/" + path, f.write, feed)
        got, size = file_sha256(dst)
        if got != want["sha256"] or size != want["size"]:
            _remove(dst)
            raise OTAError("hash mismatch: " + path)
        if feed:
            feed()
    return fetched


# --- ESP32: the MicroPython image in the A/B app partitions -----------------------

class _BlockWriter:
    def __init__(self, part, bs=4096):
        self.part = part
        self.bs = bs
        self.buf = bytearray(bs)
        self.k = 0
        self.block = 0
        self.n = 0
        self.max = part.info()[3]

    def write(self, data):
        self.n += len(data)
        if self.n > self.max:
            raise OTAError("image: larger than the partition")
        mv = memoryview(data)
        while len(mv):
            t = min(self.bs - self.k, len(mv))
            self.buf[self.k:self.k + t] = mv[:t]
            self.k += t
            mv = mv[t:]
            if self.k == self.bs:
                self.flush()

    def flush(self):
        if self.k:
            for i in range(self.k, self.bs):
                self.buf[i] = 0xFF
            self.part.writeblocks(self.block, self.buf)      # erases, then writes
            self.block += 1
            self.k = 0


def install_image(img, url, feed=None, get=None):
    """Write the image into the next OTA app partition and check its SHA-256 there.

    Returns the partition (not yet set to boot)."""
    import esp32
    get = get or http_get
    part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    if img["size"] > part.info()[3]:
        raise OTAError("image: larger than " + part.info()[4])
    w = _BlockWriter(part)
    get(url, w.write, feed)
    w.flush()
    if w.n != img["size"]:
        raise OTAError("image: %d bytes, manifest says %d" % (w.n, img["size"]))
    h = hashlib.sha256()
    buf = bytearray(4096)
    left = w.n
    blk = 0
    while left > 0:
        part.readblocks(blk, buf)
        h.update(memoryview(buf)[:min(left, 4096)])
        left -= 4096
        blk += 1
        if feed and blk % 16 == 0:
            feed()
    if _hex(h.digest()) != img["sha256"]:
        raise OTAError("image: hash mismatch in " + part.info()[4])
    return part


def update(n, st, board, version, feed=None, get=None):
    """Fetch, verify and install notice n; commit the switch.  Returns the new state.

    Order: manifest (hash from the notice, signature by the council key),
    every file into the inactive slot (hash checked on flash), the image
    (ESP32, hash checked in the partition, set_boot), then the /active
    pointer: the one write that switches.  Anything failing before it leaves
    the running bundle selected."""
    get = get or http_get
    keys = load_keys()
    raw = bytearray()

    def take(b):
        raw.extend(b)
        if len(raw) > MAX_MANIFEST:
            raise OTAError("manifest: too large")
    get(n["url"] + "manifest.json", take, feed)
    raw = bytes(raw)
    if _hex(hashlib.sha256(raw).digest()) != n["sha256"]:
        raise OTAError("manifest: sha256 differs from the notice")
    check_signature(raw, n["sig"], keys)
    m = parse_manifest(raw, board)
    if m["version"] != n["version"]:
        raise OTAError("manifest: version %s, notice says %s" % (m["version"], n["version"]))
    cur = st.get("slot", "")
    if cur not in SLOTS:
        cur = ""
    slot = other(cur) if cur else "a"
    install(m, n["url"], slot, cur, feed, get)
    write_atomic("/" + slot + "/manifest.json", raw)
    new = {"slot": slot, "version": m["version"], "id": n.get("id"), "key": notice_key(n), "trial": 1,
           "boots": 0, "wakes": 0, "prev": cur, "prev_version": version, "bad": list(st.get("bad") or [])}
    img = m.get("image")
    if img is not None:
        part = install_image(img, n["url"] + "files/" + img["path"], feed, get)
        part.set_boot()
        new["image"] = part.info()[4]
    write_state(new)
    return new
