"""The worker's fork server (bascule/forkserver.py): its messages, its refusal to fork with
more than one thread, and a real server started as the worker starts it, forking Bascule's
launcher into a run's directory with the run's environment and output descriptors."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.runner._process_manager import ProcessHandle
from prefect.utilities.processutils import command_to_string

from bascule import forkserver as fs
from bascule.flows.launch import LAUNCH
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit
from bascule.runpolicy import ENTRYPOINTS

REPO = Path(__file__).resolve().parents[2]


def test_a_request_and_each_reply_read_back_as_sent() -> None:
    request = fs.Request(cwd="/tmp/run", env={"A": "1"}, argv=["x"], new_session=True)
    assert fs.decode_request(fs.encode_request(request)) == request
    for reply in (fs.Reply(pid=12), fs.Reply(exit=-9), fs.Reply(refused="why")):
        assert fs.decode_reply(fs.encode_reply(reply)) == reply


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not an object"),
        (b'{"cwd": "run", "env": {}, "argv": [], "new_session": false}', "absolute path"),
        (b'{"cwd": "/r", "env": {"A": 1}, "argv": [], "new_session": false}', "env must"),
        (b'{"cwd": "/r", "env": {}, "argv": "x", "new_session": false}', "argv must"),
        (b'{"cwd": "/r", "env": {}, "argv": [], "new_session": 1}', "new_session must"),
    ],
)
def test_a_malformed_request_is_refused_naming_its_field(raw: bytes, said: str) -> None:
    with pytest.raises(fs.ProtocolError, match=said):
        fs.decode_request(raw)


@pytest.mark.parametrize("raw", [b'{"pid": true}', b'{"pid": 1, "exit": 0}', b'{"other": 1}'])
def test_a_malformed_reply_is_refused(raw: bytes) -> None:
    with pytest.raises(fs.ProtocolError):
        fs.decode_reply(raw)


def test_a_reply_says_exactly_one_thing() -> None:
    with pytest.raises(fs.ProtocolError, match="exactly one"):
        fs.encode_reply(fs.Reply(pid=1, exit=0))


def test_it_forks_only_with_one_thread() -> None:
    assert fs.fork_refusal(1) is None
    assert "2 threads" in (fs.fork_refusal(2) or "")


@pytest.fixture(scope="module")
def server() -> Iterator[fs.ForkServer]:
    started = fs.ForkServer.start(
        [sys.executable, *LAUNCH], {**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def run(
    server: fs.ForkServer, cwd: Path, env: dict[str, str], timeout: float = 60
) -> tuple[fs.Forked, int, str]:
    """A run forked in ``cwd`` with ``env``, its output in a file; its exit status, output."""
    output = cwd / "output"
    with output.open("w") as out:

        async def forked() -> tuple[fs.Forked, int]:
            child = await anyio.to_thread.run_sync(
                server.spawn,
                fs.Request(cwd=str(cwd), env=env, argv=[]),
                [out.fileno(), out.fileno(), out.fileno()],
            )
            with anyio.fail_after(timeout):
                return child, await child.wait()

        child, status = anyio.run(forked)
    return child, status, output.read_text()


def run_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), ENTRYPOINT_ENV: ENTRYPOINTS["deploy"], **extra}
    env.pop("PREFECT__FLOW_RUN_ID", None)
    return {**env, **extra}


def test_a_forked_run_goes_on_as_the_launcher_in_its_directory(
    server: fs.ForkServer, tmp_path: Path
) -> None:
    # The engine's own refusal, written where the worker asked: it got as far as the run.
    _, status, output = run(server, tmp_path, run_env())
    assert status == 1 and "Invalid flow run id" in output, output[-2000:]


def test_a_forked_run_keeps_the_launchers_checks(server: fs.ForkServer, tmp_path: Path) -> None:
    _, status, output = run(server, tmp_path, run_env(**{ENTRYPOINT_ENV: "evil.py:deploy"}))
    assert status == Exit.USAGE and "not one of Bascule's flows" in output, output[-2000:]


def test_a_forked_run_reads_prefects_settings_from_its_own_environment(
    server: fs.ForkServer, tmp_path: Path
) -> None:
    """The server was started without this API; the run asks it for its flow run, and keeps
    no descriptor of the server's (its socket, other runs')."""
    api = socket.create_server(("127.0.0.1", 0))
    run_id = str(uuid.uuid4())
    asked: list[bytes] = []
    shared: list[set[str]] = []
    server_pid = server.process.pid

    def answer() -> None:
        conn, _ = api.accept()
        api.close()
        try:
            asked.append(conn.recv(4096))
            # While the run waits for its answer: what it shares with the server.
            children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text()
            shared.extend(_links(int(pid)) & _links(server_pid) for pid in children.split())
        finally:
            conn.close()

    listener = threading.Thread(target=answer, daemon=True)
    listener.start()
    env = run_env(
        PREFECT_API_URL=f"http://127.0.0.1:{api.getsockname()[1]}/api",
        PREFECT__FLOW_RUN_ID=run_id,
        PREFECT_CLIENT_MAX_RETRIES="0",
    )
    _, status, output = run(server, tmp_path, env)
    listener.join(5)
    assert status != 0
    assert asked and f"/api/flow_runs/{run_id}".encode() in asked[0], output[-2000:]
    assert shared == [set()], shared


def _links(pid: int) -> set[str]:
    """What a process's descriptors are (pipe:[n], socket:[n]), the files aside."""
    fds = Path(f"/proc/{pid}/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith(("pipe:", "socket:")):
            found.add(link)
    return found


def test_a_server_that_is_gone_is_unavailable(tmp_path: Path) -> None:
    gone = fs.ForkServer.start([sys.executable, "-c", "pass"], os.environ)
    gone.process.wait(30)
    try:
        with pytest.raises(fs.ForkUnavailable, match="exited"):
            gone.spawn(fs.Request(cwd=str(tmp_path), env={}, argv=[]), [0, 1, 2])
    finally:
        gone.stop()
    assert not gone.directory.exists()


def start(starter: fs.ForkServerStarter, flow_run: FlowRun) -> tuple[ProcessHandle, int | None]:
    """The starter's run, as Prefect's executor starts it: its handle, and its exit."""

    async def started() -> tuple[ProcessHandle, int | None]:
        async with anyio.create_task_group() as group:
            handle: ProcessHandle = await group.start(starter.start, flow_run)
        return handle, handle.returncode

    return anyio.run(started)


def starter(
    server: fs.ForkServer | None, cwd: Path, logger: logging.Logger, command: str
) -> fs.ForkServerStarter:
    return fs.ForkServerStarter(
        server,
        logger,
        command=command,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), ENTRYPOINT_ENV: "evil.py:deploy"},
        stream_output=False,
    )


