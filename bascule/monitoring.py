"""What a run tells monitoring, derived from the release history: the series pushed to a
Pushgateway, the alerts posted to Alertmanager, and the four DORA figures of ``bascule stats``.

Pure: plain records in, plain data out; the clock is an argument. ``tasks/monitoring.py``
delivers what is built here.

Definitions, for one app in one environment (the README and ``bascule stats --help`` repeat
them):

- A deployment *went live* when its ``switch`` step succeeded (traffic moved to it). Runs that
  failed or were rejected before the switch never reached users and are not deployments.
- A *change failure* is a deployment that went live and was then taken back: rolled back
  automatically by the post-switch checks (result ``rolled-back``), by hand by a later
  ``bascule rollback`` while it served, or aborted in its verification window (result
  ``aborted``: ``bascule abort``, a cancel in Prefect).
- *Restored* is the moment traffic was back on the previous version (the switch back); the
  time to restore runs from the failed deployment's switch to that moment.
- *Lead time* runs from the commit's time (``--commit-time``) to the switch that made it live,
  over deployments that succeeded.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bascule.history import Release, Step

JOB = "bascule"  # the Pushgateway job; app and environment complete the grouping key
CHANGES = ("deploy", "redeploy")  # kinds that ship a change; a rollback ships none
ALERT_HOLD = timedelta(hours=1)  # how long a posted alert stays active in Alertmanager


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO-8601 time; a time with no zone is taken as UTC."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def normal_time(value: str) -> str:
    """``value``, an ISO-8601 time (UTC if it names no zone), as UTC ``YYYY-MM-DDTHH:MM:SSZ``;
    ValueError naming the expected form if it is not one."""
    try:
        moment = datetime.fromtimestamp(epoch(value), UTC)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO-8601 time — write e.g. 2026-11-28T05:30:00Z "
            "(`git show -s --format=%cI` prints a commit's)"
        ) from None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _step(release: Release, name: str) -> Step | None:
    """The step ``name`` if it ended well."""
    return next((s for s in release.steps if s.name == name and s.result == "ok"), None)


def _step_at(release: Release, name: str) -> float | None:
    step = _step(release, name)
    return step.at if step else None


def went_live(release: Release) -> bool:
    return release.kind in CHANGES and _step_at(release, "switch") is not None


def lead_time(release: Release) -> float | None:
    """Commit to live, for a deployment that succeeded and knew its commit's time."""
    live_at = _step_at(release, "switch")
    if release.result != "succeeded" or not release.commit_time or live_at is None:
        return None
    return live_at - epoch(release.commit_time)


# --- the four DORA figures -----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    release: Release  # the deployment that was taken back
    live_at: float  # its switch
    back: Step | None  # the switch back to the previous version; None if none is recorded
    manual: bool  # by `bascule rollback` rather than by the post-switch checks

    @property
    def restored_at(self) -> float | None:
        return self.back.at if self.back else None

    @property
    def restore_seconds(self) -> float | None:
        return None if self.restored_at is None else self.restored_at - self.live_at


def failures(history: Sequence[Release]) -> list[Failure]:
    """The change failures in ``history`` (oldest first), with when each was restored."""
    out: list[Failure] = []
    serving: Release | None = None  # the newest deployment that went live and stayed
    for r in history:
        if went_live(r):
            live_at = _step_at(r, "switch") or 0.0
            if r.result in ("rolled-back", "aborted"):
                # An aborted run the recovery put right has no switch back of its own.
                back = _step(r, "rollback-switch")
                out.append(Failure(r, live_at, back, manual=r.result == "aborted"))
            elif r.result == "succeeded":
                serving = r
        elif r.kind == "rollback" and r.result == "succeeded" and serving is not None:
            bad_live = _step_at(serving, "switch") or 0.0
            out.append(Failure(serving, bad_live, _step(r, "switch"), manual=True))
            serving = None
    return out


