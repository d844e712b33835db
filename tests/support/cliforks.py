"""The tests' ``bascule`` commands, forked from a process that has imported Bascule, its flows
and Prefect once: the workers' own fork server (bascule/forkserver.py), serving the CLI.

A new ``python -m bascule.cli deploy`` spends about 2 s of CPU importing before it does
anything, and the suite starts a few hundred of them on 2 cores (about 40% of the parallel
stage's CPU, by process accounting). Each command forked here is still a process of its own,
in its own session when asked (``deploys.kill`` signals its group), with its own environment,
working directory, stdout and stderr, and its exit status; what it skips is the import. Prefect
reads its settings again in the child, from the child's environment, as a worker's forked run
does.

One server per test process (xdist worker), started at its first command and stopped when the
process exits. ``BASCULE_TEST_FORKS=0`` starts every command as a new process instead; the
CLI's own entry (``python -m bascule.cli``, the installed ``bascule``) keeps tests of its own
(tests/unit/test_cli.py, the quickstart).

    python -m tests.support.cliforks --fork-server DIR
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from bascule import forkserver

ENABLED = os.environ.get("BASCULE_TEST_FORKS", "1") != "0"

_server: forkserver.ForkServer | None = None
_unavailable: str | None = None  # why commands no longer fork, once they cannot
_server_lock = threading.Lock()


class ForkedCommand:
    """A command forked by the server, as much of ``subprocess.Popen`` as the tests use: its
    pid, ``poll``, ``wait`` (raising ``TimeoutExpired``), ``send_signal``/``kill``/``terminate``
    and ``returncode``. The exit status comes from the server, which reaps it."""

    def __init__(self, argv: Sequence[str], pid: int, conn: socket.socket) -> None:
        self.args = list(argv)
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn

    def poll(self) -> int | None:
        return self._exit(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._exit(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def _exit(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(forkserver.MAX_MESSAGE)
        except (TimeoutError, BlockingIOError):
            return None
        # No reply: the server went away before it reaped the child, whose status is lost.
        reply = forkserver.decode_reply(data) if data else forkserver.Reply()
        self.returncode = forkserver.UNKNOWN_EXIT if reply.exit is None else reply.exit
        self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # once reaped, the pid may be another process's
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


Process = ForkedCommand | subprocess.Popen[bytes]


def start(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: IO[bytes] | int,
    stderr: IO[bytes] | int,
    new_session: bool = False,
) -> Process:
    """``python -m bascule.cli ARGV``, forked when the server can, else a new process."""
    global _unavailable
    if ENABLED and _unavailable is None:
        request = forkserver.Request(str(cwd), dict(env), list(argv), new_session)
        out = _fd(stdout)
        try:
            return _fork(request, out, out if stderr == subprocess.STDOUT else _fd(stderr))
        except forkserver.ForkUnavailable as exc:
            # Said once; from then on every command is a new process, only slower.
            _unavailable = str(exc)
            print(f"tests.support.cliforks: no fork server ({exc})", file=sys.stderr)
    return subprocess.Popen(
        [sys.executable, "-m", "bascule.cli", *argv],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=new_session,
    )


def run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = start(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            list(argv),
            code,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def _fork(request: forkserver.Request, stdout: int, stderr: int) -> ForkedCommand:
    server = _running(request.env)
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        handle = server.spawn(request, [stdin, stdout, stderr])
    finally:
        os.close(stdin)
    handle.connection.setblocking(True)
    return ForkedCommand(request.argv, handle.pid, handle.connection)


def _fd(stream: IO[bytes] | int) -> int:
    return stream if isinstance(stream, int) else stream.fileno()


def _running(env: Mapping[str, str]) -> forkserver.ForkServer:
    """This process's server, started at its first command with that command's environment
    (the children take their own)."""
    global _server
    with _server_lock:
        if _server is None or _server.process.poll() is not None:
            launcher = [sys.executable, "-m", __name__]
            _server = forkserver.ForkServer.start(launcher, {**env, "PYTHONPATH": str(_root())})
            atexit.register(_server.stop)
        server = _server
    server.wait_ready()
    return server


def _root() -> Path:
    return Path(__file__).resolve().parents[2]


def serve(directory: Path) -> None:
    """The server: ``bascule``'s commands, their flows and Prefect's engine imported; each
    request forked into a process that runs ``bascule.cli.main`` with its argv and exits."""
    import bascule.cli
    from bascule.runpolicy import ENTRYPOINTS

    for command in bascule.cli.COMMANDS:
        importlib.import_module(command.module)
    for entrypoint in ENTRYPOINTS.values():
        importlib.import_module(entrypoint.split(":", 1)[0])
    from prefect.context import refresh_global_settings_context

    gc.freeze()  # what is imported stays shared: no collection in a child touches it
    request = forkserver.serve(directory)
    if request is None:
        return
    # Prefect read its settings when it was imported, from the server's environment.
    refresh_global_settings_context()
    try:
        code = bascule.cli.main(request.argv)
    except SystemExit as stop:  # argparse's, for one
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    # What an exit does that matters (Prefect's atexit hooks send the logs and events they
    # hold; the streams are flushed), without tearing down every module the server imported.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:2] != [forkserver.FORK_SERVER_FLAG] or len(sys.argv) != 3:
        sys.exit(f"usage: python -m {__spec__.name if __spec__ else 'cliforks'} --fork-server DIR")
    serve(Path(sys.argv[2]))
