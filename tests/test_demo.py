"""The main job: `streetsense demo` brings the whole pipeline up on embedded
defaults, stores readings from the simulated fleet, and stops cleanly."""

import os
import re
import subprocess
import sys


def test_demo_runs_end_to_end_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MQTT_URL")}
    proc = subprocess.run(
        [sys.executable, "-c", "from streetsense.cli import app; app()", "demo", "--bins", "40", "--speed", "3000",
         "--duration", "25", "--data-dir", str(tmp_path / "var")],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"stopped: ([\d,]+) readings stored, ([\d,]+) quarantined, (\d+)/(\d+) devices reported", proc.stdout)
    assert m, proc.stdout[-2000:]
    stored, reporting = int(m.group(1).replace(",", "")), int(m.group(3))
    assert stored > 500 and reporting > 10
    assert "API http://127.0.0.1:" in proc.stdout
    # the API is not open: an admin token in a 0600 file, whose content is printed nowhere
    token_file = tmp_path / "var" / "secrets" / "demo-admin.token"
    assert f"admin token (Authorization: Bearer …) in {token_file}" in proc.stdout.replace("\n", "")
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("ss_") and token not in proc.stdout and token not in proc.stderr
