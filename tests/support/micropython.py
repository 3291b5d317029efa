"""Run code under the real MicroPython interpreter (the WebAssembly port from npm).

``run_micropython(script, files)`` starts ``node tests/tools/micropython_run.mjs``,
copies ``files`` ({path inside the interpreter: host path}) into its in-memory
filesystem, runs ``script`` and returns what it printed.  An uncaught exception
(or a non-zero SystemExit) raises :class:`MicroPythonError` carrying the
traceback.  The upstream asyncio (tests/fakes/asyncio) is always first on
``sys.path``: the WebAssembly port's own asyncio runs on JavaScript promises.

``micropython_available()`` is False when node or the npm package is missing,
for ``pytest.mark.skipif``.

``firmware_files()`` is the usual mapping for firmware tests: the firmware
package, the contract, a board profile and the fakes, all under ``/lib``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tests" / "tools" / "micropython_run.mjs"
PACKAGE = REPO / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
FAKES = REPO / "tests" / "fakes"
FIRMWARE = REPO / "firmware"


class MicroPythonError(AssertionError):
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        tail = stdout[-3000:]
        super().__init__(f"MicroPython exited with {returncode}\n--- stderr ---\n{stderr}\n--- stdout (tail) ---\n{tail}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def micropython_available() -> bool:
    return shutil.which("node") is not None and PACKAGE.is_file() and RUNNER.is_file()


def run_micropython(script: str, files: dict[str, Path] | None = None, timeout: float = 60, *,
                    paths: list[str] | None = None, heap: str | int | None = None,
                    exports: dict[str, Path] | None = None, check: bool = True) -> str:
    """Run ``script`` under MicroPython; returns its stdout."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    with tempfile.TemporaryDirectory(prefix="mpy-run-") as tmp:
        spath = Path(tmp) / "script.py"
        spath.write_text(script)
        cmd = [node, str(RUNNER), "--map", f"{FAKES / 'asyncio'}=/upstream/asyncio", "--path", "/upstream"]
        for dest, host in (files or {}).items():
            cmd += ["--map", f"{Path(host)}={dest}"]
        for p in paths or []:
            cmd += ["--path", p]
        if heap is not None:
            cmd += ["--heap", str(heap)]
        for src, host in (exports or {}).items():
            cmd += ["--export", f"{src}={Path(host)}"]
        cmd.append(str(spath))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and r.returncode != 0:
        raise MicroPythonError(r.returncode, r.stdout, r.stderr)
    return r.stdout


def firmware_files(board: str = "esp32", *, fakes: bool = True, mpy_dir: Path | None = None) -> dict[str, Path]:
    """Firmware, contract and board profile (as /lib/board.py), plus the fakes.

    With ``mpy_dir`` (the output of streetsense.firmware.build for bytecode) the
    compiled files are used instead of the sources.
    """
    if mpy_dir is not None:
        files = {"/lib/ss": mpy_dir / "ss", "/lib/contract": mpy_dir / "contract",
                 "/lib/board.mpy": mpy_dir / "board.mpy"}
    else:
        files = {"/lib/ss": FIRMWARE / "ss", "/lib/contract": REPO / "contract",
                 "/lib/board.py": FIRMWARE / "boards" / f"{board}.py"}
    if fakes:
        for p in sorted(FAKES.iterdir()):
            if p.name in ("asyncio", "__pycache__") or p.name.startswith("."):
                continue
            files[f"/lib/{p.name}"] = p
    return files
