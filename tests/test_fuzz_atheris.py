"""The atheris harness (``python -m streetsense.fuzz``), briefly, and the inputs it has found.

The long runs are for the issue notes (``--seconds 180`` per target); here each
target gets a few thousand coverage-guided executions in a real libFuzzer child
process, which must report its figures and find nothing. Then every input kept
in ``tests/fuzz/regressions`` (once a crash, now fixed) goes through its check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streetsense.fuzz import TARGETS

REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cli_runs_target_and_reports_figures(target: str, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "streetsense.fuzz", target, "--runs", "3000", "--json",
                        "--artifacts", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["target"] == target and res["executions"] == 3000
    assert res["failures"] == 0, res["failing_inputs"]
    assert res["coverage"] and res["coverage"] > 5 and res["corpus"] >= 1
    assert res["exec_per_s"] > 0


def test_harness_saves_an_input_that_breaks_a_check(tmp_path: Path) -> None:
    """A planted bug is found and saved with its error (the harness can fail)."""
    code = ("import sys, streetsense.fuzz as f\n"
            "def bad(data):\n"
            "    if len(data) > 3 and data[0] == 0x42:\n"
            "        raise IndexError('planted')\n"
            "f.TARGETS['pms5003'] = bad\n"
            "f._child('pms5003', 4000, sys.argv[1], sys.argv[2], [])\n")
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"\x42\x4d\x00\x1c")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(corpus)], capture_output=True, timeout=300)
    found = list(tmp_path.glob("pms5003-*.txt"))
    assert found and "IndexError: planted" in found[0].read_text()


def test_regressions_found_by_fuzzing_stay_fixed() -> None:
    files = sorted(REGRESSIONS.rglob("*.bin"))
    assert len(files) >= 10 and {p.parent.name for p in files} == set(TARGETS)
    for p in files:
        TARGETS[p.parent.name](p.read_bytes())
