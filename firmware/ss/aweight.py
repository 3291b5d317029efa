# A-weighting filter (IEC 61672-1) for the noise node, in fixed point.
#
# design(fs) maps the analogue A-weighting poles and zeros through the
# bilinear transform into three biquads (s^2/(s+w1)^2, s^2/((s+w2)(s+w3)),
# 1/(s+w4)^2), each scaled to unit gain at 1 kHz, and quantizes them to Q13.
# The kernel filters int16 samples (the top half of the 32-bit I2S slot) in
# direct form I with 32-bit integers and second-order error feedback, so the
# truncation noise is shaped by (1 - 1/z)^2 and does not ride up the 20 Hz
# poles, and sums y^2 into a two-word accumulator (lo < 2**29, hi).
#
# The kernel is written twice with the same body: ss/akern.py is the
# @micropython.viper version a device runs (no allocation, no floats: a float
# per-sample loop would allocate on every operation on an ESP32 or RP2040),
# and _kernel below the plain version used where the viper emitter is missing
# (CPython, the WebAssembly port in the tests).  test_firmware_pure checks the
# two bodies are identical.

import math
from array import array
from micropython import const

Q = const(13)
NSEC = const(3)
F1 = 20.598997
F2 = 107.65265
F3 = 737.86223
F4 = 12194.217


def _section_resp(b, a, w):
    # |B(e^jw)/A(e^jw)| for real coefficient tuples
    c1, s1, c2, s2 = math.cos(w), math.sin(w), math.cos(2 * w), math.sin(2 * w)
    br = b[0] + b[1] * c1 + b[2] * c2
    bi = -(b[1] * s1 + b[2] * s2)
    ar = 1 + a[0] * c1 + a[1] * c2
    ai = -(a[0] * s1 + a[1] * s2)
    return math.sqrt((br * br + bi * bi) / (ar * ar + ai * ai))


def design(fs):
    """Float sections [(b0, b1, b2), (a1, a2)] for sample rate fs."""
    c = 2.0 * fs
    p = []
    for f in (F1, F2, F3, F4):
        w = 2 * math.pi * f
        p.append((c - w) / (c + w))
    secs = [
        ((1.0, -2.0, 1.0), (-2 * p[0], p[0] * p[0])),
        ((1.0, -2.0, 1.0), (-(p[1] + p[2]), p[1] * p[2])),
        ((1.0, 2.0, 1.0), (-2 * p[3], p[3] * p[3])),
    ]
    w1k = 2 * math.pi * 1000.0 / fs
    out = []
    for b, a in secs:
        g = 1.0 / _section_resp(b, a, w1k)
        out.append(((b[0] * g, b[1] * g, b[2] * g), a))
    return out


def quantize(secs):
    """Q13 integer coefficients, 5 per section: b0 b1 b2 a1 a2.

    The numerators are g * (1, +-2, 1): quantize g once and build b from it, so
    the double zeros stay exactly at z = 1 (or -1); a rounded b0 + b1 + b2 that
    missed zero would leave a DC leak that the 20 Hz poles amplify 80 dB.
    """
    co = array("i", [0] * (5 * NSEC))
    s = 1 << Q
    for j, (b, a) in enumerate(secs):
        g = int(b[0] * s + 0.5)
        co[5 * j] = g
        co[5 * j + 1] = g * 2 if b[1] > 0 else -2 * g
        co[5 * j + 2] = g
        for k in (0, 1):
            v = a[k]
            co[5 * j + 3 + k] = int(v * s + (0.5 if v >= 0 else -0.5))
    return co


def response(co, f, fs):
    """Gain of the quantized cascade at f Hz (for calibration and tests)."""
    w = 2 * math.pi * f / fs
    s = float(1 << Q)
    g = 1.0
    for j in range(NSEC):
        b = (co[5 * j] / s, co[5 * j + 1] / s, co[5 * j + 2] / s)
        a = (co[5 * j + 3] / s, co[5 * j + 4] / s)
        g *= _section_resp(b, a, w)
    return g


def iec_db(f):
    """The analogue A-weighting curve in dB (IEC 61672-1 formula)."""
    f2 = f * f
    ra = (F4 ** 2 * f2 * f2) / ((f2 + F1 ** 2) * math.sqrt((f2 + F2 ** 2) * (f2 + F3 ** 2)) * (f2 + F4 ** 2))
    return 20 * math.log10(ra) + 2.0


def _kernel(buf, n, step, st, co, acc):
    # buf: int16 items, every step-th one used (step 2 + offset 1 picks the
    # high halves of 32-bit I2S slots); st: 6 ints per section
    # (x1 x2 y1 y2 e1 e2); co: 5 Q13 ints per section; acc: [lo, hi].
    lo = acc[0]
    hi = acc[1]
    i = 0
    while i < n:
        x = ((buf[i * step] & 0xFFFF) ^ 0x8000) - 0x8000
        j = 0
        while j < 3:
            s = j * 6
            c = j * 5
            t = (co[c] * x + co[c + 1] * st[s] + co[c + 2] * st[s + 1]
                 - co[c + 3] * st[s + 2] - co[c + 4] * st[s + 3]
                 + 2 * st[s + 4] - st[s + 5])
            y = t >> 13
            st[s + 5] = st[s + 4]
            st[s + 4] = t - (y << 13)
            st[s + 1] = st[s]
            st[s] = x
            st[s + 3] = st[s + 2]
            st[s + 2] = y
            x = y
            j += 1
        lo += x * x
        if lo >= 0x20000000:
            hi += lo >> 29
            lo = lo & 0x1FFFFFFF
        i += 1
    acc[0] = lo
    acc[1] = hi


try:
    from ss.akern import kernel
except (ImportError, SyntaxError, NameError):
    kernel = _kernel


class AWeighting:
    """Streaming A-weighted energy of int16 blocks at sample rate fs."""

    def __init__(self, fs):
        self.fs = fs
        self.co = quantize(design(fs))
        self.st = array("i", [0] * (6 * NSEC))
        self.acc = array("i", [0, 0])
        self.g1k = response(self.co, 1000.0, fs)

    def reset(self):
        for i in range(6 * NSEC):
            self.st[i] = 0

    def energy(self, samples, n, step=1):
        """Sum of the squared A-weighted samples of one block (float)."""
        self.acc[0] = 0
        self.acc[1] = 0
        kernel(samples, n, step, self.st, self.co, self.acc)
        return self.acc[1] * 536870912.0 + self.acc[0]
