"""Starting the deploy run: check the arguments, find the deployment, create the run (or find
the one these inputs already made), then follow it and report.

The run is created over Prefect's REST API with httpx alone (``bascule.start_run``, which says
why), and Prefect's client is imported only once the run exists, to follow it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

import httpx

from bascule.errors import BasculeError
from bascule.outcome import Exit, error_line
from bascule.prefect_api import flow_run_url, http_errors, patiently, redact_url, ui_base_url
from bascule.start_run import RunStarter
from bascule.trigger.github import (
    Output,
    annotate_failure,
    append_outputs,
    append_summary,
    commands_stopped,
)
from bascule.trigger.options import Options, check
from bascule.trigger.report import Report

T = TypeVar("T")


def trigger(
    options: Options, out: TextIO = sys.stdout, transport: httpx.BaseTransport | None = None
) -> Exit:
    """Starts (or finds) the deploy run of ``options.environment`` and follows it; returns
    the exit code. ``transport`` answers for the Prefect server in unit tests."""
    output = Output(out, [*options.api.secrets, *options.app_secrets])
    report = Report(
        environment=options.environment,
        image=options.image or f"rollback to {options.to_release or 'the previous good release'}",
        commit=options.commit,
    )
    try:
        check(options)
        code = _Start(output, report, options, transport).run()
    except BasculeError as exc:
        output.line(error_line(str(exc)))
        code = exc.exit
        report.error = str(exc)
    report.exit_code = code
    if options.summary_path is not None and not options.check_only:
        append_summary(output, options.summary_path, report)
    if options.outputs_path is not None and not options.check_only:
        append_outputs(output, options.outputs_path, report)
    return code


class _Start:
    def __init__(
        self,
        out: Output,
        report: Report,
        options: Options,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.out, self.report, self.options, self.transport = out, report, options, transport

    def run(self) -> Exit:
        options, env = self.options, self.options.environment
        where = redact_url(str(options.api.url))
        name = options.deployment_name
        with RunStarter(options.api, self.transport) as rest:
            deployment_id = self._call(
                lambda: rest.deployment_id(name),
                f"reading deployment {name}",
                not_found=f"there is no deployment {name} on the Prefect server at {where}; "
                "create it first (prefect deploy, see prefect.yaml)",
            )
            if options.check_only:
                self.out.line(f"bascule: deployment {name} ({deployment_id}) at {where}")
                self.out.line(
                    f"bascule: would start it with {json.dumps(options.parameters)}, "
                    f"key {options.idempotency_key}"
                )
                return Exit.COMPLETED
            flow_run, created = self._call(
                # Safe to retry: the idempotency key makes a repeated create return the same run.
                lambda: rest.create_flow_run(
                    deployment_id, options.parameters, options.idempotency_key
                ),
                f"starting {name}",
                not_found=f"deployment {name} disappeared while starting it",
            )
        url = flow_run_url(ui_base_url(str(options.api.url), options.api.ui_url), flow_run.id)
        self.report.take(flow_run, url)
        if created:
            self.out.line(f"bascule: started flow run {flow_run.name} ({flow_run.id}) of {name}")
        else:
            self.out.line(
                f"bascule: a flow run for this environment, commit and image exists already: "
                f"{flow_run.name} ({flow_run.id}); following it (--rerun LABEL starts another)"
            )
        if options.rollback:
            to = options.to_release or "the previous good release"
            self.out.line(f"bascule: rollback of {env} to {to}")
        else:
            self.out.line(f"bascule: image {options.image}, commit {options.commit or '-'}")
        self.out.line(f"bascule: watch it at {url}")
        if not options.wait:
            self.report.started_only = True
            return Exit.COMPLETED
        # Prefect's client, imported now that the run exists (the module's docstring).
        from bascule.prefect_client import Prefect
        from bascule.trigger.follow import Follower

        with Prefect(options.api, self.transport) as prefect:
            follower = Follower(prefect, self.out, self.report, options, flow_run.id, url)
            with commands_stopped(self.out, options.github_actions):
                code = follower.follow()
        if options.github_actions and code != Exit.COMPLETED:
            annotate_failure(self.out, env, code, url)
        return code

    def _call(self, call: Callable[[], T], where: str, *, not_found: str) -> T:
        """A call made before the run is followed, tried again while the API is unreachable."""

        def attempt() -> T:
            with http_errors(where, not_found):
                return call()

        options = self.options
        return patiently(attempt, options.api_patience, options.poll_interval, self.out.retrying)
