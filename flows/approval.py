"""The approval gate: the run pauses with a form that shows what is being approved, and
only an explicit approval with an approver's name lets traffic move. Where the environment
has an allowed_signers file, only an approval signed by a key listed there does, and the
history records the key's principal, not the typed name (``bascule.signoff``). With
``approval.min_signers``, the run stays paused until that many different keys signed; with
``approval.four_eyes``, neither the commit's author nor its signer counts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from prefect import State, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.input import RunInput, keyset_from_paused_state
from prefect.input.actions import read_flow_run_input
from prefect.runtime import flow_run
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

from bascule.checks import CheckResult
from bascule.history import Approver, Release, now_iso
from bascule.markdown import code, table
from bascule.redact import redact
from bascule.signoff import (
    DEFAULT_KEY,
    PREVIEW_KEY,
    REQUEST_KEY,
    Commit,
    Request,
    Signer,
    UnknownCommit,
    Unverified,
    four_eyes_problem,
    repeat_problem,
    sign_command,
)
from bascule.sshsig import verify
from bascule.tasks import abort

# Prefect fails a paused run on the server once its pause times out, and from then on
# refuses the flow's own final state ("The flow was … and never resumed."): the flow's
# cleanup and its ApprovalTimedOut would race the server's expiry service. So the server's
# deadline is set this much later than Bascule's, and at Bascule's own deadline the flow
# takes its run back (Paused → Running) and ends it itself.
SERVER_GRACE_S = 120
POLL_S = 2.0  # how soon an answer is seen
PAUSE_KEY = "approval"  # one approval per run


class Approval(RunInput):
    approve: bool = Field(default=False, description="Tick to switch traffic to the new version")
    # Required and non-blank: the server refuses a resume without it and the run stays paused.
    approver: str = Field(min_length=1, pattern=r"\S", description="Your name, for the record")
    comment: str = Field(default="", description="Why; kept in the history")
    signature: str = Field(
        default="",
        description=(
            "Where approvals are signed: the output of the command above (line breaks may go)"
        ),
    )


@dataclass(frozen=True)
class Decision:
    approved: bool
    approver: str | None
    comment: str | None
    reason: str
    timed_out: bool = False
    approver_key: str | None = None  # the fingerprint of the key that signed the approval
    # Every signed approval that counted, the first being ``approver``: all min_signers of
    # them when approved, fewer when the run was rejected or timed out meanwhile.
    signers: tuple[Approver, ...] = ()


@dataclass(frozen=True)
class Signing:
    """An approval that must be signed: what, and whose keys may."""

    request: Request
    allowed_signers: Path
    min_signers: int = 1
    # approval.four_eyes: the commit whose author and signing key may not approve.
    commit: Commit | UnknownCommit | None = None

    def problem(self, signer: Signer, counted: Sequence[Approver]) -> str | None:
        """Why a good signature by ``signer`` does not count after ``counted``; None: it does."""
        if self.commit is not None and (refused := four_eyes_problem(signer, self.commit)):
            return refused
        return repeat_problem(signer, [Signer(a.principal, a.fingerprint) for a in counted])

    def instructions(self) -> str:
        run = self.request.run
        many = (
            f"This switch needs {self.min_signers} approvals, each signed by a different "
            "approver's key. "
            if self.min_signers > 1
            else ""
        )
        return (
            "\n\n### Sign to approve\n\n"
            f"Only a signature by a key listed in {code(self.allowed_signers.name)} approves; "
            f"the history records that key's principal. {many}{self._four_eyes()}"
            "Run this and paste its output into **signature**:\n\n"
            f"```\n{sign_command(self.request)}\n```\n\n"
            f"or run {code(f'bascule approve {run} --key {DEFAULT_KEY}')}. "
            "The signature is good for this run only. A rejection needs no signature."
        )

    def _four_eyes(self) -> str:
        if isinstance(self.commit, UnknownCommit):
            return f"**No approval can count**: four eyes, and {self.commit.reason}. "
        if self.commit is None:
            return ""
        c = self.commit
        signed = f", nor the key {code(c.signing_key)} that signed it" if c.signing_key else ""
        return (
            f"Four eyes: not the author of commit {code(c.sha[:12])} "
            f"({c.author_name} <{c.author_email}>){signed}. "
        )

    def progress(self, counted: Sequence[Approver]) -> str:
        """What the form says once some approvals counted and more are needed."""
        who = ", ".join(f"{a.principal} (SSH key {code(a.fingerprint)})" for a in counted)
        more = self.min_signers - len(counted)
        return (
            f"**Signed so far ({len(counted)} of {self.min_signers})**: {who}. "
            f"{more} more approval{'s' * (more != 1)} needed, each signed by another "
            "approver's key.\n\n"
        )


def description(
    app: str,
    environment: str,
    release: Release,
    checks: Sequence[CheckResult],
    preview: str,
    migrations: str = "",
) -> str:
    """``migrations``: the migration plan's Markdown (each revision's SQL, the lint findings):
    the approver sees what the expand phase did and what the contract phase will do."""
    rows = [(c.target, c.name, "pass" if c.passed else "FAIL", c.detail) for c in checks]
    return (
        f"## Approve {app} in {environment}?\n\n"
        f"- Image: {code(release.previous_image or '(none)')} → {code(release.image)}\n"
        f"- Traffic: {release.previous_color or '(none)'} → {release.color}\n"
        f"- Preview: {preview}\n"
        + "".join(
            f"- Migrations ({m.phase}, done before the idle color started): "
            f"{code(m.before or 'base')} → {code(m.after or 'base')}\n"
            for m in release.migrations
        )
        + "\n"
        + table(("target", "check", "result", "detail"), rows)
        + (f"\n\n{migrations.strip()}" if migrations else "")
        + "\n\nTick **approve** and give your name to switch traffic. Anything else — no name, "
        "approve left unticked, or no answer in time — means no switch."
    )


def judge(answer: Approval, signed: Signer | Unverified | None = None, at: str = "") -> Decision:
    """Fail safe: only a ticked approve with a named approver approves, and where approvals
    are signed (``signed`` is the verification of its signature) only a good signature;
    then the signer's principal is the approver, whatever name was typed. ``at``: when."""
    name = answer.approver.strip()
    comment = answer.comment.strip() or None
    if not answer.approve:
        return Decision(
            False, name or None, comment, f"rejected by {name or 'an unnamed reviewer'}"
        )
    if isinstance(signed, Signer):
        return approved_by([Approver(signed.principal, signed.fingerprint, at, comment or "")])
    if isinstance(signed, Unverified):
        # The typed name is a claim only: it goes in the reason, not in the approver field.
        claimed = f" (typed name: {name})" if name else ""
        return Decision(False, None, comment, f"approval refused{claimed}: {signed.reason}")
    if name:
        return Decision(True, name, comment, f"approved by {name}")
    return Decision(False, None, comment, "approval without an approver's name is not valid")


