# Native A-weighting kernel: the body of ss.aweight._kernel under the viper
# emitter (32-bit machine integers, no allocation).  Keep the two identical;
# tests/test_firmware_pure.py compares them.  Ports without the native
# emitter fail to import this module and use the plain version.

import micropython


@micropython.viper
def kernel(buf: ptr16, n: int, step: int, st: ptr32, co: ptr32, acc: ptr32):
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
