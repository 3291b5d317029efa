# Runs at every reset and wake, before main.py.  Keep it tiny: no Wi-Fi here.
import gc
import micropython

micropython.alloc_emergency_exception_buf(100)
gc.threshold(16384)       # collect early, keep fragmentation of the small heap down
