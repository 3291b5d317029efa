"""Energy model of StreetSense nodes: per-wake energy and battery life.

A node "samples often, transmits rarely".  Each day is modelled as

* **sleep** between wakes: board sleep current + always-on sensors + regulator /
  timer / load-switch quiescent current + leakage;
* **sample wakes** (``samples_per_hour * 24``): boot, sensor warm-up and
  measurement, processing;
* **radio sessions** (``tx_per_day`` scheduled + ``threshold_events_per_day``
  extra): Wi-Fi association, DHCP, TLS + MQTT connect, publish, radio off.
  Scheduled transmissions ride on a sample wake; each threshold event is
  counted as an extra, out-of-schedule wake (boot + processing + radio), which
  is the conservative case (a lid-open interrupt, for instance);
* **continuous** kinds (noise, road) never sleep: the board runs all day and
  radio sessions are added on top.

Currents are stated at the voltage the source states them at (a board's rail, a
sensor's supply) and brought back to the battery as energy with a conversion
efficiency: ``E[mJ] = I[mA] * V[V] * t[s] / efficiency``, and battery charge
``Q[uAh] = E[mJ] / V_battery / 3.6``.

Battery life = usable capacity / (daily consumption * 365.25 + self-discharge),
where usable capacity = nominal * usable fraction * temperature factor.

**Sources.** Every number below carries a comment naming where it comes from:

* ``datasheet``: read from the named datasheet and table;
* ``datasheet*``: from the named vendor document but *not re-checked* against a
  copy while writing this model; check before relying on it;
* ``literature``: measured by someone else (issue thread, blog) on real boards;
* ``assumption``: an engineering estimate; there is no hardware here.

**Awake times are assumptions** (boot, Wi-Fi association, DHCP, TLS/MQTT,
publish), except sensor timings that a datasheet fixes (PMS5003 30 s warm-up).
Measured phase durations and currents from a real node are plugged in with a
JSON file (see :func:`load_overrides`, ``--phases FILE``); overridden figures
are reported with basis ``measured``.

Everything here is pure (no I/O) except :func:`load_overrides` and
:func:`energy_command`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

T = TypeVar("T")

Basis = Literal["datasheet", "datasheet*", "literature", "assumption", "measured"]

#: Radio-session phases, in order.
RADIO_PHASES: tuple[str, ...] = ("wifi_assoc", "dhcp", "tls_mqtt_connect", "publish", "radio_off")

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.25
#: The battery-life target for battery nodes (project brief).
TARGET_YEARS = 5.0


# --------------------------------------------------------------------------- #
# Data model
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of time at a (mean) current.

    ``current_ma`` is stated at the owner's voltage (board ``supply_v`` or sensor
    ``supply_v``).  ``basis`` says where the duration and the current come from.
    """

    duration_s: float
    current_ma: float
    duration_basis: Basis
    current_basis: Basis

    def charge_mas(self) -> float:
        """Charge at the owner's voltage, mA*s."""
        return self.duration_s * self.current_ma


ZERO_PHASE = Phase(0.0, 0.0, "assumption", "assumption")


@dataclass(frozen=True, slots=True)
class Board:
    """A controller board as built for StreetSense (module + regulator + gating).

    ``supply_v`` and ``efficiency`` convert its currents to battery energy.  For
    boards whose figures were measured at the board input through the board's
    own regulator (Pico W at VSYS = 5 V), ``efficiency`` is 1.0 and the figure is
    scaled to the battery as constant power (assumption: the on-board
    buck-boost draws about constant power over 3.6-5 V).
    """

    key: str
    title: str
    supply_v: float
    efficiency: float
    sleep_ua: float  # between wakes, at supply_v (0 if power is cut)
    gate_ua: float  # between wakes, at the battery: regulator Iq, timer, switch leakage, buffer leakage
    wait_ma: float  # MCU parked (light sleep) while a slow sensor warms up, at supply_v
    active_ma: float  # CPU running, radio off, at supply_v
    boot: Phase  # wake -> application code running
    radio: Mapping[str, Phase]  # RADIO_PHASES -> Phase
    power_gated: bool  # every wake is a cold boot (TPL5110 / load switch)
    notes: str = ""

    def radio_phase(self, name: str) -> Phase:
        return self.radio.get(name, ZERO_PHASE)


@dataclass(frozen=True, slots=True)
class Sensor:
    """A sensor with its power behaviour."""

    key: str
    title: str
    supply_v: float
    efficiency: float  # battery -> sensor supply conversion
    sleep_ua: float  # drawn between wakes (0 if its rail is switched off)
    warmup: Phase  # powered, output not yet valid
    measure: Phase  # reading (MCU active)
    continuous_ma: float = 0.0  # drawn all day on continuous kinds
    mcu_waits: bool = False  # MCU light-sleeps (board.wait_ma) during warm-up instead of staying active
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    """A device kind with its default cadence and supply."""

    key: str
    title: str
    sensors: tuple[str, ...]
    samples_per_hour: float
    tx_per_day: float
    threshold_events_per_day: float
    continuous: bool
    supply: str
    boards: tuple[str, ...]
    cadences: tuple[tuple[float, float], ...]  # (samples_per_hour, tx_per_day) shown by default
    process_s: float  # CPU time per sample wake to filter, encode and store readings (assumption)
    battery_powered: bool = True


@dataclass(frozen=True, slots=True)
class Battery:
    key: str
    title: str
    capacity_mah: float
    nominal_v: float
    usable_fraction: float  # passivation / voltage delay under Wi-Fi pulses, end-of-life cut-off
    self_discharge_per_year: float  # fraction of nominal capacity per year at +20 C
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Catalog:
    boards: Mapping[str, Board]
    sensors: Mapping[str, Sensor]
    kinds: Mapping[str, Kind]
    batteries: Mapping[str, Battery]
    measured: frozenset[str] = field(default_factory=frozenset)  # "boards.esp32.boot", ... overridden paths


# --------------------------------------------------------------------------- #
# Constants: boards
# --------------------------------------------------------------------------- #

