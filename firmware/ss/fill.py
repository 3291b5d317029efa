# Bin fill level arithmetic (pure, integer).

import math


def median(a, n):
    """Median of the first n items of array a, sorting them in place (no allocation)."""
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    if n & 1:
        return a[n // 2]
    return (a[n // 2 - 1] + a[n // 2]) // 2


def sound_speed10(temp_c100):
    """Speed of sound in air in 0.1 m/s for a temperature in 0.01 degC.

    c = 331.3 + 0.606 * T  (dry air, good to 0.2 % over -20..60 degC).
    """
    return 3313 + (606 * temp_c100 + 5000) // 10000


def echo_mm(echo_us, c10):
    """Round-trip echo time (us) -> distance in mm at sound speed c10 (0.1 m/s)."""
    return (echo_us * c10 + 10000) // 20000


def fill_milli(dist_mm, empty_mm, full_mm):
    """Fill fraction in thousandths: 0 at the empty depth, 1000 at the full mark.

    Clamped to the contract's range (-1 .. 2); a reading past the floor or
    above the sensor's blind zone still reports, so a bad mount is visible.
    """
    span = empty_mm - full_mm
    f = ((empty_mm - dist_mm) * 1000 + span // 2) // span
    if f < -1000:
        return -1000
    if f > 2000:
        return 2000
    return f


def tilt_deg10(ax, ay, az):
    """Angle between the sensor's z axis and gravity, in 0.1 degree (0..1800)."""
    h = math.sqrt(ax * ax + ay * ay)
    return int(math.degrees(math.atan2(h, az)) * 10 + 0.5)
