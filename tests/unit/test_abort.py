"""What a request to stop a run is: who asked, read from the run's Prefect states
(tasks.abort), and which runs `bascule abort` takes (bascule.cli.abort)."""

from __future__ import annotations

from uuid import uuid4

import pytest
from prefect.states import Cancelled, Cancelling, Paused, Running, State

from bascule.cli.abort import refusal, request_message
from bascule.tasks.abort import UNNAMED, Aborted, asked, stopped


@pytest.mark.parametrize(
    ("states", "who"),
    [
        ([Running()], None),
        ([Running(), Paused()], None),
        # bascule abort's request, the run still stopping or stopped by its worker.
        ([Running(), Cancelling(message="aborted by carol")], "aborted by carol"),
        (
            [Running(), Cancelling(message="aborted by carol"), Cancelled(message="done")],
            "aborted by carol",
        ),
        # The UI's Cancel names no one.
        ([Running(), Cancelling()], UNNAMED),
        ([Running(), Cancelled(message="Flow run was cancelled successfully.")], UNNAMED),
        # Cancelled once, then run again: that request is over.
        ([Cancelling(message="aborted by carol"), Cancelled(), Running()], None),
        ([], None),
    ],
)
def test_who_asked_a_run_to_stop_is_its_cancelling_states_message(
    states: list[State], who: str | None
) -> None:
    assert asked(states) == who


def test_a_run_sees_a_request_to_stop_in_its_current_state() -> None:
    stopped(Running())
    stopped(Paused())
    stopped(None)
    with pytest.raises(Aborted, match=r"^aborted by carol: wrong image$"):
        stopped(Cancelling(message="aborted by carol: wrong image"))
    with pytest.raises(Aborted, match=rf"^{UNNAMED}$"):
        stopped(Cancelling())


def test_the_request_names_who_and_why() -> None:
    assert request_message("carol", "  wrong image ") == "aborted by carol: wrong image"
    assert request_message("carol", "") == "aborted by carol"


@pytest.mark.parametrize(
    ("flow", "state", "refused"),
    [
        ("deploy", ("RUNNING", "Running"), None),
        ("deploy", ("PAUSED", "Paused"), None),
        ("redeploy", ("PENDING", "Pending"), None),
        ("rollback", ("RUNNING", "Running"), "is a run of the rollback flow: only a deploy"),
        ("recover", ("RUNNING", "Running"), "is a run of the recover flow"),
        ("deploy", ("COMPLETED", "Completed"), "has already ended (Completed); nothing was"),
        ("deploy", ("CANCELLED", "Aborted"), "has already ended (Aborted); nothing was"),
    ],
)
def test_only_a_deploy_that_has_not_ended_is_aborted(
    flow: str, state: tuple[str, str], refused: str | None
) -> None:
    run_id = uuid4()
    why = refusal(run_id, flow, *state)
    if refused is None:
        assert why is None
    else:
        assert why is not None and why.startswith(str(run_id)) and refused in why, why