@dataclass(frozen=True)
class Dora:
    app: str
    environment: str
    since: str  # ISO-8601: the start of the period the figures cover
    days: float  # the period's length
    records: int  # history records in the period
    deployments: int
    per_day: float
    change_failures: int
    change_failure_rate: float | None  # None: no deployment in the period
    restores: int
    mean_time_to_restore_seconds: float | None
    lead_times: int  # deployments whose commit time is known
    median_lead_time_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        def duration(seconds: float | None) -> str:
            if seconds is None:
                return "-"
            for unit, size, above in (("d", 86400, 2 * 86400), ("h", 3600, 7200), ("min", 60, 120)):
                if seconds >= above:
                    return f"{seconds / size:.1f} {unit}"
            return f"{seconds:.1f} s"

        rate = "-" if self.change_failure_rate is None else f"{self.change_failure_rate:.0%}"
        return [
            f"{self.app} in {self.environment}: {self.records} records since {self.since} "
            f"({self.days:.1f} days)",
            f"deployment frequency:   {self.per_day:.2f} per day ({self.deployments} went live)",
            f"change failure rate:    {rate} ({self.change_failures} of {self.deployments})",
            f"mean time to restore:   {duration(self.mean_time_to_restore_seconds)} "
            f"({self.restores} restores)",
            f"lead time for changes:  {duration(self.median_lead_time_seconds)} median "
            f"({self.lead_times} with a commit time)",
        ]


def dora(app: str, environment: str, history: Sequence[Release], now: float, days: float) -> Dora:
    """The DORA figures of the records that started within the last ``days`` days. A history
    trimmed to its limit covers less: the period then starts at its oldest record. Frequency
    is per day over the period, counted as at least one day."""
    start = now - days * 86400
    period = [r for r in history if epoch(r.started) >= start]
    if len(period) == len(history) and history:
        start = max(start, epoch(history[0].started))
    span_days = (now - start) / 86400
    live = [r for r in period if went_live(r)]
    failed = [f for f in failures(history) if f.release in live]
    restored = [s for f in failed if (s := f.restore_seconds) is not None]
    leads = [t for r in live if (t := lead_time(r)) is not None]
    return Dora(
        app=app,
        environment=environment,
        since=datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        days=span_days,
        records=len(period),
        deployments=len(live),
        per_day=len(live) / max(span_days, 1.0),
        change_failures=len(failed),
        change_failure_rate=len(failed) / len(live) if live else None,
        restores=len(restored),
        mean_time_to_restore_seconds=statistics.fmean(restored) if restored else None,
        lead_times=len(leads),
        median_lead_time_seconds=statistics.median(leads) if leads else None,
    )


# --- the Pushgateway's series --------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One sample of a gauge; samples of one name form a metric family."""

    name: str
    help: str
    labels: Mapping[str, str]
    value: float


def grouping_key(app: str, environment: str) -> dict[str, str]:
    return {"app": app, "environment": environment}


def series(history: Sequence[Release], release: Release) -> list[Series]:
    """Every sample of the group {job, app, environment} after ``release`` (which ``history``
    holds). Each push replaces the whole group, so everything comes from the history, not
    only from this run: a rollback's time is still there after the next deploy.

    A Pushgateway keeps the last value of each series; Prometheus, scraping it, keeps the
    time line (``changes(bascule_deployment_last_timestamp_seconds[1d])`` counts runs)."""
    out: list[Series] = []
    last: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in history:
        if r.in_flight:
            continue
        key = (r.kind, r.result)
        counts[key] = counts.get(key, 0) + 1
        if r.finished:
            last[key] = max(last.get(key, 0.0), epoch(r.finished))
    for (kind, result), at in sorted(last.items()):
        out.append(
            Series(
                "bascule_deployment_last_timestamp_seconds",
                "When the newest run of this kind and result finished.",
                {"kind": kind, "result": result},
                at,
            )
        )
    for (kind, result), n in sorted(counts.items()):
        out.append(
            Series(
                "bascule_history_releases",
                "Runs of this kind and result among the records the history keeps.",
                {"kind": kind, "result": result},
                n,
            )
        )
    out.append(
        Series(
            "bascule_deployment_info",
            "The newest run: its release, kind, result and image.",
            {
                "release": release.id,
                "kind": release.kind,
                "result": release.result,
                "image": release.image,
                "color": release.color,
            },
            1,
        )
    )
    if release.finished:
        out.append(
            Series(
                "bascule_deployment_duration_seconds",
                "How long the newest run took, start to finish.",
                {"kind": release.kind, "result": release.result},
                epoch(release.finished) - epoch(release.started),
            )
        )
    stages: dict[str, float] = {}
    for s in release.steps:
        stages[s.name] = stages.get(s.name, 0.0) + s.seconds
    out += [
        Series(
            "bascule_deployment_stage_duration_seconds",
            "How long each stage of the newest run took.",
            {"stage": name},
            seconds,
        )
        for name, seconds in stages.items()
    ]
    out += _rollback_series(history)
    lead = next(((r, t) for r in reversed(history) if (t := lead_time(r)) is not None), None)
    if lead is not None:
        out.append(
            Series(
                "bascule_lead_time_seconds",
                "From the commit's time to live traffic, for the newest deployment that knew it.",
                {"release": lead[0].id},
                lead[1],
            )
        )
    return out


