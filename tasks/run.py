"""The imperative shell of one run of a flow (deploy, rollback): its steps, each timed and
kept in the release record in the cluster, a Prefect event, a notification and Kubernetes
Events on the app's Deployments (tasks.kubeevents) per stage, and
its report, notifications and metrics once the deploy lock is released. The flows and their
migration steps (flows/migration_steps.py) share it; ``untracked`` runs a step without a
Prefect task run of its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from typing import Any, ParamSpec, TypeVar

from prefect import Task, get_run_logger
from prefect.events import emit_event

from bascule import history as h
from bascule import kubeevents, report
from bascule.analysis import Evaluation
from bascule.checks import CheckResult
from bascule.errors import OperationFailed
from bascule.outcome import StateName
from bascule.redact import redact, redact_data
from bascule.retry import retry
from bascule.tasks import abort, analysis, artifacts, monitoring, state
from bascule.tasks.context import Env
from bascule.tasks.kubeevents import Story
from bascule.tasks.notify import Notifier

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
STEPS = 10  # steps of a deploy, for the progress artifact


class Run:
    """The imperative shell of one run: times each step, keeps the release record in the
    cluster current, and emits a Prefect event per stage."""

    def __init__(
        self, env: Env, release: h.Release, baseline: Future[list[CheckResult]] | None = None
    ) -> None:
        self.env, self.release = env, release
        if env.lock_broken:  # who broke a live run's lock for this one, and why
            self.release = release.with_step(
                h.Step("lock-broken", "ok", 0.0, env.lock_broken, time.time())
            )
        self.checks: list[CheckResult] = []
        self._baseline = baseline  # preflight's baseline checks, under way
        self.evaluations: list[Evaluation] = []
        self.details: list[str] = []
        self.sections: list[str] = []  # Markdown of its own in the report (the migration plan)
        self.preview: str | None = None  # the configured preview link (preview.url), once known
        # Whether the run was asked to stop, looked at before each step: the deploy pipeline
        # watches its own flow run (tasks.abort); other runs never stop on request.
        self.watch = abort.Watch(None)
        self.log = get_run_logger()
        self.artifacts = artifacts.Writer(self.log)
        self.artifacts.progress(0.0, f"{release.kind} of {release.image} to {env.name}")
        self.report_key = f"deploy-{env.app}-{env.name}"
        self.notifier = Notifier.open(env.cfg.notifications, self.log, self.report_key)
        self.story = Story(env, release.kind.title(), self.log)

    def save(self, **changes: Any) -> None:
        self.release = replace(self.release, api_requests=self.env.kube.requests, **changes)
        # A plain call, no task run of its own (its 409 and outage retries are its own).
        state.save(self.env, self.release)

    def event(self, stage: str, **payload: Any) -> None:
        self.tell(*kubeevents.stage_notes(stage, self.release, payload))
        emit_event(
            event=f"bascule.deploy.{stage}",
            resource={
                "prefect.resource.id": f"bascule.app.{self.env.app}.{self.env.name}",
                "prefect.resource.name": f"{self.env.app} in {self.env.name}",
            },
            related=[
                {
                    "prefect.resource.id": f"bascule.release.{self.release.id}",
                    "prefect.resource.role": "release",
                }
            ],
            payload=redact_data(
                {
                    "release": self.release.id,
                    "image": self.release.image,
                    "color": self.release.color,
                    **payload,
                }
            ),
        )
        failing = [f"{c.target} {c.name}: {c.detail}" for c in self.checks if not c.passed]
        self.notifier.send(
            stage,
            self.env.app,
            self.env.name,
            self.release,
            reason=str(payload.get("reason", "")),
            failed_checks=failing,
            preview_url=self.preview,
            signed=self.env.cfg.approval.allowed_signers is not None,
        )

    def tell(self, *notes: kubeevents.Note) -> None:
        """Kubernetes Events on the app's Deployments: best effort, never a failure."""
        self.story.tell(notes)

    def approval_refused(self, reason: str) -> None:
        """An approval that did not verify: kept in the history; traffic did not move."""
        step = h.Step("approval-refused", "failed", 0.0, redact(reason), time.time())
        self.release = self.release.with_step(step)
        self.save()

    def skip(self, name: str, why: str) -> None:
        self.log.info("%s: %s", name, why)
        self.release = self.release.with_step(h.Step(name, "skipped", 0.0, why, time.time()))

    def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        detail: str = "",
        summary: Callable[[T], str] | None = None,
    ) -> T:
        self.watch.check()
        started, outage = time.monotonic(), self.env.kube.outage_seconds
        self.log.info("%s ...", name)
        try:
            result = fn(*args)
        except Exception as exc:
            self.release = self.release.with_step(
                h.Step(name, "failed", time.monotonic() - started, str(exc), time.time())
            )
            raise
        text = detail or (summary(result) if summary else result if isinstance(result, str) else "")
        if isinstance(result, analysis.Passed):
            self.evaluations.extend(result.evaluations)
            text = result.detail
        waited = self.env.kube.outage_seconds - outage
        if waited:  # why a step took longer than usual
            text += f" (waited out {waited:.0f} s of Kubernetes API outage)"
        if text:
            self.log.info("%s: %s", name, text)
        self.release = self.release.with_step(
            h.Step(name, "ok", time.monotonic() - started, text, time.time())
        )
        self.event(name)
        done = len(self.release.steps) / max(len(self.release.steps), STEPS) * 100
        self.artifacts.progress(done, f"{name}: done")
        return result

    def join_baseline(self) -> None:
        """Puts the baseline checks' results first among the run's checks, once they are
        done; their failure to run is a warning, as a failed baseline check is."""
        if self._baseline is None:
            return
        future, self._baseline = self._baseline, None
        try:
            self.checks[:0] = future.result()
        except Exception as exc:
            self.log.warning("baseline checks not run: %s", exc)

    def failed_with(self, exc: Exception) -> None:
        """Keeps the evaluations a failed gate made, for the report."""
        if isinstance(exc, analysis.VerificationFailed):
            self.evaluations.extend(exc.evaluations)
            self.tell(kubeevents.verification_failed(self.release, str(exc)))

    def checked(self, name: str, results: list[CheckResult]) -> None:
        self.checks.extend(results)
        failed = [f"{c.name}: {c.detail}" for c in results if not c.passed]
        for c in results:
            self.log.info(c.line())
        if results:
            self.tell(kubeevents.checks_note(self.release, name, failed, len(results)))
        if failed:
            raise CheckFailed(f"{name}: " + "; ".join(failed))

    def publish(self, ending: StateName | None = None) -> None:
        """Notifications, monitoring and the report, once the deploy lock is released
        (``exclusively``): they need no lock and may wait (for a slow webhook, up to the
        notifications' bound), and a rollback or deploy may be waiting for it."""
        self.env.after_unlock.append(partial(self._publish, ending))

    def _publish(self, ending: StateName | None) -> None:
        self.story.flush()
        self.join_baseline()  # a run that failed before the switch did not join them yet
        if delivered := self.notifier.finish():  # waits (bounded) for messages under way
            self.details.append(delivered)
        self.details.append(
            untracked(monitoring.deliver)(
                self.env, self.release, ending == StateName.APPROVAL_TIMED_OUT
            )
        )
        self.artifacts.progress(100.0, self.release.result)
        md = report.render(
            self.env.app,
            self.env.name,
            self.release,
            self.checks,
            self.details,
            self.env.kube.requests,
            self.evaluations,
            analysis.skipped(self.env.cfg.analysis),
            self.sections,
            self.preview,
        )
        if self.evaluations:
            self.artifacts.table(
                key=f"analysis-{self.env.app}-{self.env.name}",
                table=[report.evaluation_row(e) for e in self.evaluations],
                description=f"Prometheus analysis of {self.release.id}",
            )
        self.artifacts.markdown(
            key=self.report_key,
            markdown=md,
            description=f"{self.release.kind} {self.release.id}: {self.release.result}",
        )
        self.artifacts.flush()


class CheckFailed(OperationFailed):
    pass


def untracked(task: Task[P, R]) -> Callable[P, R]:
    """``task``'s function with the retries it declares, run in the flow without a Prefect
    task run of its own. For the short steps of a run (a request or two each): creating and
    finishing a task run cost 20-60 ms each on a busy machine, more than most of these
    steps, and 1-2 s on a busy Prefect server. The run's step record (its history, event,
    progress and report) is what tells about them."""

    def declared(_: Exception, failed: int) -> float | None:
        return _delay(task.retry_delay_seconds, failed) if failed <= task.retries else None

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return retry(lambda: task.fn(*args, **kwargs), declared, Exception)

    return call


def _delay(delays: float | list[float] | None, failed: int) -> float:
    """The wait after failed try ``failed`` (1-based), read as Prefect reads
    ``retry_delay_seconds``: a list gives one per retry, its last repeated."""
    if isinstance(delays, list):
        return delays[min(failed, len(delays)) - 1] if delays else 0.0
    return delays or 0.0
