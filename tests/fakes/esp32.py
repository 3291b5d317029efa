# Fake ``esp32``: the two OTA app partitions (ota_0, ota_1) and the
# bootloader's rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE), enough for
# esp32.Partition as MicroPython has it.  Flash is emulated honestly: a write
# can only clear bits, so writing without erasing first corrupts the data.
#
# The tests drive resets through bootloader(): it picks the partition to run
# the way the ESP-IDF bootloader does -- a freshly set image ("new") runs
# once as "pending"; if it is still pending at the next reset (nobody called
# mark_app_valid_cancel_rollback) it is "aborted" and the other one runs.

SIZE = 0x40000            # per app partition (a real one is 0x180000; kept small here)
BLOCK = 4096

flash = {"ota_0": None, "ota_1": None}
ota_state = {"ota_0": "valid", "ota_1": "undefined"}
boot_label = "ota_0"
running = "ota_0"
log = []                  # ("set_boot", label) / ("valid", label) / ("boot", label) / ("rollback", label)


def _mem(label):
    m = flash[label]
    if m is None:
        m = flash[label] = bytearray(b"\xff" * SIZE)
    return m


def image(label, n=None):
    """The first n bytes of a partition (tests)."""
    m = _mem(label)
    return bytes(m if n is None else m[:n])


def bootloader():
    """One reset as the second-stage bootloader sees it; returns the label that runs."""
    global running, boot_label
    lab = boot_label
    st = ota_state[lab]
    if st == "new":
        ota_state[lab] = "pending"
        running = lab
    elif st == "pending":
        ota_state[lab] = "aborted"
        other = "ota_1" if lab == "ota_0" else "ota_0"
        log.append(("rollback", other))
        boot_label = other
        running = other
    else:
        running = lab
    log.append(("boot", running))
    return running


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=BLOCK):
        if id == Partition.RUNNING:
            id = running
        elif id == Partition.BOOT:
            id = boot_label
        if id not in flash:
            raise ValueError("partition not found")
        self.label = id
        self.block_size = block_size

    def __repr__(self):
        return "<Partition %s>" % self.label

    def info(self):
        sub = 0x10 if self.label == "ota_0" else 0x11
        off = 0x10000 if self.label == "ota_0" else 0x10000 + SIZE
        return (Partition.TYPE_APP, sub, off, SIZE, self.label, False)

    def readblocks(self, block, buf, offset=0):
        m = _mem(self.label)
        a = block * self.block_size + offset
        if a + len(buf) > SIZE:
            raise OSError(22)
        buf[:] = m[a:a + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        m = _mem(self.label)
        a = block * self.block_size
        if offset is None:                     # simple interface: erase first
            e = (len(buf) + BLOCK - 1) // BLOCK * BLOCK
            if a + e > SIZE:
                raise OSError(22)
            for i in range(a, a + e):
                m[i] = 0xFF
        else:
            a += offset
        if a + len(buf) > SIZE:
            raise OSError(22)
        for i in range(len(buf)):
            m[a + i] &= buf[i]                  # NOR flash: bits only go 1 -> 0

    def ioctl(self, op, arg):
        if op == 4:
            return SIZE // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            m = _mem(self.label)
            a = arg * self.block_size
            for i in range(a, a + self.block_size):
                m[i] = 0xFF
            return 0
        return None

    def set_boot(self):
        # esp_ota_set_boot_partition checks the image; ours: the ESP image magic
        global boot_label
        if _mem(self.label)[0] != 0xE9:
            raise OSError(-5379)               # ESP_ERR_OTA_VALIDATE_FAILED
        boot_label = self.label
        ota_state[self.label] = "new"
        log.append(("set_boot", self.label))

    def get_next_update(self):
        return Partition("ota_1" if running == "ota_0" else "ota_0")

    @staticmethod
    def mark_app_valid_cancel_rollback():
        ota_state[running] = "valid"
        log.append(("valid", running))

    @staticmethod
    def find(type=0, subtype=255, label=None):
        return [Partition(lab) for lab in ("ota_0", "ota_1") if label in (None, lab)]