def _rollback_series(history: Sequence[Release]) -> list[Series]:
    """The newest rollback of each trigger: when it happened, how long the switch back took
    and how long the failed version had served."""
    newest = {"manual" if f.manual else "automatic": f for f in failures(history) if f.back}
    out: list[Series] = []
    for trigger, f in sorted(newest.items()):
        assert f.back is not None
        labels = {"trigger": trigger, "release": f.release.id}
        out += [
            Series(
                "bascule_rollback_last_timestamp_seconds",
                "When traffic last went back to the previous version.",
                labels,
                f.back.at,
            ),
            Series(
                "bascule_rollback_switch_seconds",
                "Time to roll back: the switch back to the previous version, until it served.",
                labels,
                f.back.seconds,
            ),
            Series(
                "bascule_rollback_restore_seconds",
                "How long the failed version served: its switch to the switch back.",
                labels,
                f.back.at - f.live_at,
            ),
        ]
    return out


# --- alerts ---------------------------------------------------------------------------------------


def alerts(
    app: str,
    environment: str,
    release: Release,
    approval_timed_out: bool,
    run_url: str | None,
    now: float,
    protected: bool = False,
) -> list[dict[str, Any]]:
    """The alerts a finished run raises, as Alertmanager's v2 API takes them: a rollback
    (automatic or by hand), a failed deploy to a protected environment (production-like, as
    its file says: critical there), an approval that timed out. Each stays active for
    ``ALERT_HOLD``, so a one-off event is seen without a resolve message."""
    raised: list[tuple[str, str, str]] = []  # (alertname, severity, summary)
    if release.result == "rolled-back":
        raised.append(
            (
                "BasculeRollback",
                "critical" if protected else "warning",
                f"{release.image} was rolled back automatically after the switch",
            )
        )
    elif release.kind == "rollback" and release.result == "succeeded":
        raised.append(("BasculeRollback", "warning", f"rolled back by hand to {release.image}"))
    if approval_timed_out:
        raised.append(
            ("BasculeApprovalTimedOut", "warning", f"nobody approved {release.image} in time")
        )
    elif release.result == "failed" and protected:
        raised.append(("BasculeDeployFailed", "critical", f"{release.image} failed to deploy"))
    starts = datetime.fromtimestamp(now, UTC)
    out = []
    for name, severity, summary in raised:
        annotations = {
            "summary": f"{app} in {environment}: {summary}",
            "description": release.reason or release.result,
        }
        alert: dict[str, Any] = {
            "labels": {
                "alertname": name,
                "app": app,
                "environment": environment,
                "release": release.id,
                "severity": severity,
            },
            "annotations": annotations,
            "startsAt": starts.isoformat(),
            "endsAt": (starts + ALERT_HOLD).isoformat(),
        }
        if run_url:
            annotations["run_url"] = run_url
            alert["generatorURL"] = run_url
        out.append(alert)
    return out
