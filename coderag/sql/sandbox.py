"""Client SQL in a sandbox: a short-lived worker process per request, with hard CPU, memory and size limits.

A request's ``sql_context`` (CREATE TABLE + INSERT statements) and the generated SQL come from people
the server does not trust. Building the context and running the SQL therefore happen in a worker
process forked for that request, never on the server's event loop or in its address space:

* ``RLIMIT_AS`` caps the worker's memory and ``RLIMIT_CPU`` its CPU seconds; SQLite's own
  ``hard_heap_limit``, ``SQLITE_LIMIT_LENGTH`` (largest string/BLOB) and ``max_page_count`` (largest
  database) are set by the server on a connection where the client may not run PRAGMAs.
* one deadline covers the whole session (building the context, the first execution, the repaired one);
  past it the worker is killed, whatever it was doing.
* a result is capped in rows *and* in bytes; BLOB values come back as hex text ``"\\x" + hex`` (the
  PostgreSQL ``bytea`` spelling), so every row is JSON as it stands.

The context is built once per session and queried as often as the caller asks (a repair runs on the
same database). A registered database (a read-only SQLite file) is opened the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coderag.errors import CodeRAGError

# sqlite3 authorizer action codes that only read (https://sqlite.org/c3ref/c_alter_table.html).
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
# Kept here, not imported from coderag.sql.guard: the worker must not load sqlglot (memory limit, start time).
_FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
_PROGRESS_STEPS = 1000
_GRACE_S = 0.5


class SandboxError(CodeRAGError):
    """The sandbox could not serve the request (busy, or its worker could not start)."""


class SandboxContextError(CodeRAGError):
    """A ``sql_context`` (or registered database) does not give a database the sandbox may query."""


class SandboxQueryError(CodeRAGError):
    """A query failed in the sandbox (SQLite error, authorizer, a limit or the deadline)."""


@dataclass(frozen=True)
class SandboxLimits:
    """The hard limits of one sandbox session.

    Args:
        memory_bytes: the worker's address-space limit (``RLIMIT_AS``).
        heap_bytes: SQLite's ``hard_heap_limit`` inside the worker.
        max_value_bytes: the largest string or BLOB SQLite may build (``SQLITE_LIMIT_LENGTH``).
        max_database_bytes: the largest database a context may build (``max_page_count``).
        max_rows: the most rows a query may return.
        max_result_bytes: the most bytes (UTF-8 text, hex BLOBs, 8 per number) a query may return.
        max_sessions: sessions running at once; the next one waits for a free slot until its deadline.
    """

    memory_bytes: int = 512 * 2**20
    heap_bytes: int = 128 * 2**20
    max_value_bytes: int = 8 * 2**20
    max_database_bytes: int = 64 * 2**20
    max_rows: int = 10_000
    max_result_bytes: int = 2**20
    max_sessions: int = 4


# --- the worker (runs in the forked process) --------------------------------------------------------
def _apply_rlimits(limits: SandboxLimits, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))


def _context_authorizer(denied: list[str]):
    def authorize(action: int, _arg1, arg2, _db_name, _trigger) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            denied.append("PRAGMA statements are refused in a context")
        elif action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            denied.append("it may only create tables and insert rows; ATTACH, DETACH and VACUUM INTO are refused")
        elif action == sqlite3.SQLITE_FUNCTION and str(arg2 or "").lower() in _FORBIDDEN_FUNCTIONS:
            denied.append(f"the function {arg2}() is refused")
        else:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


def _read_only_authorizer(action: int, _arg1, arg2, _db_name, _trigger) -> int:
    if action not in _READ_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2 or "").lower() in _FORBIDDEN_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _deadline_handler(deadline: float):
    return lambda: int(time.monotonic() > deadline)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return value


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return 2 + 2 * len(value)
    return 8


def _open(kind: str, source: str, limits: SandboxLimits, deadline: float) -> sqlite3.Connection:
    if kind == "file":
        conn = sqlite3.connect(f"file:{Path(source).resolve().as_posix()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
    # Set by the server before any client text runs; the authorizer then refuses every PRAGMA.
    conn.execute(f"PRAGMA hard_heap_limit = {int(limits.heap_bytes)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if kind == "context":
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(1, limits.max_database_bytes // page_size)}")
        denied: list[str] = []
        conn.set_authorizer(_context_authorizer(denied))
        conn.set_progress_handler(_deadline_handler(deadline), _PROGRESS_STEPS)
        try:
            conn.executescript(source)
        except (sqlite3.Error, sqlite3.Warning, ValueError, MemoryError) as exc:
            raise SandboxContextError(_context_reason(exc, denied, limits)) from None
        finally:
            conn.set_progress_handler(None, 0)
            conn.set_authorizer(None)
    return conn


def _context_reason(exc: BaseException, denied: list[str], limits: SandboxLimits) -> str:
    message = str(exc)
    if denied:
        return denied[0]
    if "interrupted" in message:
        return "building it ran past the request's deadline"
    if "too big" in message:
        return f"it builds a string or BLOB larger than {limits.max_value_bytes} bytes"
    if "full" in message:
        return f"it builds a database larger than {limits.max_database_bytes} bytes"
    if isinstance(exc, MemoryError) or "out of memory" in message:
        return "it needs more memory than the sandbox allows"
    if isinstance(exc, ValueError):
        return "it holds a NUL character or text that is not valid Unicode"
    return message


def _query(conn: sqlite3.Connection, sql: str, limits: SandboxLimits, deadline: float, timeout_s: float) -> list:
    conn.set_authorizer(_read_only_authorizer)
    own_limit = time.monotonic() + timeout_s
    conn.set_progress_handler(_deadline_handler(min(deadline, own_limit)), _PROGRESS_STEPS)
    rows, size = [], 0
    try:
        cursor = conn.execute(sql)
        while True:
            batch = cursor.fetchmany(256)
            if not batch:
                return rows
            for row in batch:
                size += sum(_value_size(v) for v in row)
                if size > limits.max_result_bytes:
                    raise SandboxQueryError(f"the result is larger than {limits.max_result_bytes} bytes: select "
                                            "fewer columns or add a LIMIT.")
                rows.append([_json_value(v) for v in row])
                if len(rows) > limits.max_rows:
                    raise SandboxQueryError(f"the query returned more than {limits.max_rows} rows: add a LIMIT "
                                            "or a filter.")
    except (sqlite3.Error, sqlite3.Warning, ValueError, MemoryError) as exc:
        message = str(exc)
        if "interrupted" in message:
            if deadline < own_limit:
                raise SandboxQueryError("the query ran past the request's deadline and was stopped.") from None
            raise SandboxQueryError(f"the query ran longer than {timeout_s:g} s and was stopped.") from None
        if "not authorized" in message:
            raise SandboxQueryError(f"the read-only authorizer denied the query ({message}).") from None
        if "too big" in message:
            raise SandboxQueryError(f"SQLite error: a value is larger than {limits.max_value_bytes} bytes "
                                    "(string or blob too big).") from None
        if isinstance(exc, MemoryError) or "out of memory" in message:
            raise SandboxQueryError("the query needs more memory than the sandbox allows.") from None
        raise SandboxQueryError(f"SQLite error: {message}") from None
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)


def _serve(stdin, stdout, limits: SandboxLimits, cpu_seconds: int, deadline_in_s: float) -> None:
    """Serve one session over JSON lines: ``["open", kind, source]`` once, then ``["run", sql, timeout_s]``."""
    _apply_rlimits(limits, cpu_seconds)
    deadline = time.monotonic() + deadline_in_s
    conn = None

    def reply(kind: str, value: Any) -> None:
        stdout.write(json.dumps([kind, value]) + "\n")
        stdout.flush()

    for line in stdin:
        message = json.loads(line)
        try:
            if message[0] == "open":
                conn = _open(message[1], message[2], limits, deadline)
                reply("ok", None)
            elif message[0] == "run":
                reply("ok", _query(conn, message[1], limits, deadline, message[2]))
            else:
                return
        except SandboxContextError as exc:
            reply("context", str(exc))
        except SandboxQueryError as exc:
            reply("query", str(exc))
        except MemoryError:
            reply("query", "the query needs more memory than the sandbox allows.")


# --- the parent side --------------------------------------------------------------------------------
class SandboxSession:
    """One request's worker: a database built (or opened) once, queried until :meth:`close` or the deadline."""

    def __init__(self, sandbox: SqlSandbox, deadline: float) -> None:
        self._sandbox = sandbox
        self.deadline = deadline
        self._process: subprocess.Popen | None = None
        self._slot = False

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _start(self) -> None:
        if not self._sandbox._slots.acquire(timeout=max(0.0, self._remaining())):
            raise SandboxError("the SQL sandbox is busy with other requests: retry shortly")
        self._slot = True
        remaining = max(0.05, self._remaining())
        # CPU time can never exceed wall time on one core: the wall deadline plus a second is a hard cap.
        cpu_seconds = max(1, math.ceil(remaining) + 1)
        limits = json.dumps({**asdict(self._sandbox.limits), "cpu_seconds": cpu_seconds, "deadline_s": remaining})
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, limits], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, encoding="utf-8", errors="surrogateescape",
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"the SQL sandbox could not start a worker ({exc.strerror})") from None

    def _call(self, message: list, on_deadline: str, error_cls: type[CodeRAGError]) -> Any:
        process = self._process
        try:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
        except OSError:
            pass  # the worker died: its exit code says why, below
        # A little past the deadline, so the worker's own (clearer) deadline message can arrive first.
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, self._remaining()) + _GRACE_S)
        if not ready:
            self.close()
            raise error_cls(on_deadline)
        line = process.stdout.readline()
        if not line:
            code = process.wait(5)
            self.close()
            raise error_cls(_death_reason(code, self._sandbox.limits))
        kind, value = json.loads(line)
        if kind == "ok":
            return value
        if kind == "context":
            raise SandboxContextError(value)
        raise SandboxQueryError(value)

    def open(self, *, sql_context: str | None = None, db_path: str | Path | None = None) -> SandboxSession:
        """Start the worker and build ``sql_context`` (or open ``db_path`` read-only) in it."""
        if (sql_context is None) == (db_path is None):
            raise ValueError("pass exactly one of sql_context and db_path")
        self._start()
        kind, source = ("context", sql_context) if sql_context is not None else ("file", str(db_path))
        try:
            self._call(("open", kind, source), "building the sql_context ran past the request's deadline",
                       SandboxContextError)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, sql: str, timeout_s: float = 5.0) -> list[list[Any]]:
        """The rows of ``sql`` (read-only; within ``timeout_s`` and the session deadline), JSON-ready.

        Raises:
            SandboxQueryError: SQLite failed, a limit was hit, or the time ran out.
        """
        if self._process is None:
            raise SandboxQueryError("the sandbox session is closed (its deadline passed).")
        if self._remaining() <= 0:
            self.close()
            raise SandboxQueryError("the request's deadline passed before the query could run.")
        return self._call(("run", sql, timeout_s),
                          "the query ran past the request's deadline and was stopped.", SandboxQueryError)

    def close(self) -> None:
        """Stop the worker (at once: it holds nothing worth keeping) and free the slot."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(5)
            for stream in (self._process.stdin, self._process.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
            self._process = None
        if self._slot:
            self._sandbox._slots.release()
            self._slot = False

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _death_reason(exitcode: int | None, limits: SandboxLimits) -> str:
    if exitcode == -signal.SIGXCPU:
        return "the SQL used more CPU time than the request allows and was stopped."
    if exitcode in (-signal.SIGKILL, -signal.SIGSEGV, 1):
        return f"the SQL needed more than the sandbox's {limits.memory_bytes // 2**20} MiB of memory and was stopped."
    return f"the SQL sandbox stopped unexpectedly (exit code {exitcode})."


class SqlSandbox:
    """Starts a worker process (``python -m coderag.sql.sandbox``) per session under :class:`SandboxLimits`.

    Args:
        limits: the hard limits of every session.

    Example:
        >>> sandbox = SqlSandbox()
        >>> with sandbox.session(deadline=time.monotonic() + 5).open(sql_context="CREATE TABLE t (a);"
        ...                                                           "INSERT INTO t VALUES (x'ff00')") as s:
        ...     s.run("SELECT a FROM t")
        [['\\\\xff00']]
    """

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._slots = threading.BoundedSemaphore(self.limits.max_sessions)

    def session(self, *, deadline: float) -> SandboxSession:
        """A new session that ends by ``deadline`` (``time.monotonic()`` seconds); call :meth:`SandboxSession.open`."""
        return SandboxSession(self, deadline)


def _main(argv: list[str]) -> None:
    options = json.loads(argv[0])
    cpu_seconds, deadline_s = options.pop("cpu_seconds"), options.pop("deadline_s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin, sys.stdout, SandboxLimits(**options), cpu_seconds, deadline_s)


if __name__ == "__main__":
    _main(sys.argv[1:])
