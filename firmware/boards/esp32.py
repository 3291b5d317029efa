# Board profile: ESP32-WROOM-32 / ESP32-S3 (MicroPython "ESP32_GENERIC[_S3]").
# Installed on the device as /board.py.  Pins are GPIO numbers; change them
# here, not in the drivers.

NAME = "esp32"
ARCH = "xtensawin"         # mpy-cross -march for ESP32 and ESP32-S3
SLEEP = "deep"             # deep sleep between wakes; state in RTC memory
WDT_MAX_MS = 60000

I2C = {"id": 0, "scl": 22, "sda": 21, "freq": 400000}
UART_PM = {"id": 1, "tx": 4, "rx": 5, "baud": 9600}        # PMS5003 / SDS011
UART_RANGE = {"id": 2, "tx": 17, "rx": 16, "baud": 9600}   # A02YYUW
UART_GPS = {"id": 2, "tx": 17, "rx": 16, "baud": 9600}     # road node: GPS instead
TRIG = 25                  # JSN-SR04T trigger
ECHO = 26                  # JSN-SR04T echo (through a 5 V -> 3.3 V divider)
PMS_SET = 27               # PMS5003 SET (high = run)
I2S = {"id": 0, "sck": 14, "ws": 15, "sd": 32}             # INMP441 / ICS-43434
VBAT = {"pin": 35, "ratio": 2.0, "atten": True}                         # ADC1 only (ADC2 clashes with Wi-Fi)
LED = 2
