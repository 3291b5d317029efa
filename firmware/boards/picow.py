# Board profile: Raspberry Pi Pico W (RP2040, CYW43439 Wi-Fi).
# Installed on the device as /board.py.

NAME = "picow"
ARCH = "armv6m"            # Cortex-M0+
SLEEP = "light"            # lightsleep between wakes; state stays in RAM
WDT_MAX_MS = 8300          # RP2040 watchdog limit is 8.3 s

I2C = {"id": 0, "scl": 5, "sda": 4, "freq": 400000}
UART_PM = {"id": 1, "tx": 8, "rx": 9, "baud": 9600}
UART_RANGE = {"id": 0, "tx": 0, "rx": 1, "baud": 9600}
UART_GPS = {"id": 0, "tx": 0, "rx": 1, "baud": 9600}
TRIG = 14
ECHO = 15
PMS_SET = 22
I2S = {"id": 0, "sck": 16, "ws": 17, "sd": 18}             # ws must be sck + 1 (PIO)
VBAT = {"pin": 29, "ratio": 3.0}                           # VSYS/3 on ADC3
LED = "LED"


def vbat_prepare(on):
    # GPIO29 doubles as the CYW43 SPI clock: park the Wi-Fi chip's chip select
    # (GPIO25) high and make 29 an analogue input for the read, then restore.
    import machine
    if on:
        machine.Pin(25, machine.Pin.OUT, value=1)
        machine.Pin(29, machine.Pin.IN, pull=None)
    else:
        machine.Pin(29, machine.Pin.ALT, pull=machine.Pin.PULL_DOWN, alt=7)