# ESP32-WROOM-32E on the StreetSense carrier: TI TPS62840 buck (60 nA Iq, 100 % mode
# so the rail follows the cell when it sags below 3.3 V), no USB-UART bridge, no LED.
# MicroPython, CPU at its default 160 MHz.
ESP32 = Board(
    key="esp32",
    title="ESP32-WROOM-32E, deep sleep",
    supply_v=3.3,  # datasheet: ESP32 Series Datasheet v5.2 sec. 5.4, currents measured at 3.3 V
    efficiency=0.90,  # assumption: nano-Iq buck at mA..100s-mA loads (TPS62840 efficiency curves, datasheet*)
    # datasheet: ESP32 Series Datasheet v5.2, Table 4-2 "Power Consumption by Power Modes",
    # Deep-sleep "RTC timer + RTC memory" = 10 uA (chip only), + 1 uA assumption for board leakage
    # (pull-ups idle high, MLCC and ESD-diode leakage).
    sleep_ua=10.0 + 1.0,
    # TPS62840 Iq 0.06 uA (TI TPS62840 datasheet, Features: "60-nA operating quiescent current", datasheet*)
    # + 1.0 uA leakage of the pulse buffer capacitor bank (assumption; see hardware/README.md power design).
    gate_ua=0.06 + 1.0,
    wait_ma=0.8,  # datasheet: ESP32 Series Datasheet v5.2, Table 4-2, Light-sleep = 0.8 mA
    # datasheet range, assumed point: Table 4-2 Modem-sleep 160 MHz dual-core 27-44 mA; 40 mA taken
    # because MicroPython keeps both the interpreter and flash busy.
    active_ma=40.0,
    # assumption: deep-sleep wake -> ROM -> bootloader -> MicroPython init -> main.py imported.
    boot=Phase(0.50, 40.0, "assumption", "datasheet"),
    radio={
        # assumption: association with BSSID + channel cached in RTC memory (no full scan); mostly
        # RX-listening 95-100 mA with TX bursts at 240 mA (Table 5-4, 802.11b 19.5 dBm) -> 115 mA mean.
        "wifi_assoc": Phase(1.20, 115.0, "assumption", "assumption"),
        # assumption: DHCP DISCOVER..ACK round trips; 0 s with a static address. RX-dominated.
        "dhcp": Phase(0.40, 105.0, "assumption", "assumption"),
        # assumption: TCP + TLS 1.2 ECDHE handshake in mbedTLS at 160 MHz + MQTT CONNECT/CONNACK.
        "tls_mqtt_connect": Phase(1.50, 110.0, "assumption", "assumption"),
        # assumption: one SenML batch of a few hundred bytes, QoS 1, wait for PUBACK.
        "publish": Phase(0.30, 120.0, "assumption", "assumption"),
        # assumption: MQTT DISCONNECT, wlan.active(False).
        "radio_off": Phase(0.10, 60.0, "assumption", "assumption"),
    },
    power_gated=False,
    notes="Dev boards (DevKitC) draw mA in deep sleep (AMS1117 LDO, USB-UART): not for battery nodes.",
)

# ESP32-S3-WROOM-1 on the same carrier.
ESP32S3 = Board(
    key="esp32s3",
    title="ESP32-S3-WROOM-1, deep sleep",
    supply_v=3.3,  # datasheet: ESP32-S3 Series Datasheet v2.2 sec. 5.6, 3.3 V supply
    efficiency=0.90,  # assumption, as ESP32
    # datasheet: ESP32-S3 Series Datasheet v2.2, Table 5-10 "Current Consumption in Low-Power Modes",
    # Deep-sleep "RTC memory and RTC peripherals are powered up" = 8 uA; + 1 uA board leakage (assumption).
    sleep_ua=8.0 + 1.0,
    gate_ua=0.06 + 1.0,  # as ESP32 (TPS62840 Iq datasheet*, buffer leakage assumption)
    wait_ma=0.24,  # datasheet: ESP32-S3 Series Datasheet v2.2, Table 5-10, Light-sleep = 240 uA
    # datasheet: Table 5-9 Modem-sleep 160 MHz, single core running, peripheral clocks on = 54.6 mA;
    # 45 mA assumed (some peripheral clocks gated).
    active_ma=45.0,
    boot=Phase(0.50, 45.0, "assumption", "datasheet"),  # assumption as ESP32
    radio={
        # Table 5-7 (datasheet): RX 88 mA, TX 802.11b 21 dBm 340 mA peak; means below are assumptions.
        "wifi_assoc": Phase(1.20, 115.0, "assumption", "assumption"),
        "dhcp": Phase(0.40, 100.0, "assumption", "assumption"),
        "tls_mqtt_connect": Phase(1.20, 105.0, "assumption", "assumption"),  # faster LX7 core: assumption
        "publish": Phase(0.30, 120.0, "assumption", "assumption"),
        "radio_off": Phase(0.10, 60.0, "assumption", "assumption"),
    },
    power_gated=False,
)

# Raspberry Pi Pico W radio session and activity.  No datasheet figure for the Pico W Wi-Fi
# current was available while writing this; all means are assumptions at VSYS = 5 V.
_PICO_RADIO = {
    # assumption: includes CYW43439 firmware download on wlan.active(True) + association.
    "wifi_assoc": Phase(2.50, 60.0, "assumption", "assumption"),
    "dhcp": Phase(0.50, 55.0, "assumption", "assumption"),
    # assumption: software ECDHE on a Cortex-M0+ at 125 MHz is slower than on the ESP32.
    "tls_mqtt_connect": Phase(3.00, 55.0, "assumption", "assumption"),
    "publish": Phase(0.30, 60.0, "assumption", "assumption"),
    "radio_off": Phase(0.10, 35.0, "assumption", "assumption"),
}
# literature: tomjorquera/pico-micropython-lowpower-workaround issue #17 (Pico W, MicroPython 1.22.1,
# 5 V): 30-33 mA while running; 30 mA taken as "CPU running, radio off" at VSYS = 5 V.
_PICO_ACTIVE_MA = 30.0

# Bare Pico W: MicroPython machine.lightsleep() with the CYW43439 left powered (WL_ON high).
PICO_W = Board(
    key="pico_w",
    title="Pico W, lightsleep, CYW43 powered",
    supply_v=5.0,  # literature figures below were measured at VSYS/VBUS = 5 V
    efficiency=1.0,  # figures include the on-board RT6154 buck-boost; constant-power scaling (assumption)
    # literature: adafruit/circuitpython issue #7047 (Pico W light sleep about 21 mA, deep sleep 17 mA,
    # Pico W vs Pico); tomjorquera/pico-micropython-lowpower-workaround #17 reports 30-33 mA for
    # MicroPython lightsleep on a Pico W. 21 mA taken: the optimistic end, and still tens of mA at the cell.
    sleep_ua=21_000.0,
    gate_ua=1.0,  # assumption: buffer-capacitor leakage; no regulator of ours in the path
    wait_ma=21.0,  # same state as sleep
    active_ma=_PICO_ACTIVE_MA,
    boot=Phase(0.05, _PICO_ACTIVE_MA, "assumption", "literature"),  # assumption: resume from lightsleep
    radio=_PICO_RADIO,
    power_gated=False,
    notes="No Pico W datasheet figure for sleep with the radio chip powered; measurements vary by firmware.",
)

# Pico W with WL_ON (GP23) driven low before lightsleep: the best figure found in the literature.
PICO_W_WL_OFF = replace(
    PICO_W,
    key="pico_w_wl_off",
    title="Pico W, lightsleep, WL_ON low",
    # literature: ghubcoder/micropython-pico-deepsleep issue #8 (Pico W, lightsleep/deepsleep with the
    # wireless chip off: 1.2 mA); tomjorquera/... issue #17 comment: "close to 1 mA ... WIFI disabled".
    # micropython/micropython issue #16181: lightsleep(ms) regression on Pico W in v1.24 - pin the firmware.
    sleep_ua=1_200.0,
    wait_ma=1.2,
    # assumption: resume + re-powering the CYW43 costs another firmware download, counted in wifi_assoc.
    notes="Needs a MicroPython version whose rp2 lightsleep works on Pico W (v1.24.0 regression, #16181).",
)

