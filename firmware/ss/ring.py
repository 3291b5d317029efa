# Store-and-forward ring buffer on flash.
#
# Readings wait here until the broker has acknowledged them.  Layout under
# ``root``: numbered segment files (append-only, ``seg_records`` fixed-size
# records each) and ``cur``, an append-only log of the read cursor.  Nothing is
# ever rewritten in place, which suits littlefs and wear: a record is appended
# once, a segment is deleted once consumed, a cursor entry is appended per
# acknowledged pack and the log is compacted every 64 entries.
#
# Power loss: a torn record at the end of a segment is ignored (size not a
# multiple of REC, or a bad check byte) and writing resumes in a new segment;
# a torn cursor entry fails its check and the previous entry wins, so at worst
# a pack is sent again with the same bseq (at-least-once, idempotent).
#
# Bounded: at most ``segments`` files; when full the oldest segment goes and
# its unsent records are added to ``dropped``.
#
# Record (REC bytes, little-endian): metric id u8, check u8, ms u16,
# time u32 (device seconds, see clock.py), value i32 (quantized, contract v1).

import os
import struct
from micropython import const

REC = const(12)
RFMT = "<BBHIi"
_CUR = const(20)
_CFMT = "<IHHIIHH"
_MAGIC = const(0x5353)
_COMPACT = const(64)


def check(buf, off):
    """Check byte of the record at buf[off:off+REC] (over all bytes but byte 1)."""
    s = buf[off]
    for i in range(off + 2, off + REC):
        s += buf[i]
    return (s & 0xFF) ^ 0x5A


def pack(buf, off, mid, q, t, ms):
    struct.pack_into(RFMT, buf, off, mid, 0, ms, t, q)
    buf[off + 1] = check(buf, off)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


