"""The contract page must describe the registry as it is."""

import re
from pathlib import Path

from contract import v1

DOC = (Path(__file__).parents[1] / "docs" / "contract.md").read_text()


def test_every_metric_documented_with_its_unit_and_range():
    rows = {m.group(2): m.groups() for m in re.finditer(
        r"^\| (\d+) \| `([a-z0-9_]+)` \| `([^`]+)` \| (\d) \| (-?\d+) … (-?\d+) \| ([^|]+) \|$", DOC, re.M)}
    assert set(rows) == {m[1] for m in v1.METRICS}
    for m in v1.METRICS:
        mid, name, unit, dec, lo, hi, kinds = rows[m[1]]
        assert (int(mid), unit, int(dec), int(lo), int(hi), kinds.strip()) == (m[0], m[2], m[3], m[4], m[5], m[6])


def test_every_channel_documented():
    for ch in v1.CHANNELS:
        assert f"`ss/v1/<tenant>/<device_id>/{ch}`" in DOC
