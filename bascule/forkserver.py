"""A fork server: flow runs started from a process that has already imported Prefect and
Bascule, instead of a new interpreter that spends ~1.7 s importing them.

    worker ──(Unix socket, 0700 directory)──> server ──fork──> run

The server is a single-threaded process of its own (bascule/flows/launch.py starts it with
``--fork-server``): forking the worker, whose event loop and client run on several threads,
could leave a lock held forever in the child. The server checks it still has one thread before
every fork and refuses otherwise.

A request is one SOCK_SEQPACKET message: the run's working directory, environment and argv,
whether it gets a session of its own, and three file descriptors (SCM_RIGHTS) for its stdin,
stdout and stderr, so its output goes where the worker's would. The server answers with the
child's pid, and with its exit status once it has reaped it (``returncode`` as subprocess
reports it: negative for a signal). The child closes every descriptor above 2 (the server's
sockets, other runs' descriptors), as subprocess does, before anything of the run executes.

In the worker, ``ForkServerStarter`` is Prefect's EngineCommandStarter (same environment, same
control channel) whose process comes from the server; when the server is gone or refuses, the
run starts as a new process, as before, and the worker logs why.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.runner import _starter_engine
from prefect.runner._process_manager import ProcessHandle
from prefect.runner._starter_engine import EngineCommandStarter
from prefect.utilities.processutils import run_process as _prefect_run_process

FORK_SERVER_FLAG = "--fork-server"
READY = b"ready\n"
SOCKET_NAME = "forks.sock"
MAX_MESSAGE = 1 << 20  # a run's environment is a few KiB
STDIO = 3  # stdin, stdout, stderr
READY_TIMEOUT_S = 60.0
# A fork server that died is started again for the next run, but not sooner than this after
# the last start: one that dies at once must not cost every run a start.
RESTART_INTERVAL_S = 60.0
# The exit status given when the server went away before reporting its child's.
UNKNOWN_EXIT = 1


class ProtocolError(ValueError):
    """A message that is not what the other side sends."""


class ForkUnavailable(RuntimeError):
    """The server cannot start this run: the worker starts it as a new process."""


@dataclass(frozen=True)
class Request:
    cwd: str
    env: dict[str, str]
    argv: list[str]  # sys.argv[1:] of the run
    new_session: bool = False


def encode_request(request: Request) -> bytes:
    return json.dumps(
        {
            "cwd": request.cwd,
            "env": request.env,
            "argv": request.argv,
            "new_session": request.new_session,
        }
    ).encode()


def decode_request(data: bytes) -> Request:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"fork request: not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("fork request: not an object")
    cwd, env, argv, new_session = (raw.get(k) for k in ("cwd", "env", "argv", "new_session"))
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        raise ProtocolError(f"fork request: cwd must be an absolute path, got {cwd!r}")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ProtocolError("fork request: env must map strings to strings")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ProtocolError("fork request: argv must be a list of strings")
    if not isinstance(new_session, bool):
        raise ProtocolError("fork request: new_session must be true or false")
    return Request(cwd=cwd, env=env, argv=argv, new_session=new_session)


@dataclass(frozen=True)
class Reply:
    """One of: the child's ``pid``; its ``exit`` status; why the server ``refused``."""

    pid: int | None = None
    exit: int | None = None
    refused: str | None = None


def encode_reply(reply: Reply) -> bytes:
    fields = {k: v for k, v in vars(reply).items() if v is not None}
    if len(fields) != 1:
        raise ProtocolError(f"fork reply: exactly one of pid, exit, refused, got {fields}")
    return json.dumps(fields).encode()


def decode_reply(data: bytes) -> Reply:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"fork reply: not JSON ({exc})") from exc
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ProtocolError(f"fork reply: one field expected, got {raw!r}")
    ((key, value),) = raw.items()
    if key in ("pid", "exit") and isinstance(value, int) and not isinstance(value, bool):
        return Reply(pid=value) if key == "pid" else Reply(exit=value)
    if key == "refused" and isinstance(value, str):
        return Reply(refused=value)
    raise ProtocolError(f"fork reply: unknown field or type {raw!r}")