class Ring:
    def __init__(self, root="/ring", segments=16, seg_records=256):
        self.root = root
        self.maxseg = segments
        self.segrec = seg_records
        self.first = 1       # oldest segment on flash
        self.last = 1        # segment being appended to
        self.last_n = 0      # records in it
        self.rd_seg = 1      # read cursor
        self.rd_idx = 0
        self.seq = 0         # bseq of the next pack
        self.inflight = 0    # records in the pack being sent (0 = none)
        self.dropped = 0     # records lost to overflow, ever
        self.corrupt = 0     # records skipped for a bad check byte (this boot)
        self.count = 0       # records not yet acknowledged
        self._cbuf = bytearray(_CUR)
        self._rbuf = bytearray(REC)
        self._path = None
        self._open()

    # --- file names ----------------------------------------------------------
    def _seg(self, n):
        return "%s/%08d" % (self.root, n)

    def _size(self, n):
        try:
            return os.stat(self._seg(n))[6]
        except OSError:
            return 0

    # --- boot ----------------------------------------------------------------
    def _open(self):
        if not _exists(self.root):
            os.mkdir(self.root)
        segs = []
        for name in os.listdir(self.root):
            if len(name) == 8 and name.isdigit():
                segs.append(int(name))
        segs.sort()
        self._read_cursor()
        if segs:
            self.first = segs[0]
            self.last = segs[-1]
            sz = self._size(self.last)
            self.last_n = sz // REC
            if sz % REC:                      # torn append: never write after it
                self.last_n = self.segrec
        else:
            self.first = self.last = max(self.rd_seg, 1)
            self.last_n = 0
        if self.rd_seg < self.first:          # cursor behind a deleted segment
            self.rd_seg, self.rd_idx, self.inflight = self.first, 0, 0
        if self.rd_seg > self.last:
            self.last = self.rd_seg
            self.last_n = 0
        n = 0
        s = self.rd_seg
        while s <= self.last:
            n += self._nrec(s)
            s += 1
        self.count = max(0, n - self.rd_idx)
        if self.inflight > self.count:
            self.inflight = self.count
        self._path = self._seg(self.last)

    def _nrec(self, s):
        if s == self.last:
            return min(self.last_n, self._size(s) // REC)
        return min(self.segrec, self._size(s) // REC)

    def _read_cursor(self):
        p = self.root + "/cur"
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            return
        b = self._cbuf
        for off in range(0, len(data) - _CUR + 1, _CUR):
            b[:] = data[off:off + _CUR]
            seg, idx, infl, seq, drop, chk, magic = struct.unpack(_CFMT, b)
            if magic == _MAGIC and chk == self._csum(b):
                self.rd_seg, self.rd_idx, self.inflight = seg, idx, infl
                self.seq, self.dropped = seq, drop

    @staticmethod
    def _csum(b):
        s = 0
        for i in range(16):
            s += b[i] << (i & 1) * 8
        return (s & 0xFFFF) ^ 0xA55A

    def _write_cursor(self):
        b = self._cbuf
        struct.pack_into(_CFMT, b, 0, self.rd_seg, self.rd_idx, self.inflight,
                         self.seq, self.dropped, 0, _MAGIC)
        struct.pack_into("<H", b, 16, self._csum(b))
        p = self.root + "/cur"
        try:
            size = os.stat(p)[6]
        except OSError:
            size = 0
        if size >= _COMPACT * _CUR or size % _CUR:
            with open(p + ".new", "wb") as f:
                f.write(b)
            try:
                os.rename(p + ".new", p)
            except OSError:
                os.remove(p)
                os.rename(p + ".new", p)
        else:
            with open(p, "ab") as f:
                f.write(b)

    # --- writing -------------------------------------------------------------
    def _roll(self):
        self.last += 1
        self.last_n = 0
        self._path = self._seg(self.last)
        while self.last - self.first + 1 > self.maxseg:
            self._drop_oldest()

    def _drop_oldest(self):
        f = self.first
        if self.rd_seg <= f:
            lost = self._nrec(f) - (self.rd_idx if self.rd_seg == f else 0)
            self.dropped += lost
            self.count -= lost
            self.rd_seg, self.rd_idx, self.inflight = f + 1, 0, 0
            self._write_cursor()
        try:
            os.remove(self._seg(f))
        except OSError:
            pass
        self.first = f + 1

    def append(self, mid, q, t, ms=0):
        """Store one reading (no allocation besides the file handle)."""
        pack(self._rbuf, 0, mid, q, t, ms)
        self.write(self._rbuf, 1)

    def write(self, buf, n):
        """Append n packed records from buf (e.g. staged in RTC memory)."""
        off = 0
        mv = memoryview(buf)
        while n:
            if self.last_n >= self.segrec:
                self._roll()
            k = min(n, self.segrec - self.last_n)
            with open(self._path, "ab") as f:
                f.write(mv[off:off + k * REC])
            self.last_n += k
            self.count += k
            off += k * REC
            n -= k

    # --- reading -------------------------------------------------------------
    def peek(self, buf, n):
        """Copy up to n unacknowledged records into buf; returns how many."""
        n = min(n, self.count, len(buf) // REC)
        s, i, got = self.rd_seg, self.rd_idx, 0
        mv = memoryview(buf)
        while got < n and s <= self.last:
            avail = self._nrec(s) - i
            if avail > 0:
                k = min(avail, n - got)
                with open(self._seg(s), "rb") as f:
                    f.seek(i * REC)
                    f.readinto(mv[got * REC:(got + k) * REC])
                got += k
                i += k
            else:
                s += 1
                i = 0
        return got

    def begin(self, n):
        """Mark the next n records as one pack in flight (survives reboot)."""
        if n != self.inflight:
            self.inflight = n
            self._write_cursor()

    def commit(self, n):
        """The broker acknowledged the pack: drop its n records, advance bseq."""
        n = min(n, self.count)
        self.count -= n
        while n:
            avail = self._nrec(self.rd_seg) - self.rd_idx
            if self.rd_seg < self.last and avail <= n:
                n -= max(avail, 0)
                self.rd_seg += 1
                self.rd_idx = 0
            else:
                self.rd_idx += n
                n = 0
        if self.rd_seg < self.last and self.rd_idx >= self._nrec(self.rd_seg):
            self.rd_seg += 1
            self.rd_idx = 0
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.inflight = 0
        self._write_cursor()
        while self.first < self.rd_seg:
            try:
                os.remove(self._seg(self.first))
            except OSError:
                pass
            self.first += 1
