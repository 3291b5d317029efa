# I2S MEMS microphone (InvenSense INMP441, TDK ICS-43434): 24-bit samples,
# left-justified in 32-bit slots, mono.
#
# The buffer is an array of int16 twice as long as the block: each slot's
# high half (odd index, little-endian) carries the top 16 bits of the sample,
# which the A-weighting kernel reads with step 2 from ``view`` (a memoryview
# starting at item 1).  Audio never leaves this buffer: only levels do.

from array import array


class I2SMic:
    def __init__(self, i2s, block):
        self.i2s = i2s
        self.block = block
        self.buf = array("h", [0] * (2 * block))
        self.view = memoryview(self.buf)[1:]
        self.errors = 0

    def read_block(self):
        """Fill the buffer with one block (blocking); returns the sample count."""
        n = self.i2s.readinto(self.buf)
        return (n or 0) // 4

    def deinit(self):
        self.i2s.deinit()