def fork_refusal(thread_count: int) -> str | None:
    """Why the server must not fork now; None if it may."""
    if thread_count != 1:
        return (
            f"the fork server has {thread_count} threads, not 1: a forked child could inherit "
            "a lock held by another thread"
        )
    return None


# --- The server (a process of its own) ---------------------------------------------------


def serve(directory: Path) -> Request | None:
    """Serves fork requests on ``directory``/forks.sock until its stdin closes (the worker
    is gone); returns None then. In a forked child, returns the child's request, the process
    already set up as asked: the caller runs the run and exits."""
    return _Server(directory).run()


class _Server:
    def __init__(self, directory: Path) -> None:
        self.path = directory / SOCKET_NAME
        self.pid = os.getpid()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(self.path))
        self.listener.listen(16)
        self.wake_r, self.wake_w = socket.socketpair()
        for end in (self.wake_r, self.wake_w):
            end.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "reap")
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        self.pending: set[socket.socket] = set()  # connected, request not read yet
        self.waiting: dict[int, socket.socket] = {}  # child pid -> its worker's connection

    def run(self) -> Request | None:
        # A terminal's Ctrl-C reaches the worker's whole group: the server stays to report its
        # children's exits, and ends when the worker does (stdin).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w.fileno())
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
        while True:
            for key, _ in self.selector.select():
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        self._close()
                        return None
                elif key.data == "reap":
                    self._reap()
                elif key.data == "accept":
                    conn, _ = self.listener.accept()
                    self.pending.add(conn)
                    self.selector.register(conn, selectors.EVENT_READ, conn)
                else:
                    child = self._serve(key.data)
                    if child is not None:
                        return child

    def _serve(self, conn: socket.socket) -> Request | None:
        self.selector.unregister(conn)
        self.pending.discard(conn)
        fds: list[int] = []
        try:
            data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, STDIO)
            request = self._check(conn, data, fds, flags)
            refusal = fork_refusal(threading.active_count())
            if refusal is not None:
                raise ForkUnavailable(refusal)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self._become(request, fds, conn)
                return request
            with contextlib.suppress(OSError):  # a worker gone already: its run goes on
                conn.send(encode_reply(Reply(pid=pid)))
            self.waiting[pid] = conn
        except (ProtocolError, ForkUnavailable, OSError) as exc:
            with contextlib.suppress(OSError):
                conn.send(encode_reply(Reply(refused=str(exc))))
            conn.close()
        finally:
            if os.getpid() == self.pid:
                for fd in fds:
                    os.close(fd)
        return None

    def _check(self, conn: socket.socket, data: bytes, fds: list[int], flags: int) -> Request:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError(f"fork request: longer than {MAX_MESSAGE} bytes or fds")
        if len(fds) != STDIO:
            raise ProtocolError(f"fork request: {len(fds)} file descriptors, not {STDIO}")
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        uid = int.from_bytes(creds[4:8], sys.byteorder)
        if uid != os.getuid():
            raise ProtocolError(f"fork request from uid {uid}, not the server's {os.getuid()}")
        return decode_request(data)

    def _reap(self) -> None:
        with contextlib.suppress(OSError):
            while self.wake_r.recv(4096):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):  # the worker may have stopped waiting
                    conn.send(encode_reply(Reply(exit=os.waitstatus_to_exitcode(status))))
                conn.close()

    def _become(self, request: Request, fds: list[int], conn: socket.socket) -> None:
        """The child: nothing of the server left, the process set up as the request asks."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            # Sockets forgotten, not closed: closerange closes their descriptors, and a socket
            # object collected later must not close a number the run has reused by then.
            for sock in (self.listener, self.wake_r, self.wake_w, conn, *self.pending):
                sock.detach()
            for sock in self.waiting.values():
                sock.detach()
            if request.new_session:
                os.setsid()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            # The server's socket and connections, other runs' descriptors: none survive.
            os.closerange(STDIO, os.sysconf("SC_OPEN_MAX"))
            os.chdir(request.cwd)
            os.environ.clear()
            os.environ.update(request.env)
            sys.argv = [sys.argv[0], *request.argv]
        except BaseException:
            os.write(
                2, f"bascule fork server: child setup failed\n{traceback.format_exc()}".encode()
            )
            os._exit(70)

    def _close(self) -> None:
        self.selector.close()
        self.listener.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.path.parent.rmdir()  # the worker's, should it have gone without removing it
        for conn in (*self.pending, *self.waiting.values()):
            conn.close()


# --- The worker's side -------------------------------------------------------------------


class ForkServer:
    """A fork server started by the worker, and the way to ask it for a run."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path) -> None:
        self.process = process
        self.directory = directory
        self._ready = False
        self._ready_lock = threading.Lock()  # runs starting together read one ready line

    @classmethod
    def start(cls, launcher: Sequence[str], env: Mapping[str, str]) -> ForkServer:
        """``launcher`` (``python -P -m module``), with ``--fork-server DIR`` added, in a new
        private (0700) directory; not waited for (see ``wait_ready``)."""
        directory = Path(tempfile.mkdtemp(prefix="bascule-forks-"))
        try:
            process = subprocess.Popen(
                [*launcher, FORK_SERVER_FLAG, str(directory)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=dict(env),
                cwd=directory,
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(process, directory)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Blocks until the server has imported everything and listens."""
        with self._ready_lock:
            if not self._ready:
                self._read_ready(timeout)

    def _read_ready(self, timeout: float) -> None:
        assert self.process.stdout is not None
        stdout = self.process.stdout.fileno()
        selector = selectors.DefaultSelector()
        with selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise ForkUnavailable(f"the fork server was not ready within {timeout:.0f} s")
        line = os.read(stdout, len(READY))
        if line != READY:
            raise ForkUnavailable(
                f"the fork server exited ({self.process.poll()}) before it was ready"
            )
        self._ready = True

    def spawn(self, request: Request, stdio: Sequence[int]) -> Forked:
        """A run forked as ``request`` asks, its stdin, stdout, stderr ``stdio``."""
        if self.process.poll() is not None:
            raise ForkUnavailable(f"the fork server exited with {self.process.returncode}")
        self.wait_ready()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(str(self.directory / SOCKET_NAME))
            socket.send_fds(conn, [encode_request(request)], list(stdio))
            reply = decode_reply(conn.recv(MAX_MESSAGE))
        except (OSError, ProtocolError) as exc:
            conn.close()
            raise ForkUnavailable(f"the fork server did not answer: {exc}") from exc
        if reply.pid is None:
            conn.close()
            raise ForkUnavailable(f"the fork server refused: {reply.refused or reply}")
        conn.setblocking(False)
        return Forked(reply.pid, conn)

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the server (its stdin closes); runs it started go on, reparented."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class KeptForkServer:
    """The worker's fork server, started again when it has died (see RESTART_INTERVAL_S).
    Until then, and if it could not start at all, runs start as new processes."""

    def __init__(
        self,
        launcher: Sequence[str],
        env: Mapping[str, str],
        logger: Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._launcher, self._env, self._logger, self._clock = launcher, env, logger, clock
        self._server = self._start()

    def _start(self) -> ForkServer | None:
        self._started = self._clock()
        try:
            return ForkServer.start(self._launcher, self._env)
        except OSError as exc:
            self._logger.warning("No fork server (%s): runs start as new processes", exc)
            return None

    def current(self) -> ForkServer | None:
        """The server for the next run: the running one, or a new one if it died."""
        server = self._server
        if server is None or server.process.poll() is None:
            return server
        if self._clock() - self._started < RESTART_INTERVAL_S:
            return server  # its runs start as new processes, their logs say why
        self._logger.warning(
            "The fork server exited with %s: starting another", server.process.returncode
        )
        server.stop()
        self._server = self._start()
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class Forked(anyio.abc.Process):
    """A run forked by the server, as Prefect's ProcessHandle sees a process: not the
    worker's child, so signals go by pid (os.kill) and its exit comes from the server."""

    def __init__(self, pid: int, conn: socket.socket) -> None:
        self._pid = pid
        self._conn = conn
        self._returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def connection(self) -> socket.socket:
        """The server's connection: its one message to come is the exit status."""
        return self._conn

    async def wait(self) -> int:
        while self._returncode is None:
            await anyio.wait_readable(self._conn)
            try:
                data = self._conn.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                exit_status = decode_reply(data).exit
                if exit_status is None:
                    raise ProtocolError(f"fork reply: an exit status expected, got {data!r}")
                self._returncode = exit_status
            else:
                await self._outlive()
        return self._returncode

    async def _outlive(self) -> None:
        # The server went away: its child, reparented, is watched until it is gone.
        logging.getLogger(__name__).warning(
            "the fork server went away while run process %s ran; its exit status is lost",
            self._pid,
        )
        while _alive(self._pid):
            await anyio.sleep(0.5)
        self._returncode = UNKNOWN_EXIT

    def send_signal(self, signal: int) -> None:
        if self._returncode is None:  # once reaped, the pid may be another process's
            os.kill(self._pid, signal)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def aclose(self) -> None:
        self._conn.close()

    @property
    def stdin(self) -> None:
        return None

    @property
    def stdout(self) -> None:
        return None

    @property
    def stderr(self) -> None:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Prefect's EngineCommandStarter starts its process through its module's `run_process` (its
# docstring: "patch the module to override"). The patch sends to the fork server only the
# starts of a ForkServerStarter, marked by this context variable; any other start is Prefect's.
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
_SERVER: contextvars.ContextVar[tuple[ForkServer, Logger] | None] = contextvars.ContextVar(
    "bascule_fork_server", default=None
)


async def _run_process(
    command: list[str],
    *,
    stream_output: bool | tuple[Any, Any] = False,
    task_status: anyio.abc.TaskStatus[Any] | None = None,
    task_status_handler: Callable[[anyio.abc.Process], Any] | None = None,
    **kwargs: Any,
) -> anyio.abc.Process:
    chosen = _SERVER.get()
    prefect_start = {
        "stream_output": stream_output,
        "task_status": task_status,
        "task_status_handler": task_status_handler,
        **kwargs,
    }
    if chosen is None:
        return await _prefect_run_process(command, **prefect_start)
    server, logger = chosen
    try:
        forked = await _fork(server, stream_output, **kwargs)
    except ForkUnavailable as exc:
        logger.warning("Starting the run as a new process: %s", exc)
        return await _prefect_run_process(command, **prefect_start)
    try:
        if task_status is not None:
            task_status.started(task_status_handler(forked) if task_status_handler else forked.pid)
        await forked.wait()
    finally:
        await forked.aclose()
    return forked


async def _fork(
    server: ForkServer,
    stream_output: bool | tuple[Any, Any],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None,
    start_new_session: bool = False,
    **unexpected: Any,
) -> Forked:
    if unexpected:
        raise ForkUnavailable(f"a start with {sorted(unexpected)} is not one it can make")
    if stream_output not in (True, False):
        raise ForkUnavailable("output to other sinks than the worker's own")
    request = Request(
        cwd=os.path.abspath(cwd if cwd is not None else os.getcwd()),
        env=dict(env),
        argv=[],
        new_session=start_new_session,
    )
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        # Where Prefect would copy the run's output: the worker's own stdout and stderr.
        out = [_fileno(sys.stdout), _fileno(sys.stderr)] if stream_output else [devnull] * 2
        stdio = [devnull, *out]
        return await anyio.to_thread.run_sync(server.spawn, request, stdio)
    finally:
        os.close(devnull)


def _fileno(stream: Any) -> int:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        raise ForkUnavailable("the worker's output has no file descriptor to hand over") from None


class ForkServerStarter(EngineCommandStarter):
    """EngineCommandStarter, its run forked by ``server`` (None: a new process, as Prefect's)."""

    def __init__(self, server: ForkServer | None, logger: Logger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server = None if server is None else (server, logger)
        _starter_engine.run_process = _run_process  # type: ignore[attr-defined]

    async def start(
        self,
        flow_run: Any,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        token = _SERVER.set(self._server)
        try:
            await super().start(flow_run, task_status=task_status)
        finally:
            _SERVER.reset(token)
