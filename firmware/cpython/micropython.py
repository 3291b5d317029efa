"""CPython stand-in for MicroPython's ``micropython`` module (host side only).

The firmware's pure modules say ``from micropython import const`` exactly as on a
device.  Put ``firmware/cpython`` on ``sys.path`` to import them under CPython
(tests, simulators); it never goes onto a device (it is not in the manifest).
"""


def const(x):
    return x


def native(f):
    return f


def viper(f):
    return f


def mem_info(*args):
    pass


def opt_level(*args):
    return 0


def alloc_emergency_exception_buf(n):
    pass


def heap_lock():
    return 0


def heap_unlock():
    return 0