# Pico W with its power cut between wakes by a TI TPL5110 timer driving a P-MOSFET in series with VSYS.
PICO_W_TPL5110 = replace(
    PICO_W,
    key="pico_w_tpl5110",
    title="Pico W + TPL5110 power cut",
    sleep_ua=0.0,  # board unpowered between wakes
    # TPL5110 35 nA typ (TI TPL5110 datasheet SNAS650, 6.5 Electrical Characteristics, supply
    # current, datasheet*)
    # + 0.5 uA P-MOSFET off-state leakage (assumption; datasheet IDSS max is usually 1 uA at 25 C)
    # + 1.0 uA buffer-capacitor leakage (assumption).  Every sensor sits on the cut rail (lid-open
    # wake comes from a passive tilt switch on the TPL5110 manual power-on input), so sensor sleep
    # currents are not counted for power-gated boards (see sleep_power_uw).
    gate_ua=0.035 + 0.5 + 1.0,
    wait_ma=1.2,  # assumption: a cut-power node still light-sleeps during a long warm-up (WL_ON low)
    # assumption: cold boot from VSYS on -> MicroPython -> main.py, + reading the batch from flash.
    boot=Phase(1.00, _PICO_ACTIVE_MA, "assumption", "literature"),
    power_gated=True,
    notes="TPL5110 interval set by one resistor, 100 ms to 7200 s (datasheet*); RAM is lost: batch in flash.",
)

BOARDS: dict[str, Board] = {b.key: b for b in (ESP32, ESP32S3, PICO_W, PICO_W_WL_OFF, PICO_W_TPL5110)}


# --------------------------------------------------------------------------- #
# Constants: sensors
# --------------------------------------------------------------------------- #

SENSORS: dict[str, Sensor] = {
    s.key: s
    for s in (
        Sensor(
            key="a02yyuw",
            title="DFRobot A02YYUW (SEN0311) ultrasonic, UART, IP67",
            supply_v=3.3,
            efficiency=0.90,  # assumption: on the 3.3 V rail
            sleep_ua=0.0,  # its rail is switched off by a P-MOSFET between wakes
            # assumption: settle after power-on before the first valid frame.
            warmup=Phase(0.20, 8.0, "assumption", "datasheet*"),
            # assumption: 7 frames for a median (firmware CALIBRATION["pings"] = 7; about 100-150 ms a
            # frame, DFRobot SEN0311 wiki "response time 100 ms", datasheet*); current: DFRobot SEN0311
            # product wiki specification "average current <= 8 mA" (datasheet*).
            measure=Phase(1.00, 8.0, "assumption", "datasheet*"),
        ),
        Sensor(
            key="jsn_sr04t",
            title="JSN-SR04T ultrasonic (5 V, trig/echo)",
            supply_v=5.0,
            efficiency=0.85,  # assumption: 5 V boost from the cell
            sleep_ua=0.0,  # switched off between wakes
            warmup=Phase(0.20, 8.0, "assumption", "assumption"),
            # assumption: working current of the order of 8-30 mA depending on board version (vendor
            # sheets disagree; no single datasheet figure) -> 30 mA taken, conservative.
            measure=Phase(0.50, 30.0, "assumption", "assumption"),
        ),
        Sensor(
            key="sht3x",
            title="Sensirion SHT31-DIS temperature/RH, I2C",
            supply_v=3.3,
            efficiency=0.90,
            # datasheet*: Sensirion SHT3x-DIS datasheet, Table "Electrical specifications": idle 0.2 uA typ,
            # measuring 600 uA typ, high-repeatability measurement 15 ms max. Always on (shares the I2C bus
            # with the wake accelerometer, so it cannot be switched off without back-powering it).
            sleep_ua=0.2,
            warmup=ZERO_PHASE,
            measure=Phase(0.015, 0.6, "datasheet*", "datasheet*"),
            continuous_ma=0.0017,  # datasheet*: same table, average at 1 measurement/s = 1.7 uA
        ),
        Sensor(
            key="lis3dh",
            title="ST LIS3DH accelerometer, lid-open/tilt wake, low-power 50 Hz",
            supply_v=3.3,
            efficiency=0.90,
            # datasheet*: ST LIS3DH datasheet (DocID17530), Table 4 "Mechanical/electrical characteristics",
            # current consumption in low-power mode at 50 Hz ODR = 6 uA. Always on: it wakes the MCU.
            sleep_ua=6.0,
            warmup=ZERO_PHASE,
            measure=Phase(0.01, 0.011, "assumption", "datasheet*"),  # read the tilt registers
        ),
        Sensor(
            key="pms5003",
            title="Plantower PMS5003 particulate sensor (fan), 5 V, UART",
            supply_v=5.0,
            efficiency=0.85,  # assumption: 5 V boost (battery) or 5 V from the lamp-post supply
            sleep_ua=0.0,  # 5 V rail switched off; SET-pin standby would be <= 200 uA (datasheet*)
            # datasheet*: Plantower PMS5003 data manual: "stable data should be got at least 30 seconds
            # after the sensor wakeup from the sleep mode because of the fan's performance"; active
            # current <= 100 mA (max) -> 100 mA used, conservative.
            warmup=Phase(30.0, 100.0, "datasheet*", "datasheet*"),
            measure=Phase(3.0, 100.0, "assumption", "datasheet*"),  # assumption: 3 passive-mode frames
            continuous_ma=100.0,
            mcu_waits=True,
        ),
        Sensor(
            key="inmp441",
            title="TDK InvenSense INMP441 I2S MEMS microphone",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.0,
            warmup=ZERO_PHASE,
            measure=ZERO_PHASE,
            # datasheet*: INMP441 datasheet (DS-INMP441-00), supply current 1.4 mA typ (normal mode).
            continuous_ma=1.4,
        ),
        Sensor(
            key="adxl345",
            title="Analog Devices ADXL345 accelerometer, 400 Hz ODR",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.1,  # datasheet*: ADXL345 datasheet, standby 0.1 uA
            warmup=ZERO_PHASE,
            measure=ZERO_PHASE,
            # datasheet*: ADXL345 datasheet, "Typical current consumption vs. data rate" (VS = 2.5 V),
            # 140 uA at 100-400 Hz.
            continuous_ma=0.14,
        ),
        Sensor(
            key="neo_m8n",
            title="u-blox NEO-M8N GNSS, continuous 1 Hz",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.0,
            warmup=ZERO_PHASE,
            measure=ZERO_PHASE,
            # datasheet*: u-blox NEO-M8 data sheet (UBX-15031086), power consumption: continuous tracking
            # is of the order of 25-35 mA at 3 V depending on constellations -> 35 mA, conservative.
            continuous_ma=35.0,
        ),
        # Alternatives the firmware supports (firmware/ss/config.py CHOICES); select them for a kind
        # with an overrides file: {"kinds": {"bin_fill": {"sensors": ["vl53l1x", "sht3x", "lis3dh"]}}}.
        Sensor(
            key="vl53l1x",
            title="ST VL53L1X time-of-flight ranger, I2C",
            supply_v=3.3,
            efficiency=0.90,
            # datasheet*: ST VL53L1X datasheet (DS12385), current consumption table: HW standby (XSHUT low)
            # a few uA -> 5 uA taken; active ranging about 16-18 mA average -> 18 mA taken. Kept powered
            # and put in HW standby by XSHUT (it shares the I2C bus, so it is not power-cut).
            sleep_ua=5.0,
            warmup=Phase(0.01, 18.0, "assumption", "datasheet*"),  # boot after XSHUT high (assumption)
            measure=Phase(0.35, 18.0, "assumption", "datasheet*"),  # 7 ranges x ~50 ms budget (assumption)
        ),
        Sensor(
            key="bme280",
            title="Bosch BME280 temperature/RH/pressure, I2C, forced mode",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.1,  # datasheet*: Bosch BME280 datasheet (BST-BME280-DS002), sleep current 0.1 uA
            warmup=ZERO_PHASE,
            # datasheet*: same datasheet, forced measurement with x1 oversampling about 10 ms; current
            # while measuring humidity 340 uA, pressure 714 uA -> 0.7 mA taken.
            measure=Phase(0.01, 0.7, "datasheet*", "datasheet*"),
        ),
        Sensor(
            key="sds011",
            title="Nova Fitness SDS011 particulate sensor (fan), 5 V, UART",
            supply_v=5.0,
            efficiency=0.85,
            sleep_ua=0.0,  # rail cut; its own sleep command leaves < 4 mA (datasheet*)
            # datasheet*: Nova SDS011 datasheet V1.3, working current 70 mA +/- 10 mA -> 80 mA taken;
            # a 30 s run-in after wake is assumed, as for the PMS5003.
            warmup=Phase(30.0, 80.0, "assumption", "datasheet*"),
            measure=Phase(3.0, 80.0, "assumption", "datasheet*"),
            continuous_ma=80.0,
            mcu_waits=True,
        ),
        Sensor(
            key="scd4x",
            title="Sensirion SCD41 CO2 (photoacoustic), single-shot",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.0,  # rail cut between wakes (power-down command also available)
            warmup=ZERO_PHASE,
            # assumption: single-shot measurement takes 5 s (Sensirion SCD4x datasheet, measure_single_shot,
            # datasheet*) at a mean of about 18 mA with peaks near 200 mA (datasheet*); size the supply
            # for the peak.
            measure=Phase(5.0, 18.0, "datasheet*", "assumption"),
            continuous_ma=18.0,
            mcu_waits=False,
        ),
        Sensor(
            key="ics43434",
            title="TDK InvenSense ICS-43434 I2S MEMS microphone",
            supply_v=3.3,
            efficiency=0.90,
            sleep_ua=0.0,
            warmup=ZERO_PHASE,
            measure=ZERO_PHASE,
            continuous_ma=0.49,  # datasheet*: ICS-43434 datasheet (DS-000069), supply current 490 uA typ
        ),
    )
}


