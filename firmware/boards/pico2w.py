# Board profile: Raspberry Pi Pico 2 W (RP2350, Cortex-M33 with single-precision FPU).
# Same pinout as the Pico W.  Installed on the device as /board.py.

NAME = "pico2w"
ARCH = "armv7emsp"         # mpy-cross -march for the RP2350's ARM cores
SLEEP = "light"
WDT_MAX_MS = 8300

I2C = {"id": 0, "scl": 5, "sda": 4, "freq": 400000}
UART_PM = {"id": 1, "tx": 8, "rx": 9, "baud": 9600}
UART_RANGE = {"id": 0, "tx": 0, "rx": 1, "baud": 9600}
UART_GPS = {"id": 0, "tx": 0, "rx": 1, "baud": 9600}
TRIG = 14
ECHO = 15
PMS_SET = 22
I2S = {"id": 0, "sck": 16, "ws": 17, "sd": 18}
VBAT = {"pin": 29, "ratio": 3.0}
LED = "LED"


def vbat_prepare(on):
    import machine
    if on:
        machine.Pin(25, machine.Pin.OUT, value=1)
        machine.Pin(29, machine.Pin.IN, pull=None)
    else:
        machine.Pin(29, machine.Pin.ALT, pull=machine.Pin.PULL_DOWN, alt=7)
