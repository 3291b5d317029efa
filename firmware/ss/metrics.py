# Metric ids of contract v1 as compile-time constants (checked against
# contract.v1.METRICS by the tests), so the sampling code stores small ints.

from micropython import const

DISTANCE = const(1)
FILL = const(2)
TEMP = const(3)
TILT = const(4)
PM1 = const(10)
PM25 = const(11)
PM10 = const(12)
RH = const(13)
CO2 = const(14)
LAEQ = const(20)
LAMAX = const(21)
L10 = const(22)
L90 = const(23)
BUMP_G = const(30)
BUMP_DUR = const(31)
SPEED = const(32)
LAT = const(33)
LON = const(34)
BAT_V = const(40)
RSSI = const(41)
UPTIME = const(42)
BUFFERED = const(43)
ERRORS = const(44)
DROPPED = const(45)