def approved_by(signers: Sequence[Approver]) -> Decision:
    """The approval that ``signers`` (at least one) gave together; the first is the approver
    older records name, and each one's comment is kept under their principal."""
    first, *_ = signers
    who = " and ".join(f"{a.principal} (SSH key {a.fingerprint})" for a in signers)
    several = len(signers) > 1
    notes = [f"{a.principal}: {a.comment}" if several else a.comment for a in signers if a.comment]
    return Decision(
        True,
        first.principal,
        "; ".join(notes) or None,
        f"approved by {who}",
        approver_key=first.fingerprint,
        signers=tuple(signers),
    )


def request_approval(
    text: str,
    timeout_s: int,
    signing: Signing | None = None,
    on_refused: Callable[[str], None] = lambda reason: None,
    preview: str | None = None,
) -> Decision:
    """Pauses the run with the approval form until someone answers or ``timeout_s`` pass;
    with ``signing``, an approval counts only with a good signature of its request. An
    approval whose signature does not verify moves nothing: ``on_refused`` is told why and
    the run pauses again, with the reason on the form, until a valid answer or the deadline
    (whoever can resume runs could reject it anyway; a mistyped paste costs no deploy). It
    pauses again too after each signed approval that counted, until ``signing.min_signers``.
    ``preview``: the link the form shows, kept as a run input for ``bascule pending``."""
    run_id = UUID(str(flow_run.id))
    if signing is not None:
        text += signing.instructions()
    until = datetime.now(UTC) + timedelta(seconds=timeout_s)
    text += f"\n\nThe run waits for an answer until {until:%H:%M:%S} UTC."
    deadline = time.monotonic() + timeout_s
    refused: list[str] = []
    counted: list[Approver] = []
    answers = 0
    with get_client(sync_client=True) as client:
        if signing is not None:
            value = json.dumps(asdict(signing.request))
            client.create_flow_run_input(run_id, REQUEST_KEY, value)
        if preview is not None:
            client.create_flow_run_input(run_id, PREVIEW_KEY, json.dumps(redact(preview)))
        while True:
            # A pause key fires once: each pause after the first needs its own.
            key = PAUSE_KEY if not answers else f"{PAUSE_KEY}-{answers}"
            notice = f"**Not approved yet** — {refused[-1]}\n\n" if refused else ""
            if signing is not None and counted:
                notice = signing.progress(counted) + notice
            answer = _pause_for_answer(client, run_id, key, notice + text, deadline)
            answers += 1
            if answer is None:
                why = f"; refused: {refused[-1]}" if refused else ""
                if signing is not None and counted:
                    names = ", ".join(a.principal for a in counted)
                    why += f"; signed by {len(counted)} of {signing.min_signers}: {names}"
                return Decision(
                    False,
                    None,
                    None,
                    f"no decision within {timeout_s} s{why}",
                    timed_out=True,
                    signers=tuple(counted),
                )
            if signing is None or not answer.approve:
                return replace(judge(answer), signers=tuple(counted))
            signed = verify(signing.request, answer.signature, signing.allowed_signers)
            decision = judge(answer, signed, at=now_iso())
            problem = (
                signing.problem(signed, counted) if isinstance(signed, Signer) else decision.reason
            )
            if problem is None:
                counted.extend(decision.signers)
                if len(counted) >= signing.min_signers:
                    return approved_by(counted)
                get_run_logger().info("%s; more approvals needed", decision.reason)
                refused.clear()
                continue
            get_run_logger().warning("%s; the run waits for a valid answer", problem)
            on_refused(problem)
            refused.append(problem)