# --------------------------------------------------------------------------- #
# Constants: kinds
# --------------------------------------------------------------------------- #

KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind(
            key="bin_fill",
            title="Bin fill (ultrasonic + temperature + lid/tilt accelerometer)",
            sensors=("a02yyuw", "sht3x", "lis3dh"),
            samples_per_hour=1.0,  # project brief: hourly sampling
            tx_per_day=4.0,  # project brief: 4 transmissions a day
            threshold_events_per_day=0.5,  # assumption: a fill threshold or lid/tilt alert every other day
            continuous=False,
            supply="battery",  # one D-size Li-SOCl2 cell
            boards=("esp32", "esp32s3", "pico_w", "pico_w_wl_off", "pico_w_tpl5110"),
            cadences=((1.0, 4.0), (4.0, 4.0), (1.0, 24.0)),
            process_s=0.05,  # assumption: median, fill fraction, append to RTC-memory/flash batch
        ),
        Kind(
            key="air",
            title="Air quality (PMS5003 + SHT31)",
            sensors=("pms5003", "sht3x"),
            samples_per_hour=4.0,  # assumption: every 15 minutes
            tx_per_day=24.0,  # assumption: hourly batches
            threshold_events_per_day=1.0,  # assumption
            continuous=False,
            supply="lamp-post mains",  # or solar + LiFePO4; the battery figure is for comparison only
            boards=("esp32", "pico_w"),
            cadences=((4.0, 24.0),),
            process_s=0.05,
            battery_powered=False,
        ),
        Kind(
            key="noise",
            title="Noise (I2S MEMS mic, A-weighted LAeq/LAmax/L10/L90 on the node)",
            sensors=("inmp441", "sht3x"),
            samples_per_hour=4.0,  # one LAeq/LAmax/L10/L90 set per 15-minute interval (assumption)
            tx_per_day=24.0,  # assumption
            threshold_events_per_day=2.0,  # assumption
            continuous=True,
            supply="lamp-post mains",  # continuous I2S sampling is not battery-viable
            boards=("esp32", "esp32s3", "pico_w"),
            cadences=((4.0, 24.0),),
            process_s=0.0,
            battery_powered=False,
        ),
        Kind(
            key="road",
            title="Road bump (vehicle accelerometer >= 100 Hz + GNSS)",
            sensors=("adxl345", "neo_m8n"),
            samples_per_hour=0.0,  # continuous sampling; events are batched
            tx_per_day=2.0,  # assumption: uploads over depot Wi-Fi at start and end of shift
            threshold_events_per_day=0.0,  # bump events are batched, not sent one by one
            continuous=True,
            supply="vehicle 12/24 V",  # ignition-switched, with hold-up for a clean shutdown
            boards=("esp32", "pico_w"),
            cadences=((0.0, 2.0),),
            process_s=0.0,
            battery_powered=False,
        ),
    )
}


# --------------------------------------------------------------------------- #
# Constants: batteries
# --------------------------------------------------------------------------- #

