"""Tests of the node energy model (streetsense.firmware.energy)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import typer
from typer.testing import CliRunner

from streetsense.firmware import energy as e
from streetsense.firmware.energy import Battery, Board, Catalog, Kind, Phase, Sensor

# --------------------------------------------------------------------------- #
# Hand arithmetic
# --------------------------------------------------------------------------- #


def _toy_catalog() -> Catalog:
    """Round numbers so every figure below can be checked with pencil and paper."""
    zero = e.ZERO_PHASE
    board = Board(
        key="toy",
        title="toy",
        supply_v=3.0,
        efficiency=1.0,
        sleep_ua=10.0,
        gate_ua=0.0,
        wait_ma=1.0,
        active_ma=20.0,
        boot=Phase(1.0, 20.0, "assumption", "assumption"),
        radio={
            "wifi_assoc": Phase(2.0, 100.0, "assumption", "assumption"),
            "dhcp": zero,
            "tls_mqtt_connect": zero,
            "publish": zero,
            "radio_off": zero,
        },
        power_gated=False,
    )
    sensor = Sensor(
        key="s",
        title="s",
        supply_v=3.0,
        efficiency=1.0,
        sleep_ua=0.0,
        warmup=Phase(1.0, 10.0, "assumption", "assumption"),
        measure=Phase(0.5, 10.0, "assumption", "assumption"),
    )
    kind = Kind(
        key="toy_kind",
        title="toy",
        sensors=("s",),
        samples_per_hour=1.0,
        tx_per_day=1.0,
        threshold_events_per_day=0.0,
        continuous=False,
        supply="battery",
        boards=("toy",),
        cadences=((1.0, 1.0),),
        process_s=0.5,
    )
    battery = Battery(
        key="b",
        title="b",
        capacity_mah=1000.0,
        nominal_v=3.0,
        usable_fraction=1.0,
        self_discharge_per_year=0.0,
    )
    return Catalog(
        boards={"toy": board}, sensors={"s": sensor}, kinds={"toy_kind": kind}, batteries={"b": battery}
    )


def test_one_wake_by_hand_toy_case():
    r = e.estimate("toy_kind", "toy", battery="b", mean_temp_c=20.0, catalog=_toy_catalog())
    # boot 20 mA*1 s*3 V = 60 mJ; warm-up (10 + 20 mA)*1 s*3 V = 90; measure (10 + 20)*0.5*3 = 45;
    # processing 20*0.5*3 = 30  ->  225 mJ over 1 + 1 + 0.5 + 0.5 = 3 s.
    assert r.sample_wake_mj == pytest.approx(225.0)
    assert r.sample_wake_s == pytest.approx(3.0)
    assert r.sample_wake_uah == pytest.approx(225.0 / 3.0 / 3.6)  # mJ / V = mA*s; / 3.6 -> uAh
    # radio: 100 mA * 2 s * 3 V = 600 mJ
    assert r.radio_session_mj == pytest.approx(600.0)
    # day: 24 wakes * 225 + 1 session * 600 + sleep 10 uA * 3 V * (86400 - 24*3 - 2) s
    awake = 24 * 3.0 + 2.0
    assert r.awake_s_per_day == pytest.approx(awake)
    day_mj = 24 * 225.0 + 600.0 + 10e-3 * 3.0 * (86_400 - awake)
    assert r.mah_per_day == pytest.approx(day_mj / 3.0 / 3600.0)  # = 0.79535 mAh
    assert r.mah_per_day == pytest.approx(0.79535, rel=1e-4)
    assert r.average_ua == pytest.approx(r.mah_per_day * 1000 / 24)
    # life = 1000 mAh / (0.79535 mAh/day * 365.25 days)
    assert r.life_years == pytest.approx(1000.0 / (day_mj / 3.0 / 3600.0 * 365.25))
    assert r.life_years == pytest.approx(3.4423, rel=1e-4)


def test_default_esp32_bin_fill_wake_by_hand():
    r = e.estimate("bin_fill", "esp32")
    k = 3.3 / 0.90  # rail volts / converter efficiency
    # radio: (1.2 s*115 + 0.4*105 + 1.5*110 + 0.3*120 + 0.1*60) mA*s = 387 mA*s at 3.3 V / 0.9
    assert r.radio_session_mj == pytest.approx(387.0 * k)
    assert r.radio_session_s == pytest.approx(3.5)
    # sample wake, mA*s: boot 0.5*40; A02YYUW warm-up 0.2*(8 + 40), measure 1.0*(8 + 40);
    # SHT31 0.015*(0.6 + 40); LIS3DH 0.01*(0.011 + 40); processing 0.05*40
    mas = 0.5 * 40 + 0.2 * 48 + 1.0 * 48 + 0.015 * 40.6 + 0.01 * 40.011 + 0.05 * 40
    assert r.sample_wake_mj == pytest.approx(mas * k)
    # sleep, uW: ESP32 11 uA + SHT31 0.2 + LIS3DH 6 at 3.3 V / 0.9, + 1.06 uA at the 3.6 V cell
    assert r.sleep_ua == pytest.approx(((11 + 0.2 + 6) * k + 1.06 * 3.6) / 3.6)


def test_unit_conversions():
    assert e.energy_mj(100.0, 3.3, 2.0) == pytest.approx(660.0)
    assert e.energy_mj(100.0, 3.3, 2.0, 0.5) == pytest.approx(1320.0)
    assert e.mj_to_uah(3600.0, 1.0) == pytest.approx(1000.0)  # 1 mA for 1 h at 1 V = 3.6 J
    with pytest.raises(ValueError):
        e.energy_mj(1.0, 1.0, 1.0, 0.0)


# --------------------------------------------------------------------------- #
# Monotonicity
# --------------------------------------------------------------------------- #

BIN_BOARDS = e.KINDS["bin_fill"].boards


@pytest.mark.parametrize("board", BIN_BOARDS)
def test_life_decreases_with_sampling_rate(board):
    lives = [
        e.estimate("bin_fill", board, samples_per_hour=s).life_years for s in (0.25, 0.5, 1, 2, 4, 12, 60)
    ]
    assert all(a > b for a, b in itertools.pairwise(lives)), lives


@pytest.mark.parametrize("board", BIN_BOARDS)
def test_life_decreases_with_transmissions(board):
    lives = [e.estimate("bin_fill", board, tx_per_day=t).life_years for t in (1, 2, 4, 8, 24, 48, 96)]
    assert all(a > b for a, b in itertools.pairwise(lives)), lives
    thr = [e.estimate("bin_fill", board, threshold_events_per_day=t).life_years for t in (0, 0.5, 2, 10)]
    assert all(a > b for a, b in itertools.pairwise(thr)), thr


def test_life_decreases_in_the_cold_and_with_a_smaller_cell():
    warm = e.estimate("bin_fill", "esp32", mean_temp_c=20).life_years
    cold = e.estimate("bin_fill", "esp32", mean_temp_c=-20).life_years
    assert warm > cold
    assert (
        e.estimate("bin_fill", "esp32", battery="ls33600").life_years
        < e.estimate("bin_fill", "esp32").life_years
    )
    factors = [e.temperature_factor(t) for t in (-60, -40, -20, 0, 10, 20, 40, 80)]
    assert factors == sorted(factors) and 0 < factors[0] and factors[-1] == 1.0


# --------------------------------------------------------------------------- #
# The brief's questions
# --------------------------------------------------------------------------- #


def test_default_bin_fill_esp32_meets_five_years():
    r = e.estimate("bin_fill", "esp32")
    assert (r.samples_per_hour, r.tx_per_day) == (1.0, 4.0)
    assert r.battery == "d_19ah" and r.battery_powered
    assert r.life_years >= 5.0 and r.meets_target
    # also on the 17 Ah Saft LS 33600 and in a cold year
    assert e.estimate("bin_fill", "esp32", battery="ls33600", mean_temp_c=-10).life_years >= 5.0


def test_bare_pico_w_misses_five_years_and_tpl5110_fixes_it():
    bare = e.estimate("bin_fill", "pico_w")
    assert bare.sleep_ua > 10_000  # tens of mA at the cell
    assert bare.life_years < 5.0 and not bare.meets_target
    assert bare.life_years < 0.2
    best_software = e.estimate("bin_fill", "pico_w_wl_off")  # WL_ON low + lightsleep: ~1 mA still
    assert best_software.life_years < 5.0
    gated = e.estimate("bin_fill", "pico_w_tpl5110")
    # TPL5110 35 nA + P-MOSFET leakage 0.5 uA + buffer leakage 1 uA, all at the cell; sensors are cut too
    assert gated.sleep_ua == pytest.approx(0.035 + 0.5 + 1.0)
    assert gated.life_years >= 5.0 and gated.meets_target


def test_pessimistic_esp32_bin_fill_still_meets_target():
    """Triple every radio time, +20 % radio current, triple sleep, slow boot, 70 % usable LS 33600 at -5 C."""
    b = e.BOARDS["esp32"]
    radio = {
        n: {"duration_s": b.radio[n].duration_s * 3, "current_ma": b.radio[n].current_ma * 1.2}
        for n in e.RADIO_PHASES
    }
    cat = e.apply_overrides(
        e.DEFAULT_CATALOG,
        {
            "boards": {"esp32": {"sleep_ua": 33, "boot": {"duration_s": 1.0}, "radio": radio}},
            "sensors": {"a02yyuw": {"measure": {"duration_s": 1.2, "current_ma": 15}}},
            "batteries": {"ls33600": {"usable_fraction": 0.7}},
        },
    )
    assert e.estimate("bin_fill", "esp32", battery="ls33600", mean_temp_c=-5, catalog=cat).life_years >= 5.0


def test_mains_and_vehicle_kinds_are_not_battery_nodes():
    for kind in ("air", "noise", "road"):
        for r in e.default_cases(kind):
            assert not r.battery_powered
            assert r.life_years < 1.0, (kind, r.board, r.life_years)
    air = e.estimate("air", "esp32")
    assert air.sample_wake_s >= 30.0  # the PMS5003 fan warm-up is in every sample
    noise = e.estimate("noise", "esp32")
    assert noise.continuous and noise.awake_s_per_day == e.SECONDS_PER_DAY


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown kind"):
        e.estimate("litter", "esp32")
    with pytest.raises(ValueError, match="unknown board"):
        e.estimate("bin_fill", "arduino")
    with pytest.raises(ValueError):
        e.estimate("bin_fill", "esp32", tx_per_day=-1)
    with pytest.raises(ValueError, match="more than a day"):
        e.estimate("air", "esp32", samples_per_hour=200)


# --------------------------------------------------------------------------- #
# Measured overrides
# --------------------------------------------------------------------------- #


def test_measured_overrides_replace_assumptions(tmp_path):
    path = tmp_path / "measured.json"
    path.write_text(
        json.dumps(
            {
                "source": "bench node #3, Otii Arc, 2026-01-10",
                "boards": {"esp32": {"sleep_ua": 14.0, "radio": {"wifi_assoc": {"duration_s": 0.8}}}},
            }
        )
    )
    cat = e.load_overrides(path)
    base = e.estimate("bin_fill", "esp32")
    meas = e.estimate("bin_fill", "esp32", catalog=cat)
    assert meas.radio_session_mj == pytest.approx(base.radio_session_mj - 0.4 * 115 * 3.3 / 0.9)
    assert meas.basis["boards.esp32.radio.wifi_assoc"] == "measured"
    assert meas.basis["boards.esp32.sleep_ua"] == "measured"
    assert meas.basis["boards.esp32.radio.dhcp"].startswith("time assumption")
    # the catalog itself is not modified
    assert e.BOARDS["esp32"].radio["wifi_assoc"].duration_s == 1.2


@pytest.mark.parametrize(
    "bad",
    [
        {"boards": {"esp32": {"sleep_uA": 3}}},  # typo must not silently keep the assumption
        {"boards": {"esp33": {}}},
        {"boards": {"esp32": {"radio": {"wifi": {"duration_s": 1}}}}},
        {"boards": {"esp32": {"boot": {"duration_s": -1}}}},
        {"sensors": {"a02yyuw": {"measure": {"duration_s": "fast"}}}},
        {"board": {}},
        {"boards": {"esp32": 3}},
    ],
)
def test_bad_overrides_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        e.apply_overrides(e.DEFAULT_CATALOG, bad)


# --------------------------------------------------------------------------- #
# Command output
# --------------------------------------------------------------------------- #

ROW_KEYS = {
    "kind",
    "board",
    "battery",
    "supply",
    "battery_powered",
    "continuous",
    "samples_per_hour",
    "tx_per_day",
    "threshold_events_per_day",
    "mean_temp_c",
    "sleep_ua",
    "sample_wake_mj",
    "sample_wake_uah",
    "sample_wake_s",
    "radio_session_mj",
    "radio_session_uah",
    "radio_session_s",
    "awake_s_per_day",
    "mah_per_day",
    "breakdown_mah_per_day",
    "average_ua",
    "average_mw",
    "usable_mah",
    "life_years",
    "life_days",
    "life_years_capped",
    "target_years",
    "meets_target",
    "basis",
}


def test_json_output_shape(capsys):
    e.energy_command(json_out=True)
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"model", "target_years", "max_service_years", "battery", "measured_overrides", "rows"}
    assert doc["target_years"] == 5.0
    assert doc["battery"]["capacity_mah"] == 19_000.0
    expected_rows = sum(len(k.boards) * len(k.cadences) for k in e.KINDS.values())
    assert len(doc["rows"]) == expected_rows
    for row in doc["rows"]:
        assert set(row) == ROW_KEYS
        assert isinstance(row["meets_target"], bool)
        assert isinstance(row["basis"], dict) and row["basis"]
        for key in ("mah_per_day", "average_ua", "life_years"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0
        assert row["mah_per_day"] == pytest.approx(sum(row["breakdown_mah_per_day"].values()), rel=0.01)
    kinds = {r["kind"] for r in doc["rows"]}
    assert kinds == {"bin_fill", "air", "noise", "road"}
    default = next(r for r in doc["rows"] if r["kind"] == "bin_fill" and r["board"] == "esp32")
    assert default["meets_target"] is True


def test_json_filters(capsys):
    e.energy_command(kind="bin_fill", board="pico_w_tpl5110", samples_per_hour=2, tx_per_day=6, json_out=True)
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 1
    assert (rows[0]["kind"], rows[0]["board"], rows[0]["samples_per_hour"], rows[0]["tx_per_day"]) == (
        "bin_fill",
        "pico_w_tpl5110",
        2,
        6,
    )


def test_registered_as_typer_command(tmp_path):
    app = typer.Typer()
    firmware = typer.Typer()
    firmware.command("energy")(e.energy_command)
    app.add_typer(firmware, name="firmware")
    runner = CliRunner()

    table = runner.invoke(app, ["firmware", "energy", "--kind", "bin_fill"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "pico_w_tpl5110" in table.output and "NO" in table.output

    phases = tmp_path / "p.json"
    phases.write_text(json.dumps({"boards": {"esp32": {"boot": {"duration_s": 0.3, "current_ma": 35}}}}))
    out = runner.invoke(
        app,
        ["firmware", "energy", "--kind", "bin_fill", "--board", "esp32", "--json", "--phases", str(phases)],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["measured_overrides"] == ["boards.esp32.boot"]
    assert doc["rows"][0]["basis"]["boards.esp32.boot"] == "measured"

    bad = runner.invoke(app, ["firmware", "energy", "--kind", "litter"])
    assert bad.exit_code != 0


def test_example_measurements_file_is_valid_and_neutral():
    """hardware/energy-measurements.example.json loads, and its placeholders equal the assumptions."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "hardware" / "energy-measurements.example.json"
    cat = e.load_overrides(path)
    assert "boards.esp32.radio.tls_mqtt_connect" in cat.measured
    base, meas = e.estimate("bin_fill", "esp32"), e.estimate("bin_fill", "esp32", catalog=cat)
    assert meas.mah_per_day == pytest.approx(base.mah_per_day)
    assert meas.basis["boards.esp32.boot"] == "measured"


def test_sensor_swap_through_overrides():
    cat = e.apply_overrides(
        e.DEFAULT_CATALOG, {"kinds": {"bin_fill": {"sensors": ["vl53l1x", "sht3x", "lis3dh"]}}}
    )
    tof = e.estimate("bin_fill", "esp32", catalog=cat)
    ultra = e.estimate("bin_fill", "esp32")
    assert tof.sleep_ua > ultra.sleep_ua  # the ToF ranger idles in HW standby instead of being cut
    assert "sensors.vl53l1x.measure" in tof.basis
    with pytest.raises(ValueError, match="unknown sensor"):
        e.apply_overrides(e.DEFAULT_CATALOG, {"kinds": {"bin_fill": {"sensors": ["hc_sr04"]}}})