def test_prefects_starter_gets_its_run_from_the_fork_server(
    server: fs.ForkServer, tmp_path: Path
) -> None:
    flow_run = FlowRun(flow_id=uuid.uuid4())
    command = command_to_string([sys.executable, *LAUNCH])
    handle, status = start(starter(server, tmp_path, logging.getLogger("t"), command), flow_run)
    assert isinstance(handle.raw_process, fs.Forked), handle.raw_process
    # The launcher's own refusal of the entrypoint: it ran, with the starter's environment.
    assert status == Exit.USAGE


def test_without_its_fork_server_prefects_starter_starts_a_new_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = fs.ForkServer.start([sys.executable, "-c", "pass"], os.environ)
    gone.process.wait(30)
    flow_run = FlowRun(flow_id=uuid.uuid4())
    # What ran, and in which directory: the run's id, as Prefect's starter passes it.
    command = command_to_string(
        [
            sys.executable,
            "-c",
            "import os; open('ran', 'w').write(os.environ['PREFECT__FLOW_RUN_ID'])",
        ]
    )
    try:
        with caplog.at_level(logging.WARNING):
            handle, status = start(
                starter(gone, tmp_path, logging.getLogger("t"), command), flow_run
            )
    finally:
        gone.stop()
    assert not isinstance(handle.raw_process, fs.Forked) and status == 0
    assert (tmp_path / "ran").read_text() == str(flow_run.id)
    assert "as a new process: the fork server exited" in caplog.text, caplog.text


def test_a_fork_server_that_died_is_started_again_once_the_interval_passed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    launcher, env = [sys.executable, *LAUNCH], {**os.environ, "PYTHONPATH": str(REPO)}
    kept = fs.KeptForkServer(launcher, env, logging.getLogger("t"), clock=lambda: now[0])
    try:
        first = kept.current()
        assert first is not None and first.process.poll() is None
        first.process.kill()
        first.process.wait(30)
        now[0] = fs.RESTART_INTERVAL_S - 1  # too soon: its runs start as new processes
        assert kept.current() is first
        now[0] = fs.RESTART_INTERVAL_S
        with caplog.at_level(logging.WARNING):
            second = kept.current()
        assert second is not None and second is not first, second
        assert f"exited with {first.process.returncode}: starting another" in caplog.text
        assert not first.directory.exists()
        _, status, output = run(second, tmp_path, run_env())  # forked by the new one
        assert status == 1 and "Invalid flow run id" in output, output[-2000:]
        assert kept.current() is second
    finally:
        kept.stop()
    assert kept.current() is None