BATTERIES: dict[str, Battery] = {
    b.key: b
    for b in (
        Battery(
            key="d_19ah",
            title="D-size Li-SOCl2 bobbin cell, 19 Ah (e.g. EVE ER34615, Tadiran TL-5930)",
            capacity_mah=19_000.0,  # project brief; datasheet*: EVE ER34615 and Tadiran TL-5930 list 19 Ah
            nominal_v=3.6,  # datasheet*: Li-SOCl2 nominal cell voltage
            # assumption: 85 % usable - passivation/voltage delay under Wi-Fi pulses, end-of-life
            # cut-off at the 3.0 V the ESP32 needs under load (ESP32 VDD 3.0-3.6 V, datasheet).
            usable_fraction=0.85,
            # datasheet*: Saft LS series datasheets: self-discharge "< 1 % after 1 year of storage at +20 C".
            self_discharge_per_year=0.01,
        ),
        Battery(
            key="ls33600",
            title="Saft LS 33600 D-size Li-SOCl2, 17 Ah",
            # datasheet*: Saft LS 33600 datasheet, nominal capacity 17 Ah (at 3 mA, +20 C, 2.0 V cut-off).
            # HARDWARIO CHESTER power-management docs also give 17,000 mAh for it. The brief's "19 Ah"
            # matches 19 Ah D cells (d_19ah), not the LS 33600.
            capacity_mah=17_000.0,
            nominal_v=3.6,
            usable_fraction=0.85,  # assumption, as above
            self_discharge_per_year=0.01,  # datasheet*, as above
        ),
    )
}

DEFAULT_BATTERY = "d_19ah"
#: assumption: UK annual mean air temperature is about 10 C; a bin in the sun runs warmer by day.
DEFAULT_MEAN_TEMP_C = 10.0

# assumption: usable capacity of a bobbin Li-SOCl2 cell at low (mA) drain vs. mean temperature, read
# loosely from the shape of vendor capacity-vs-temperature curves; not a single datasheet table.
_TEMP_FACTOR_POINTS: tuple[tuple[float, float], ...] = (
    (-40.0, 0.50),
    (-20.0, 0.75),
    (0.0, 0.90),
    (20.0, 1.00),
    (60.0, 1.00),
)


def temperature_factor(mean_temp_c: float) -> float:
    """Fraction of capacity available at a mean operating temperature (piecewise linear)."""
    pts = _TEMP_FACTOR_POINTS
    if mean_temp_c <= pts[0][0]:
        return pts[0][1]
    for (t0, f0), (t1, f1) in itertools.pairwise(pts):
        if mean_temp_c <= t1:
            return f0 + (f1 - f0) * (mean_temp_c - t0) / (t1 - t0)
    return pts[-1][1]


#: A sensible service-life ceiling: beyond it enclosure seals, passivation and the cell's own
#: ageing are not covered by this model (assumption).
MAX_SERVICE_YEARS = 15.0

DEFAULT_CATALOG = Catalog(boards=BOARDS, sensors=SENSORS, kinds=KINDS, batteries=BATTERIES)


# --------------------------------------------------------------------------- #
# Arithmetic
# --------------------------------------------------------------------------- #


def energy_mj(current_ma: float, volts: float, seconds: float, efficiency: float = 1.0) -> float:
    """Energy drawn from the battery, mJ, for a load of ``current_ma`` at ``volts`` for ``seconds``."""
    if efficiency <= 0:
        raise ValueError("efficiency must be > 0")
    return current_ma * volts * seconds / efficiency


def mj_to_uah(mj: float, battery_v: float) -> float:
    """Battery charge in uAh for an energy in mJ at the battery voltage (mJ / V = mA*s; / 3.6 -> uAh)."""
    return mj / battery_v / 3.6


def _board_mj(board: Board, current_ma: float, seconds: float) -> float:
    return energy_mj(current_ma, board.supply_v, seconds, board.efficiency)


def _sensor_mj(sensor: Sensor, current_ma: float, seconds: float) -> float:
    return energy_mj(current_ma, sensor.supply_v, seconds, sensor.efficiency)


def sleep_power_uw(board: Board, sensors: Iterable[Sensor], battery: Battery) -> float:
    """Power drawn from the battery between wakes, uW (board sleep + sensors + gate/regulator).

    On a power-gated board every sensor is on the cut rail, so only the gate draws.
    """
    p = energy_mj(board.sleep_ua, board.supply_v, 1.0, board.efficiency)  # uA*V = uW
    if not board.power_gated:
        p += sum(energy_mj(s.sleep_ua, s.supply_v, 1.0, s.efficiency) for s in sensors)
    p += board.gate_ua * battery.nominal_v
    return p


@dataclass(frozen=True, slots=True)
class WakeBreakdown:
    """Energy of one sample wake, split by phase (mJ at the battery) and its duration."""

    phases_mj: Mapping[str, float]
    duration_s: float

    @property
    def total_mj(self) -> float:
        return sum(self.phases_mj.values())


def sample_wake(board: Board, sensors: Iterable[Sensor], process_s: float) -> WakeBreakdown:
    """One sample wake: boot, each sensor's warm-up and measurement (in turn), processing."""
    phases: dict[str, float] = {"boot": _board_mj(board, board.boot.current_ma, board.boot.duration_s)}
    t = board.boot.duration_s
    for s in sensors:
        if s.warmup.duration_s > 0:
            mcu_ma = board.wait_ma if s.mcu_waits else board.active_ma
            phases[f"{s.key}.warmup"] = _sensor_mj(s, s.warmup.current_ma, s.warmup.duration_s) + _board_mj(
                board, mcu_ma, s.warmup.duration_s
            )
            t += s.warmup.duration_s
        if s.measure.duration_s > 0:
            phases[f"{s.key}.measure"] = _sensor_mj(
                s, s.measure.current_ma, s.measure.duration_s
            ) + _board_mj(board, board.active_ma, s.measure.duration_s)
            t += s.measure.duration_s
    phases["process"] = _board_mj(board, board.active_ma, process_s)
    t += process_s
    return WakeBreakdown(phases, t)


def radio_session(board: Board) -> WakeBreakdown:
    """One transmission: association, DHCP, TLS + MQTT connect, publish, radio off."""
    phases = {
        name: _board_mj(board, board.radio_phase(name).current_ma, board.radio_phase(name).duration_s)
        for name in RADIO_PHASES
    }
    return WakeBreakdown(phases, sum(board.radio_phase(n).duration_s for n in RADIO_PHASES))


