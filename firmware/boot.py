# Runs at every reset and wake, before main.py.  Keep it tiny: no Wi-Fi here.
import gc
import micropython

micropython.alloc_emergency_exception_buf(100)
gc.threshold(16384)       # collect early, keep fragmentation of the small heap down

try:                      # OTA: run the active bundle (/a or /b), fall back after failed boots
    from ss.ota import boot as _ota_boot
    _ota_boot()
    del _ota_boot
except Exception as e:    # never keep a node from booting
    print("ota:", e)
gc.collect()