def _pause_for_answer(
    client: SyncPrefectClient, run_id: UUID, key: str, text: str, deadline: float
) -> Approval | None:
    """One pause with the form: the answer, or None if none came before ``deadline``."""
    left_s = max(1, round(deadline - time.monotonic()))
    # Initial data would replace a field with a bare one and drop its constraints: only
    # the description is given.
    form = Approval.with_initial_data(description=redact(text))  # quotes check details
    paused: State[None] = Paused(timeout_seconds=left_s + SERVER_GRACE_S, pause_key=key)
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    state = propose_state_sync(client, paused, flow_run_id=run_id)
    if not state.is_paused():
        raise RuntimeError(f"the run could not pause for approval: {state.message}")
    form.save(keyset)
    get_run_logger().info("waiting up to %d s for an approval", left_s)
    while not _resumed(client, run_id):
        left = deadline - time.monotonic()
        if left <= 0:
            # Taken back from the pause, the run cannot be resumed any more; an answer
            # that got in first is still read below.
            propose_state_sync(client, Running(), flow_run_id=run_id)
            break
        time.sleep(min(POLL_S, left))
    answer = read_flow_run_input(keyset["response"], flow_run_id=run_id)
    return None if answer is None else form.model_validate(answer)


def _resumed(client: SyncPrefectClient, run_id: UUID) -> bool:
    """Whether the run was resumed; Aborted if it was asked to stop instead."""
    state = client.read_flow_run(run_id).state
    abort.stopped(state)
    return state is not None and state.is_running()