@dataclass(frozen=True, slots=True)
class EnergyResult:
    """Daily energy and battery life of one kind x board x cadence."""

    kind: str
    board: str
    battery: str
    supply: str
    battery_powered: bool
    continuous: bool
    samples_per_hour: float
    tx_per_day: float
    threshold_events_per_day: float
    mean_temp_c: float
    sleep_ua: float  # battery current between wakes
    sample_wake_mj: float
    sample_wake_uah: float
    sample_wake_s: float
    radio_session_mj: float
    radio_session_uah: float
    radio_session_s: float
    awake_s_per_day: float
    mah_per_day: float
    breakdown_mah_per_day: Mapping[str, float]
    average_ua: float
    average_mw: float
    usable_mah: float
    life_years: float
    target_years: float
    basis: Mapping[str, str]

    @property
    def meets_target(self) -> bool:
        return self.life_years >= self.target_years

    @property
    def life_years_capped(self) -> float:
        return min(self.life_years, MAX_SERVICE_YEARS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, rounded to the precision the inputs support (2-3 significant figures)."""
        return {
            "kind": self.kind,
            "board": self.board,
            "battery": self.battery,
            "supply": self.supply,
            "battery_powered": self.battery_powered,
            "continuous": self.continuous,
            "samples_per_hour": self.samples_per_hour,
            "tx_per_day": self.tx_per_day,
            "threshold_events_per_day": self.threshold_events_per_day,
            "mean_temp_c": self.mean_temp_c,
            "sleep_ua": _sig(self.sleep_ua),
            "sample_wake_mj": _sig(self.sample_wake_mj),
            "sample_wake_uah": _sig(self.sample_wake_uah),
            "sample_wake_s": _sig(self.sample_wake_s),
            "radio_session_mj": _sig(self.radio_session_mj),
            "radio_session_uah": _sig(self.radio_session_uah),
            "radio_session_s": _sig(self.radio_session_s),
            "awake_s_per_day": _sig(self.awake_s_per_day),
            "mah_per_day": _sig(self.mah_per_day),
            "breakdown_mah_per_day": {k: _sig(v) for k, v in self.breakdown_mah_per_day.items()},
            "average_ua": _sig(self.average_ua),
            "average_mw": _sig(self.average_mw),
            "usable_mah": _sig(self.usable_mah),
            "life_years": _sig(self.life_years),
            "life_days": _sig(self.life_years * DAYS_PER_YEAR),
            "life_years_capped": _sig(self.life_years_capped),
            "target_years": self.target_years,
            "meets_target": self.meets_target,
            "basis": dict(self.basis),
        }


def _sig(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant figures (the inputs carry no more)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, -math.floor(math.log10(abs(x))) + digits - 1)


def battery_life_years(
    mah_per_day: float, battery: Battery, mean_temp_c: float = DEFAULT_MEAN_TEMP_C
) -> float:
    """Years until usable capacity is spent by the load plus self-discharge."""
    usable = battery.capacity_mah * battery.usable_fraction * temperature_factor(mean_temp_c)
    per_year = mah_per_day * DAYS_PER_YEAR + battery.capacity_mah * battery.self_discharge_per_year
    return usable / per_year if per_year > 0 else math.inf


def estimate(
    kind: str,
    board: str,
    *,
    samples_per_hour: float | None = None,
    tx_per_day: float | None = None,
    threshold_events_per_day: float | None = None,
    battery: str = DEFAULT_BATTERY,
    mean_temp_c: float = DEFAULT_MEAN_TEMP_C,
    catalog: Catalog = DEFAULT_CATALOG,
    target_years: float = TARGET_YEARS,
) -> EnergyResult:
    """Daily energy and battery life of ``kind`` on ``board`` (cadence defaults: the kind's)."""
    k = _lookup(catalog.kinds, kind, "kind")
    b = _lookup(catalog.boards, board, "board")
    bat = _lookup(catalog.batteries, battery, "battery")
    sensors = [_lookup(catalog.sensors, s, "sensor") for s in k.sensors]
    sph = k.samples_per_hour if samples_per_hour is None else samples_per_hour
    tx = k.tx_per_day if tx_per_day is None else tx_per_day
    thr = k.threshold_events_per_day if threshold_events_per_day is None else threshold_events_per_day
    for name, v in (("samples_per_hour", sph), ("tx_per_day", tx), ("threshold_events_per_day", thr)):
        if v < 0 or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")

    v_bat = bat.nominal_v
    wake = sample_wake(b, sensors, k.process_s)
    radio = radio_session(b)
    samples_per_day = sph * 24.0
    sessions = tx + thr
    breakdown: dict[str, float] = {}

    if k.continuous:
        # The board never sleeps: CPU active + every sensor's continuous draw, all day; each radio
        # session adds its energy above the CPU-active baseline over its duration.
        cont_uw = energy_mj(b.active_ma * 1000.0, b.supply_v, 1.0, b.efficiency)
        cont_uw += sum(energy_mj(s.continuous_ma * 1000.0, s.supply_v, 1.0, s.efficiency) for s in sensors)
        cont_uw += b.gate_ua * v_bat
        radio_extra_mj = max(0.0, radio.total_mj - _board_mj(b, b.active_ma, radio.duration_s))
        breakdown["continuous"] = cont_uw * SECONDS_PER_DAY / 1000.0  # uW*s -> mJ
        breakdown["radio"] = sessions * radio_extra_mj
        awake_s = SECONDS_PER_DAY
        sleep_uw = 0.0
    else:
        extra_wakes = max(0.0, tx - samples_per_day) + thr  # out-of-schedule boots
        boot_only = b.boot.duration_s + k.process_s
        awake_s = samples_per_day * wake.duration_s + sessions * radio.duration_s + extra_wakes * boot_only
        if awake_s > SECONDS_PER_DAY:
            raise ValueError(f"cadence needs {awake_s:.0f} s awake per day, more than a day")
        sleep_uw = sleep_power_uw(b, sensors, bat)
        breakdown["sleep"] = sleep_uw * (SECONDS_PER_DAY - awake_s) / 1000.0
        breakdown["sampling"] = samples_per_day * wake.total_mj
        breakdown["radio"] = sessions * radio.total_mj
        breakdown["extra_wakes"] = extra_wakes * (
            _board_mj(b, b.boot.current_ma, b.boot.duration_s) + _board_mj(b, b.active_ma, k.process_s)
        )

    breakdown_mah = {name: mj_to_uah(mj, v_bat) / 1000.0 for name, mj in breakdown.items()}
    mah_day = sum(breakdown_mah.values())
    usable = bat.capacity_mah * bat.usable_fraction * temperature_factor(mean_temp_c)
    return EnergyResult(
        kind=k.key,
        board=b.key,
        battery=bat.key,
        supply=k.supply,
        battery_powered=k.battery_powered,
        continuous=k.continuous,
        samples_per_hour=sph,
        tx_per_day=tx,
        threshold_events_per_day=thr,
        mean_temp_c=mean_temp_c,
        sleep_ua=sleep_uw / v_bat,
        sample_wake_mj=0.0 if k.continuous else wake.total_mj,
        sample_wake_uah=0.0 if k.continuous else mj_to_uah(wake.total_mj, v_bat),
        sample_wake_s=0.0 if k.continuous else wake.duration_s,
        radio_session_mj=radio.total_mj,
        radio_session_uah=mj_to_uah(radio.total_mj, v_bat),
        radio_session_s=radio.duration_s,
        awake_s_per_day=awake_s,
        mah_per_day=mah_day,
        breakdown_mah_per_day=breakdown_mah,
        average_ua=mah_day * 1000.0 / 24.0,
        average_mw=mah_day * v_bat / 24.0,
        usable_mah=usable,
        life_years=battery_life_years(mah_day, bat, mean_temp_c),
        target_years=target_years,
        basis=_basis(catalog, b, sensors),
    )


def _basis(catalog: Catalog, board: Board, sensors: Iterable[Sensor]) -> dict[str, str]:
    """Where each awake-time and current figure comes from (datasheet/literature/assumption/measured)."""
    out: dict[str, str] = {}

    def put(path: str, ph: Phase) -> None:
        if ph.duration_s == 0 and ph.current_ma == 0:
            return
        tag = (
            "measured"
            if path in catalog.measured
            else f"time {ph.duration_basis}, current {ph.current_basis}"
        )
        out[path] = tag

    put(f"boards.{board.key}.boot", board.boot)
    for n in RADIO_PHASES:
        put(f"boards.{board.key}.radio.{n}", board.radio_phase(n))
    for s in sensors:
        put(f"sensors.{s.key}.warmup", s.warmup)
        put(f"sensors.{s.key}.measure", s.measure)
    for scalar in ("sleep_ua", "gate_ua", "wait_ma", "active_ma"):
        path = f"boards.{board.key}.{scalar}"
        if path in catalog.measured:
            out[path] = "measured"
    return out


def _lookup(table: Mapping[str, T], key: str, what: str) -> T:
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {what} {key!r}; known: {', '.join(sorted(table))}") from None


# --------------------------------------------------------------------------- #
# Measured overrides
# --------------------------------------------------------------------------- #

_BOARD_SCALARS = ("sleep_ua", "gate_ua", "wait_ma", "active_ma", "efficiency", "supply_v")
_SENSOR_SCALARS = ("sleep_ua", "continuous_ma", "efficiency", "supply_v")
_KIND_SCALARS = ("samples_per_hour", "tx_per_day", "threshold_events_per_day", "process_s")
_BATTERY_SCALARS = ("capacity_mah", "nominal_v", "usable_fraction", "self_discharge_per_year")
_PHASE_KEYS = ("duration_s", "current_ma")


def apply_overrides(catalog: Catalog, data: Mapping[str, Any]) -> Catalog:
    """Return ``catalog`` with measured values from ``data`` plugged in.

    ``data`` has the shape (every level optional)::

        {"boards":   {"esp32": {"sleep_ua": 14.2, "boot": {"duration_s": 0.42, "current_ma": 41},
                                "radio": {"wifi_assoc": {"duration_s": 0.9, "current_ma": 118}}}},
         "sensors":  {"a02yyuw": {"measure": {"duration_s": 0.5, "current_ma": 7.1}}},
         "kinds":    {"bin_fill": {"threshold_events_per_day": 2, "sensors": ["vl53l1x", "sht3x", "lis3dh"]}},
         "batteries": {"d_19ah": {"usable_fraction": 0.8}}}

    Unknown names or keys raise ``ValueError`` (a typo must not silently keep the assumption).
    Overridden figures are reported with basis ``measured``.
    """
    measured = set(catalog.measured)
    boards = dict(catalog.boards)
    sensors = dict(catalog.sensors)
    kinds = dict(catalog.kinds)
    batteries = dict(catalog.batteries)
    _check_keys(data, ("boards", "sensors", "kinds", "batteries", "comment", "source"), "top level")

    for key, spec in _items(data.get("boards", {}), "boards"):
        b = _lookup(boards, key, "board")
        _check_keys(spec, (*_BOARD_SCALARS, "boot", "radio", "comment", "source"), f"boards.{key}")
        changes: dict[str, Any] = {n: _num(spec[n], f"boards.{key}.{n}") for n in _BOARD_SCALARS if n in spec}
        measured.update(f"boards.{key}.{n}" for n in changes)
        if "boot" in spec:
            changes["boot"] = _phase(b.boot, spec["boot"], f"boards.{key}.boot")
            measured.add(f"boards.{key}.boot")
        if "radio" in spec:
            radio = dict(b.radio)
            for name, ph in _items(spec["radio"], f"boards.{key}.radio"):
                if name not in RADIO_PHASES:
                    raise ValueError(
                        f"boards.{key}.radio: unknown phase {name!r}; known: {', '.join(RADIO_PHASES)}"
                    )
                radio[name] = _phase(radio.get(name, ZERO_PHASE), ph, f"boards.{key}.radio.{name}")
                measured.add(f"boards.{key}.radio.{name}")
            changes["radio"] = radio
        boards[key] = replace(b, **changes)

    for key, spec in _items(data.get("sensors", {}), "sensors"):
        s = _lookup(sensors, key, "sensor")
        _check_keys(spec, (*_SENSOR_SCALARS, "warmup", "measure", "comment", "source"), f"sensors.{key}")
        changes = {n: _num(spec[n], f"sensors.{key}.{n}") for n in _SENSOR_SCALARS if n in spec}
        for ph_name in ("warmup", "measure"):
            if ph_name in spec:
                changes[ph_name] = _phase(getattr(s, ph_name), spec[ph_name], f"sensors.{key}.{ph_name}")
                measured.add(f"sensors.{key}.{ph_name}")
        sensors[key] = replace(s, **changes)

    for key, spec in _items(data.get("kinds", {}), "kinds"):
        k = _lookup(kinds, key, "kind")
        _check_keys(spec, (*_KIND_SCALARS, "sensors", "comment", "source"), f"kinds.{key}")
        kchanges: dict[str, Any] = {n: _num(spec[n], f"kinds.{key}.{n}") for n in _KIND_SCALARS if n in spec}
        if "sensors" in spec:
            names = spec["sensors"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"kinds.{key}.sensors: must be a list of sensor names")
            for n in names:
                _lookup(sensors, n, "sensor")
            kchanges["sensors"] = tuple(names)
        kinds[key] = replace(k, **kchanges)

    for key, spec in _items(data.get("batteries", {}), "batteries"):
        bat = _lookup(batteries, key, "battery")
        _check_keys(spec, (*_BATTERY_SCALARS, "comment", "source"), f"batteries.{key}")
        batteries[key] = replace(
            bat, **{n: _num(spec[n], f"batteries.{key}.{n}") for n in _BATTERY_SCALARS if n in spec}
        )

    return Catalog(
        boards=boards, sensors=sensors, kinds=kinds, batteries=batteries, measured=frozenset(measured)
    )


def load_overrides(path: Path, catalog: Catalog = DEFAULT_CATALOG) -> Catalog:
    """Read a JSON file of measured values (see :func:`apply_overrides`) and apply it."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TypeError(f"{path}: top level must be a JSON object")
    return apply_overrides(catalog, data)


def _items(obj: Any, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{where}: must be an object")
    for k, v in obj.items():
        if not isinstance(v, Mapping):
            raise TypeError(f"{where}.{k}: must be an object")
    return list(obj.items())


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = set(obj) - set(allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(allowed)}")


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {v!r}")
    return float(v)


def _phase(base: Phase, spec: Mapping[str, Any], where: str) -> Phase:
    _check_keys(spec, (*_PHASE_KEYS, "comment", "source"), where)
    d = _num(spec["duration_s"], f"{where}.duration_s") if "duration_s" in spec else base.duration_s
    c = _num(spec["current_ma"], f"{where}.current_ma") if "current_ma" in spec else base.current_ma
    return Phase(
        d,
        c,
        "measured" if "duration_s" in spec else base.duration_basis,
        "measured" if "current_ma" in spec else base.current_basis,
    )


# --------------------------------------------------------------------------- #
# Tables of cases and the command
# --------------------------------------------------------------------------- #


def default_cases(
    kind: str | None = None,
    board: str | None = None,
    samples_per_hour: float | None = None,
    tx_per_day: float | None = None,
    *,
    threshold_events_per_day: float | None = None,
    battery: str = DEFAULT_BATTERY,
    mean_temp_c: float = DEFAULT_MEAN_TEMP_C,
    catalog: Catalog = DEFAULT_CATALOG,
) -> list[EnergyResult]:
    """Results for kind x board x cadence.

    Without filters: every kind, on the boards listed for it, at each of its default cadences.
    ``kind``/``board`` restrict the rows (a named board is computed even if not listed for the
    kind); a given ``samples_per_hour`` or ``tx_per_day`` replaces the cadence list with one cadence.
    """
    kinds = [_lookup(catalog.kinds, kind, "kind")] if kind else list(catalog.kinds.values())
    if board:
        _lookup(catalog.boards, board, "board")
    rows: list[EnergyResult] = []
    for k in kinds:
        boards = [board] if board else list(k.boards)
        if samples_per_hour is None and tx_per_day is None:
            cadences = list(k.cadences)
        else:
            cadences = [
                (
                    k.samples_per_hour if samples_per_hour is None else samples_per_hour,
                    k.tx_per_day if tx_per_day is None else tx_per_day,
                )
            ]
        for b in boards:
            for sph, tx in cadences:
                rows.append(
                    estimate(
                        k.key,
                        b,
                        samples_per_hour=sph,
                        tx_per_day=tx,
                        threshold_events_per_day=threshold_events_per_day,
                        battery=battery,
                        mean_temp_c=mean_temp_c,
                        catalog=catalog,
                    )
                )
    return rows


def report(
    rows: Iterable[EnergyResult],
    catalog: Catalog = DEFAULT_CATALOG,
    battery: str = DEFAULT_BATTERY,
    mean_temp_c: float = DEFAULT_MEAN_TEMP_C,
) -> dict[str, Any]:
    """The JSON document ``streetsense firmware energy --json`` prints."""
    bat = _lookup(catalog.batteries, battery, "battery")
    return {
        "model": "streetsense.firmware.energy",
        "target_years": TARGET_YEARS,
        "max_service_years": MAX_SERVICE_YEARS,
        "battery": {
            "key": bat.key,
            "title": bat.title,
            "capacity_mah": bat.capacity_mah,
            "nominal_v": bat.nominal_v,
            "usable_fraction": bat.usable_fraction,
            "self_discharge_per_year": bat.self_discharge_per_year,
            "mean_temp_c": mean_temp_c,
            "temperature_factor": _sig(temperature_factor(mean_temp_c)),
        },
        "measured_overrides": sorted(catalog.measured),
        "rows": [r.to_dict() for r in rows],
    }


def energy_command(
    kind: Annotated[
        str | None, typer.Option(help="Device kind: bin_fill, air, noise, road (default: all).")
    ] = None,
    board: Annotated[
        str | None,
        typer.Option(
            help="Board: esp32, esp32s3, pico_w, pico_w_wl_off, pico_w_tpl5110 (default: the kind's)."
        ),
    ] = None,
    samples_per_hour: Annotated[float | None, typer.Option(help="Sample wakes per hour.")] = None,
    tx_per_day: Annotated[float | None, typer.Option(help="Scheduled transmissions per day.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    threshold_per_day: Annotated[
        float | None,
        typer.Option("--threshold-per-day", help="Threshold events (extra transmissions) per day."),
    ] = None,
    battery: Annotated[str, typer.Option(help="Battery: d_19ah, ls33600.")] = DEFAULT_BATTERY,
    mean_temp_c: Annotated[float, typer.Option(help="Mean operating temperature, C.")] = DEFAULT_MEAN_TEMP_C,
    phases: Annotated[
        Path | None,
        typer.Option(help="JSON file of measured phase durations/currents to replace the assumptions."),
    ] = None,
) -> None:
    """Battery life per device kind x board x cadence (energy model with stated sources)."""
    try:
        catalog = load_overrides(phases) if phases is not None else DEFAULT_CATALOG
        rows = default_cases(
            kind,
            board,
            samples_per_hour,
            tx_per_day,
            threshold_events_per_day=threshold_per_day,
            battery=battery,
            mean_temp_c=mean_temp_c,
            catalog=catalog,
        )
    except (ValueError, TypeError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    doc = report(rows, catalog, battery, mean_temp_c)
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_table(doc)


def _print_table(doc: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    bat = doc["battery"]
    table = Table(
        title=(
            f"StreetSense energy model - {bat['title']}, usable {bat['usable_fraction']:.0%} x temp factor "
            f"{bat['temperature_factor']} at {bat['mean_temp_c']} C, self-discharge "
            f"{bat['self_discharge_per_year']:.0%}/yr; target {doc['target_years']:g} years"
        )
    )
    for col, justify in (
        ("kind", "left"),
        ("board", "left"),
        ("samples/h", "right"),
        ("tx/day", "right"),
        ("thr/day", "right"),
        ("sleep uA", "right"),
        ("sample mJ", "right"),
        ("tx mJ", "right"),
        ("mAh/day", "right"),
        ("avg uA", "right"),
        ("avg mW", "right"),
        ("life", "right"),
        (">= target", "center"),
        ("supply", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in doc["rows"]:
        ok = "yes" if r["meets_target"] else "NO"
        if not r["battery_powered"]:
            ok = f"({ok})"
        life = f"{r['life_years']:g} y" if r["life_years"] >= 1 else f"{r['life_days']:.0f} d"
        cont = r["continuous"]
        table.add_row(
            r["kind"],
            r["board"],
            "-" if cont else f"{r['samples_per_hour']:g}",
            f"{r['tx_per_day']:g}",
            f"{r['threshold_events_per_day']:g}",
            "-" if cont else f"{r['sleep_ua']:g}",
            "-" if cont else f"{r['sample_wake_mj']:g}",
            f"{r['radio_session_mj']:g}",
            f"{r['mah_per_day']:g}",
            f"{r['average_ua']:g}",
            f"{r['average_mw']:g}",
            life,
            ok,
            r["supply"],
        )
    console = Console()
    console.print(table)
    console.print(
        "Awake times are assumptions until measured (pass --phases FILE); '(..)' = not a battery node, "
        f"life shown for comparison. Lives above {doc['max_service_years']:g} y are beyond what this model "
        "covers."
    )
